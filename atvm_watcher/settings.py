"""Every path and knob comes from here: the environment (the names README.md lists) over the env file.

Nothing else in the package reads ``os.environ`` for configuration or holds a path literal,
so tests move the whole world into a temporary folder by setting a few variables.
"""

from __future__ import annotations

import math
import os
import re
import stat
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple
from urllib.parse import quote, urlsplit

from .decide import Limits
from .layout import RunLayout, Templates, check_template, is_group_template, same_path
from .redact import Redactor

PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # folder holding atvm_run_watcher.py

DEFAULT_ENV_FILE = "/etc/atvm-run-watcher.env"
DEFAULT_STATE_ROOT = "/var/lib/atvm-run-watcher"
DEFAULT_AUTOMATION_ROOT = "/root/cdc-e2e-cyp-12.17.4"
DEFAULT_LOG_DIR = "/tmp/.log"
UNIT_TEMPLATE = "atvm-run-watcher@.service"
SECRET_SETTINGS = ("MATTERMOST_ATVM_WEBHOOK",)
_OURS = r"(?:ATVM|MATTERMOST_ATVM)_[A-Z0-9_]+"  # this program's settings
_ASSIGNMENT = re.compile(f"({_OURS})=")
_NUMERIC = re.compile(r"[+-]?(?:\d{1,9}(?:\.\d{0,6})?|\.\d{1,6})(?:[eE][+-]?\d{1,3})?|[+-]?(?:inf|infinity|nan)",
                      re.IGNORECASE)
# The evidence layout, one path template per setting (layout.py: fields, defaults, what is refused).
TEMPLATE_SETTINGS: Dict[str, str] = {
    "ATVM_LOG_FILE": "log",
    "ATVM_STATUS_FILE": "status",
    "ATVM_EXIT_FILE": "exit",
    "ATVM_PID_FILE": "pid",
    "ATVM_REPORT_FOLDER": "reports",
    "ATVM_GROUP_LOG_FILE": "group_log",
    "ATVM_GROUP_STATUS_FILE": "group_status",
    "ATVM_GROUP_EXIT_FILE": "group_exit",
    "ATVM_GROUP_REPORT_FOLDER": "group_reports",
}


class ConfigError(Exception):
    """A setting is missing or malformed; the message says which and how to fix it.

    ``setting`` names the one setting at fault when a command that does not need it may go on without
    it (see ``load_lenient``); None when no command can.
    """

    def __init__(self, message: str, setting: Optional[str] = None):
        super().__init__(message)
        self.setting = setting


DAY = 86400.0
# Every number setting's allowed range, both ends included (the README's table says the same). A value
# outside is an operator's slip, and some would fail only much later, inside a system call: a sleep or
# socket timeout of 1e10 s overflows (OverflowError) at the first poll or the first post. So each is
# refused when the settings are loaded. Durations stop at a week at most; each maximum is what the
# setting could sensibly need on a controller whose runs last hours.
BOUNDS: Dict[str, Tuple[float, float]] = {
    "ATVM_POLL_SECONDS": (0.01, 600.0),
    "ATVM_HUNG_AFTER_SECONDS": (0.0, 7 * DAY),
    "ATVM_START_TIMEOUT_SECONDS": (0.0, 7 * DAY),
    "ATVM_GONE_GRACE_SECONDS": (0.0, DAY),
    "ATVM_SETTLE_SECONDS": (0.0, 3600.0),
    "ATVM_LAUNCH_ALLOWANCE_SECONDS": (0.0, DAY),
    "ATVM_POST_TIMEOUT_SECONDS": (0.05, 600.0),
    "ATVM_POST_ATTEMPTS": (1, 100),
    "ATVM_POST_BACKOFF_SECONDS": (0.0, 3600.0),
    "ATVM_POST_MAX_WAIT_SECONDS": (0.0, DAY),
    "ATVM_REST_AFTER_SECONDS": (1.0, DAY),
}
WAKE_MODES = ("auto", "events", "poll")  # ATVM_WAKE (wake.py, rest.py)
UNLISTED_BOUNDS = (0.0, 7 * DAY)  # a number setting missing above still gets a sane range
# Path settings (Settings field -> setting): each must be an absolute path without a NUL byte (a NUL read
# from the env file would make every file call on it raise ValueError, in the middle of a run). The state
# root is the one thing every command needs, so a bad one is never replaced by its default.
PATH_SETTINGS = {"state_root": "ATVM_WATCHER_STATE_ROOT", "automation_root": "ATVM_AUTOMATION_ROOT",
                 "report_dir": "ATVM_REPORT_DIR", "log_dir": "ATVM_LOG_DIR", "inventory": "ATVM_INVENTORY",
                 "unit_dir": "ATVM_UNIT_DIR"}


@dataclass(frozen=True)
class Settings:
    webhook: str = field(repr=False)  # secret: never printed, logged or stored
    channel: str
    env_file: Path
    env_file_problem: Optional[str]  # why the env file was not read (missing, unsafe mode, ...)
    env_file_unsafe: bool  # it exists but group or others can read it: refused
    state_root: Path
    automation_root: Path
    report_dir: Path
    log_dir: Path
    inventory: Path
    poll_seconds: float
    hung_after_seconds: float
    start_timeout_seconds: float
    gone_grace_seconds: float
    settle_seconds: float
    launch_allowance_seconds: float
    post_timeout_seconds: float
    post_attempts: int
    post_backoff_seconds: float
    post_max_wait_seconds: float
    at_least_once: bool
    username: str
    unit_dir: Path
    templates: Templates = Templates()
    report_url: str = ""  # ATVM_REPORT_URL: a template with {build} and {group}; "" when not set
    wake: str = "auto"  # ATVM_WAKE: "auto" (file events; rests when quiet), "events" (never rests), "poll"
    rest_after_seconds: float = 60.0  # ATVM_REST_AFTER_SECONDS: quiet this long, a watcher rests (rest.py)

    @property
    def has_webhook(self) -> bool:
        return bool(self.webhook)

    def layout(self, build: str) -> RunLayout:
        """Where build's evidence is: the one place that turns settings into the evidence layout."""
        return RunLayout(build, self.log_dir, self.report_dir, self.templates)

    def report_link(self, build: str, group: Optional[str] = None) -> str:
        """The HTML report of a run or sub-run (ATVM_REPORT_URL filled in; {group} is empty for a plain run)."""
        if not self.report_url:
            return ""
        return self.report_url.format(build=quote(build, safe=""), group=quote(group or "", safe=""))

    def limits(self) -> Limits:
        return Limits(self.hung_after_seconds, self.start_timeout_seconds, self.gone_grace_seconds,
                      self.settle_seconds, self.launch_allowance_seconds)


def parse_env_file(text: str) -> Dict[str, str]:
    """Parse a systemd ``EnvironmentFile=``-style file (KEY=value, # comments, optional quotes)."""
    values: Dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key.replace("_", "").isalnum():
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key] = value
    return values


def read_env_file(path: Path) -> Tuple[Dict[str, str], Optional[str]]:
    """Return (values, problem). An unsafe file (group/other readable) is refused, not used.

    Refusing is the safer choice for a file holding a webhook secret: a root-owned daemon should
    not fix permissions behind the operator's back; the installer and ``check`` say how to fix it.
    """
    values, problem, _ = _read_env_file(path)
    return values, problem


def _read_env_file(path: Path) -> Tuple[Dict[str, str], Optional[str], bool]:
    """(values, problem, unsafe): unsafe when the file exists but group or others can read it."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return {}, f"env file {path} does not exist", False
    except OSError as exc:
        return {}, f"env file {path} cannot be read: {exc.strerror}", False
    if not stat.S_ISREG(st.st_mode):
        return {}, f"env file {path} is not a regular file", False
    if st.st_mode & 0o077:
        return {}, (
            f"env file {path} refused (mode {stat.S_IMODE(st.st_mode):04o}): it holds the webhook secret "
            f"and must not be readable by group or others; run 'chmod 600 {path}'"
        ), True
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return {}, f"env file {path} cannot be read: {exc.strerror}", False
    return parse_env_file(text), None, False


def _setting(name: str, raw: str) -> str:
    """How an error names a setting: with its value only when that is short and numeric, so cannot hold a
    secret (an env file missing a line break glues the webhook onto the line before)."""
    return f"{name}={raw!r}" if _NUMERIC.fullmatch(raw) else f"{name} (value not shown)"


def _span(seconds: float) -> str:
    for unit, size in (("days", DAY), ("hours", 3600.0), ("minutes", 60.0)):
        if seconds >= size:
            return f"{seconds:g} s ({seconds / size:g} {unit})"
    return f"{seconds:g} s"


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    low, high = BOUNDS.get(name, UNLISTED_BOUNDS)
    allowed = f"a number of seconds from {low:g} to {_span(high)}; fractions like 0.5 are fine"
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{_setting(name, raw)} is not {allowed}", name) from None
    if not (math.isfinite(value) and low <= value <= high):  # NaN fails every comparison
        raise ConfigError(f"{_setting(name, raw)} is out of range: {name} must be {allowed}", name)
    return value


def _count(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    low, high = (int(b) for b in BOUNDS.get(name, (1, 100)))
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{_setting(name, raw)} is not a whole number from {low} to {high}", name) from None
    if not low <= value <= high:
        raise ConfigError(f"{_setting(name, raw)} is out of range: {name} must be a whole number from {low} to {high}",
                          name)
    return value


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "0", "no", "false", "off"):
        return False
    if raw in ("1", "yes", "true", "on"):
        return True
    raise ConfigError(f"{_setting(name, raw)} must be yes or no", name)


def _glued(*sources: Mapping[str, str]) -> None:
    """Refuse a setting whose value holds another setting's ``NAME=``: two lines run together."""
    for env in sources:
        for name, value in env.items():
            found = _ASSIGNMENT.search(value) if re.fullmatch(_OURS, name) else None
            if found:
                raise ConfigError(f"{name}: its value holds {found.group(1)}=..., as if two lines of the env file "
                                  "were run together (a missing line break?); values not shown", name)


def _check_webhook(url: str) -> None:
    """The URL as the post will use it: refused now (exit 3 at start), not after hours of watching, when
    the post is due. Its texts never show the value."""
    from .transport import BadURL, Target  # http.client and ssl: only once a webhook is set

    if not url.lower().startswith(("http://", "https://")):
        raise ConfigError("MATTERMOST_ATVM_WEBHOOK must be an http:// or https:// URL (value not shown)",
                          "MATTERMOST_ATVM_WEBHOOK")
    try:
        Target(url)
    except BadURL as exc:
        raise ConfigError(f"MATTERMOST_ATVM_WEBHOOK: {exc}", "MATTERMOST_ATVM_WEBHOOK") from None


def _templates(env: Mapping[str, str]) -> Templates:
    chosen = {}
    for name, key in TEMPLATE_SETTINGS.items():
        value = env.get(name, "").strip()
        if not value:
            continue
        problem = check_template(value, is_group_template(key))
        if problem:
            raise ConfigError(f"{name}={value!r} {problem}")
        chosen[key] = value
    templates = Templates(**chosen)
    same = same_path(templates)
    if same:
        first, second = (next(n for n, k in TEMPLATE_SETTINGS.items() if k == key) for key in same)
        raise ConfigError(f"{first} and {second} name the same file ({getattr(templates, same[1])!r}): each piece "
                          "of a run's evidence needs a path of its own")
    return templates


def _report_url(env: Mapping[str, str]) -> str:
    """ATVM_REPORT_URL: an http(s) URL template whose only fields are {build} and {group}."""
    value = env.get("ATVM_REPORT_URL", "").strip()
    if not value:
        return ""
    try:
        parsed = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(value) if name is not None]
    except ValueError as exc:
        raise ConfigError(f"ATVM_REPORT_URL={value!r} is not a valid template ({exc}); a brace is written {{{{ or }}}}"
                          ) from None
    for name, spec, conv in parsed:
        if name not in ("build", "group") or spec or conv:
            shown = name + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "")
            raise ConfigError(f"ATVM_REPORT_URL={value!r} has the field {{{shown}}}; the fields are {{build}} and "
                              "{group}, as they are")
    sample = urlsplit(value.format(build="b", group="g"))
    if sample.scheme not in ("http", "https") or not sample.hostname or re.search(r"[\s()<>`]", value):
        raise ConfigError(f"ATVM_REPORT_URL={value!r} must be an http:// or https:// URL without spaces, "
                          "parentheses, '<', '>' or backquotes")
    return value


def default_inventory() -> Path:
    installed = PACKAGE_ROOT / "vm-inventory.md"
    if installed.exists():
        return installed
    return PACKAGE_ROOT / "inventory" / "vm-inventory.md"  # a checkout keeps it in inventory/


def _redactor(*sources: Mapping[str, str]) -> Redactor:
    """Built from every secret setting's value in every source (the environment, the env file), also
    one glued onto the end of another setting's line."""
    secrets = []
    for env in sources:
        for key, value in env.items():
            for name in SECRET_SETTINGS:
                if key == name:
                    secrets.append(value)
                elif f"{name}=" in value:
                    secrets.append(value.split(f"{name}=", 1)[1])
    return Redactor(secrets)


def secrets_redactor(environ: Optional[Mapping[str, str]] = None) -> Redactor:
    """A Redactor for output made without settings at hand (the CLI's last-resort report). Never raises."""
    process = dict(os.environ if environ is None else environ)
    try:
        file_values, _, _ = _read_env_file(Path(process.get("ATVM_WATCHER_ENV_FILE") or DEFAULT_ENV_FILE))
    except Exception:  # noqa: BLE001 - called while reporting another error: never add one
        file_values = {}
    return _redactor(process, file_values)


def load(environ: Optional[Mapping[str, str]] = None) -> Settings:
    """Build settings: process environment first, then the env file, then defaults. Strict: the first bad
    setting is a ConfigError (exit 3), as ``watch`` needs.

    A configuration error's text passes the Redactor of every secret value read (env file included).
    """
    return _load(environ, lenient=False)[0]


def load_lenient(environ: Optional[Mapping[str, str]] = None) -> Tuple[Settings, List[ConfigError]]:
    """Settings for the commands that need no webhook and no tuning: ``cancel`` needs only the state root,
    ``status`` and ``inspect`` only read. Each bad setting is returned (a ConfigError naming it, redacted
    like any other, for the caller to show as a warning) and its default used, for this command only, so
    that a slip in the env file (``ATVM_HUNG_AFTER_SECONDS=2h``) never keeps an operator from cancelling a
    run or seeing where it stands. A bad state root is still an error: a cancel written elsewhere would
    be worse than a refusal.
    """
    return _load(environ, lenient=True)


def _load(environ: Optional[Mapping[str, str]], lenient: bool) -> Tuple[Settings, List[ConfigError]]:
    process = dict(os.environ if environ is None else environ)
    env_file = Path(process.get("ATVM_WATCHER_ENV_FILE") or DEFAULT_ENV_FILE)
    file_values, problem, unsafe = _read_env_file(env_file)
    redact = _redactor(process, file_values)
    warnings: List[ConfigError] = []
    while True:  # ends: each turn either returns, raises, or drops one setting from the two sources
        try:
            settings = _settings(process, file_values, env_file, problem, unsafe)
            _check_paths(settings)
            return settings, warnings
        except ConfigError as exc:
            named = exc.setting is not None and (exc.setting in process or exc.setting in file_values)
            if not (lenient and named):
                raise ConfigError(redact(str(exc)), exc.setting) from None
            warnings.append(ConfigError(redact(str(exc)), exc.setting))
            process.pop(exc.setting, None)
            file_values.pop(exc.setting, None)


def _check_paths(settings: Settings) -> None:
    for attr, name in PATH_SETTINGS.items():
        path = str(getattr(settings, attr))
        if not path.startswith("/") or "\0" in path:
            raise ConfigError(f"{name} must be an absolute path without NUL bytes (value not shown)",
                              None if attr == "state_root" else name)


def _settings(process: Mapping[str, str], file_values: Mapping[str, str], env_file: Path, problem: Optional[str],
              unsafe: bool) -> Settings:
    env = {**file_values, **process}  # the process environment wins
    _glued(file_values, env)  # also a file line the environment overrides: it may hide the webhook

    automation_root = Path(env.get("ATVM_AUTOMATION_ROOT") or DEFAULT_AUTOMATION_ROOT)
    mode = (env.get("ATVM_DELIVERY") or "at-most-once").strip().lower()
    if mode not in ("at-most-once", "at-least-once"):
        raise ConfigError("ATVM_DELIVERY must be at-most-once or at-least-once (value not shown)", "ATVM_DELIVERY")
    webhook = (env.get("MATTERMOST_ATVM_WEBHOOK") or "").strip()
    if webhook:
        _check_webhook(webhook)
    return Settings(
        webhook=webhook,
        channel=(env.get("MATTERMOST_ATVM_CHANNEL") or "").strip(),
        env_file=env_file,
        env_file_problem=problem,
        env_file_unsafe=unsafe,
        state_root=Path(env.get("ATVM_WATCHER_STATE_ROOT") or DEFAULT_STATE_ROOT),
        automation_root=automation_root,
        report_dir=Path(env.get("ATVM_REPORT_DIR") or automation_root / "cypress" / "cmcReporter"),
        log_dir=Path(env.get("ATVM_LOG_DIR") or DEFAULT_LOG_DIR),
        inventory=Path(env.get("ATVM_INVENTORY") or default_inventory()),
        poll_seconds=_seconds(env, "ATVM_POLL_SECONDS", 1.0),
        hung_after_seconds=_seconds(env, "ATVM_HUNG_AFTER_SECONDS", 3600.0),
        start_timeout_seconds=_seconds(env, "ATVM_START_TIMEOUT_SECONDS", 1800.0),
        gone_grace_seconds=_seconds(env, "ATVM_GONE_GRACE_SECONDS", 60.0),
        settle_seconds=_seconds(env, "ATVM_SETTLE_SECONDS", 2.0),
        launch_allowance_seconds=_seconds(env, "ATVM_LAUNCH_ALLOWANCE_SECONDS", 300.0),
        post_timeout_seconds=_seconds(env, "ATVM_POST_TIMEOUT_SECONDS", 15.0),
        post_attempts=_count(env, "ATVM_POST_ATTEMPTS", 5),
        post_backoff_seconds=_seconds(env, "ATVM_POST_BACKOFF_SECONDS", 2.0),
        post_max_wait_seconds=_seconds(env, "ATVM_POST_MAX_WAIT_SECONDS", 300.0),
        at_least_once=mode == "at-least-once",
        username=(env.get("MATTERMOST_ATVM_USERNAME") or "").strip(),
        unit_dir=Path(env.get("ATVM_UNIT_DIR") or "/etc/systemd/system"),
        templates=_templates(env),
        report_url=_report_url(env),
        wake=_wake(env),
        rest_after_seconds=_seconds(env, "ATVM_REST_AFTER_SECONDS", 60.0),
    )


def posting_problem(s: Settings) -> Optional[str]:
    """Why a watcher with these settings could not post, and the fix; None when it could.

    The watcher refuses to start on it (exit 3); ``check`` and the start helper (``check --preflight``)
    say the same before a watcher is started.
    """
    if s.env_file_unsafe:
        return f"{s.env_file_problem}; its MATTERMOST_ATVM_WEBHOOK was not read"
    where = f"the environment or {s.env_file}" + (f", where {s.env_file_problem}" if s.env_file_problem else "")
    if not s.webhook:
        return (f"MATTERMOST_ATVM_WEBHOOK is not set ({where}): nothing could be posted; "
                f"set it to the incoming webhook's URL (sudoedit {s.env_file})")
    from .transport import Target  # here, not at the top: http.client and ssl cost every command ~25 ms

    try:
        Target(s.webhook)
    except ValueError as exc:
        return f"MATTERMOST_ATVM_WEBHOOK: {exc}; fix it in {s.env_file}"
    return None


def _wake(env: Mapping[str, str]) -> str:
    value = (env.get("ATVM_WAKE") or "auto").strip().lower()
    if value not in WAKE_MODES:
        raise ConfigError(f"{_setting('ATVM_WAKE', value)} must be one of {', '.join(WAKE_MODES)}", "ATVM_WAKE")
    return value
