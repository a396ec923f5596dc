"""``check``: the install/smoke validation. Prints OK/WARN/FAIL lines; exit 3 on any FAIL.

Every row is shown whatever fails: a bad setting is reported (each one, not only the first) and
the remaining rows are made with it at its default. ``--preflight`` is the start helper's: only
what would make a watcher refuse to start, silent when nothing would. ``--send-test`` also posts one
test message (the only way ``check`` ever posts).
"""

from __future__ import annotations

import os
import re
import stat
import sys
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

from .. import inventory, mattermost, version_text
from ..message import probe_message
from ..settings import PACKAGE_ROOT, UNIT_TEMPLATE, ConfigError, Settings, load, posting_problem
from ..transport import Target
from ..vocab import ExitCode

HELPERS = ("atvm_run_watcher.py", "start-atvm-run-watcher.sh", "cancel-atvm-run-watcher.sh", "atvm-run.sh")
_SETTING_NAME = re.compile(r"\b(?:ATVM|MATTERMOST_ATVM)_[A-Z0-9_]+")
Rows = List[Tuple[str, str]]


def load_every_problem(environ: Optional[Dict[str, str]] = None) -> Tuple[Optional[Settings], Rows, Set[str]]:
    """The settings, with one FAIL row per bad setting and the names of those left at their default.

    ``load`` stops at the first bad setting; here each named one is set empty in the process
    environment (which wins over the env file, and empty means the default) and loading is tried
    again, so the operator sees every problem at once. None when a problem names no setting.
    """
    environ = dict(os.environ if environ is None else environ)
    rows: Rows = []
    blanked: Set[str] = set()
    while True:
        try:
            return load(environ), rows, blanked
        except ConfigError as exc:
            row = ("FAIL", f"configuration: {exc}")
            if row in rows:  # emptying the setting did not help (a fault of the env file's text): said once
                return None, rows, blanked
            rows.append(row)
            named = _SETTING_NAME.search(str(exc))
            if not named or named.group(0) in blanked:  # no name, or emptying it did not help
                return None, rows, blanked
            blanked.add(named.group(0))
            environ[named.group(0)] = ""


def _env_file(s: Settings) -> Rows:
    if s.env_file_problem:
        level = "WARN" if s.webhook and "does not exist" in s.env_file_problem else "FAIL"
        return [(level, s.env_file_problem)]
    st = s.env_file.stat()
    rows = [("OK", f"env file {s.env_file} has mode {stat.S_IMODE(st.st_mode):04o}")]
    if os.geteuid() == 0 and st.st_uid != 0:
        rows.append(("FAIL", f"env file {s.env_file} is owned by uid {st.st_uid}, not root: "
                             f"run 'chown root: {s.env_file}'"))
    return rows


def _webhook(s: Settings, blanked: Set[str]) -> Rows:
    # Each problem is said once: the configuration and env-file rows above already name these two.
    if "MATTERMOST_ATVM_WEBHOOK" in blanked:
        return []
    if s.env_file_unsafe:
        return [("FAIL", "MATTERMOST_ATVM_WEBHOOK not read: the env file was refused (see above)")]
    if not s.webhook:
        return [("FAIL", f"MATTERMOST_ATVM_WEBHOOK is not set: nothing could be posted; set it to the incoming "
                         f"webhook's URL in {s.env_file} (sudoedit {s.env_file})")]
    problem = posting_problem(s)
    if problem:
        return [("FAIL", problem)]
    target = Target(s.webhook)
    rows = [("OK", f"webhook set ({'https' if target.https else 'http'} to {target.host}; the rest is secret)")]
    rows.append(("OK", f"channel override: {s.channel}") if s.channel else ("OK", "no channel override"))
    return rows


def _paths(s: Settings) -> Rows:
    rows: Rows = []
    root = s.state_root
    if root.is_dir() and os.access(root, os.W_OK | os.X_OK):
        rows.append(("OK", f"state root {root} is writable"))
    elif root.exists():
        rows.append(("FAIL", f"state root {root} is not a writable folder"))
    else:
        rows.append(("WARN", f"state root {root} does not exist yet (systemd creates it via StateDirectory=)"))
    for label, path in (("automation root", s.automation_root), ("report folder", s.report_dir),
                        ("log folder", s.log_dir)):
        rows.append(("OK", f"{label} {path} exists") if path.is_dir()
                    else ("WARN", f"{label} {path} does not exist (yet)"))
    rows += _plantable("log folder", "ATVM_LOG_DIR", s.log_dir)
    rows += _plantable("report folder", "ATVM_REPORT_DIR", s.report_dir)
    vms, problem = inventory.load_inventory(s.inventory)
    rows.append(("WARN", f"inventory: {problem}") if problem
                else ("OK", f"inventory {s.inventory}: {len(vms)} VM rows"))
    if inventory.is_shipped_example(s.inventory):
        rows.append(("WARN", f"inventory {s.inventory} is the shipped example (fictional VMs): put your lab's VMs "
                             f"in it and delete its line '{inventory.EXAMPLE_MARKER}' (docs/INVENTORY.md)"))
    return rows


def _plantable(label: str, setting: str, path: Path) -> List[Tuple[str, str]]:
    """A WARN when a local user could plant files in a folder of the run's evidence.

    The watcher runs as root and reads the outcome, pid, log and report files there as the run's own:
    in a folder others can write (the default /tmp/.log, if made world-writable) or that is not root's,
    anyone can write a B.status that decides a run, or a link to a root-only file. The watcher never
    follows such links and never shows a file's content beyond the word it parses, but what a stranger
    wrote can still decide the run.
    """
    try:
        link, st = os.lstat(path), os.stat(path)
    except OSError:
        return []  # missing: said above
    fix = (f"make it a folder only root can write ('install -d -m 0755 -o root {path}'), "
           f"or set {setting} to one")
    why = []
    if stat.S_ISLNK(link.st_mode) and link.st_uid != 0:
        why.append(f"is a symbolic link owned by uid {link.st_uid}")
    if st.st_uid != 0:
        why.append(f"is owned by uid {st.st_uid}, not root")
    if st.st_mode & stat.S_IWOTH:
        why.append(f"is writable by others (mode {stat.S_IMODE(st.st_mode):04o})")
    if not why:
        return []
    return [("WARN", f"{label} {path} {' and '.join(why)}: a local user could plant the run's outcome, pid or "
                     f"report files there; {fix}")]


def _install() -> Rows:
    rows = []
    for name in HELPERS:
        path = PACKAGE_ROOT / name
        ok = path.is_file() and os.access(path, os.X_OK)
        rows.append(("OK", f"{path} is present and executable") if ok
                    else ("FAIL", f"{path} is missing or not executable (chmod 755)"))
    return rows


def _unit(s: Settings) -> Rows:
    unit = Path(s.unit_dir) / UNIT_TEMPLATE
    return [("OK", f"unit {unit} is installed")] if unit.is_file() else [
        ("FAIL", f"unit {unit} is not installed (run the installer, then systemctl daemon-reload)")]


def send_test(s: Optional[Settings]) -> Rows:
    """One test post through the watcher's own path (payload limits, redaction, answer classification)."""
    if s is None or posting_problem(s):
        return [("FAIL", "test post not sent: the webhook cannot be used (see above)")]
    payload = mattermost.render(probe_message(os.uname().nodename, version_text()), s.channel, s.username)
    outcome = mattermost.post(s.webhook, payload, s.post_timeout_seconds)
    where = f"channel {s.channel}" if s.channel else "the webhook's own channel"
    if outcome.kind == "posted":
        return [("OK", f"test post delivered to {where} ({outcome.detail})")]
    maybe = "; it may have been posted all the same: look in the channel" if outcome.kind == "uncertain" else ""
    error_id = f" [{outcome.error_id}]" if outcome.error_id else ""
    return [("FAIL", f"test post {outcome.kind}: {outcome.detail}{error_id}{maybe}")]


def preflight() -> int:
    """What would make a watcher refuse to start (exit 3), printed with its fix; silent when nothing would."""
    s, rows, blanked = load_every_problem()
    if s is not None and "MATTERMOST_ATVM_WEBHOOK" not in blanked and posting_problem(s):
        rows.append(("FAIL", str(posting_problem(s))))
    for _, text in rows:
        print(f"error: {text}", file=sys.stderr)
    return ExitCode.CONFIG if rows else ExitCode.OK


def run(send: bool = False) -> int:
    rows: Rows = [("OK", version_text())]
    version = ".".join(map(str, sys.version_info[:3]))
    rows.append(("OK", f"python {version}") if sys.version_info >= (3, 9) else ("FAIL", f"python {version} < 3.9"))
    s, problems, blanked = load_every_problem()
    rows += problems
    if s is None:
        rows.append(("WARN", "the settings could not be read: the rows below use none of them"))
    elif blanked:
        rows.append(("WARN", f"the rows below take {', '.join(sorted(blanked))} at the default"))
    if s is not None:
        rows += _env_file(s) + _webhook(s, blanked) + _paths(s)
    rows += _install()
    if s is not None:
        rows += _unit(s)
    if send:
        rows += send_test(s)
    for level, text in rows:
        print(f"{level:4} {text}")
    failed = sum(1 for level, _ in rows if level == "FAIL")
    print(f"check: {failed} problem(s)" if failed else "check: all good")
    return ExitCode.CONFIG if failed else ExitCode.OK
