"""``check``: the install/smoke validation. Prints OK/WARN/FAIL lines; exit 3 on any FAIL."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from typing import List, Tuple

from .. import inventory
from ..settings import PACKAGE_ROOT, UNIT_TEMPLATE, ConfigError, Settings, load
from ..transport import Target
from ..vocab import ExitCode

HELPERS = ("atvm_run_watcher.py", "start-atvm-run-watcher.sh", "cancel-atvm-run-watcher.sh", "atvm-run.sh")


def _env_file(s: Settings) -> List[Tuple[str, str]]:
    if s.env_file_problem:
        level = "WARN" if s.webhook and "does not exist" in s.env_file_problem else "FAIL"
        return [(level, s.env_file_problem)]
    st = s.env_file.stat()
    rows = [("OK", f"env file {s.env_file} has mode {stat.S_IMODE(st.st_mode):04o}")]
    if os.geteuid() == 0 and st.st_uid != 0:
        rows.append(("FAIL", f"env file {s.env_file} is owned by uid {st.st_uid}, not root: "
                             f"run 'chown root: {s.env_file}'"))
    return rows


def _webhook(s: Settings) -> List[Tuple[str, str]]:
    if not s.webhook:
        return [("FAIL", "MATTERMOST_ATVM_WEBHOOK is not set: nothing could be posted")]
    try:
        target = Target(s.webhook)
    except ValueError as exc:
        return [("FAIL", str(exc))]
    rows = [("OK", f"webhook set ({'https' if target.https else 'http'} to {target.host}; the rest is secret)")]
    rows.append(("OK", f"channel override: {s.channel}") if s.channel else ("OK", "no channel override"))
    return rows


def _paths(s: Settings) -> List[Tuple[str, str]]:
    rows: List[Tuple[str, str]] = []
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
    vms, problem = inventory.load_inventory(s.inventory)
    rows.append(("WARN", f"inventory: {problem}") if problem
                else ("OK", f"inventory {s.inventory}: {len(vms)} VM rows"))
    return rows


def _install() -> List[Tuple[str, str]]:
    rows = []
    for name in HELPERS:
        path = PACKAGE_ROOT / name
        ok = path.is_file() and os.access(path, os.X_OK)
        rows.append(("OK", f"{path} is present and executable") if ok
                    else ("FAIL", f"{path} is missing or not executable (chmod 755)"))
    return rows


def _unit(s: Settings) -> List[Tuple[str, str]]:
    unit = Path(s.unit_dir) / UNIT_TEMPLATE
    return [("OK", f"unit {unit} is installed")] if unit.is_file() else [
        ("FAIL", f"unit {unit} is not installed (run the installer, then systemctl daemon-reload)")]


def run() -> int:
    rows: List[Tuple[str, str]] = []
    version = ".".join(map(str, sys.version_info[:3]))
    rows.append(("OK", f"python {version}") if sys.version_info >= (3, 9) else ("FAIL", f"python {version} < 3.9"))
    try:
        s = load()
    except ConfigError as exc:
        rows.append(("FAIL", f"configuration: {exc}"))
        s = None
    if s is not None:
        for part in (_env_file, _webhook, _paths):
            rows += part(s)
        rows += _install() + _unit(s)
    for level, text in rows:
        print(f"{level:4} {text}")
    failed = sum(1 for level, _ in rows if level == "FAIL")
    print(f"check: {failed} problem(s)" if failed else "check: all good")
    return ExitCode.CONFIG if failed else ExitCode.OK
