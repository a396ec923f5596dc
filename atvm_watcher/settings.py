"""Every path and knob comes from here: the environment (the names README.md lists) over the env file.

Nothing else in the package reads ``os.environ`` for configuration or holds a path literal,
so tests move the whole world into a temporary folder by setting a few variables.
"""

from __future__ import annotations

import math
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Mapping, Optional, Tuple

from .decide import Limits
from .layout import RunLayout, Templates, check_template, is_group_template
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
    """A setting is missing or malformed; the message says which and how to fix it."""


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
    wake: str = "auto"  # ATVM_WAKE: "auto" (file events where inotify works) or "poll" (wake.py)

    @property
    def has_webhook(self) -> bool:
        return bool(self.webhook)

    def layout(self, build: str) -> RunLayout:
        """Where build's evidence is: the one place that turns settings into the evidence layout."""
        return RunLayout(build, self.log_dir, self.report_dir, self.templates)

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
            f"env file {path} has mode {stat.S_IMODE(st.st_mode):04o}; it holds the webhook secret "
            f"and must not be readable by group or others: run 'chmod 600 {path}'"
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


def _seconds(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{_setting(name, raw)} is not a number of seconds (fractions like 0.5 are fine)") from None
    if not math.isfinite(value) or value < minimum:
        raise ConfigError(f"{_setting(name, raw)} must be a finite number of seconds >= {minimum}")
    return value


def _count(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{_setting(name, raw)} is not a whole number") from None
    if value < minimum:
        raise ConfigError(f"{_setting(name, raw)} must be >= {minimum}")
    return value


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "0", "no", "false", "off"):
        return False
    if raw in ("1", "yes", "true", "on"):
        return True
    raise ConfigError(f"{_setting(name, raw)} must be yes or no")


def _glued(*sources: Mapping[str, str]) -> None:
    """Refuse a setting whose value holds another setting's ``NAME=``: two lines run together."""
    for env in sources:
        for name, value in env.items():
            found = _ASSIGNMENT.search(value) if re.fullmatch(_OURS, name) else None
            if found:
                raise ConfigError(f"{name}: its value holds {found.group(1)}=..., as if two lines of the env file "
                                  "were run together (a missing line break?); values not shown")


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
    return Templates(**chosen)


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
    """Build settings: process environment first, then the env file, then defaults.

    A configuration error's text passes the Redactor of every secret value read (env file included).
    """
    process = dict(os.environ if environ is None else environ)
    env_file = Path(process.get("ATVM_WATCHER_ENV_FILE") or DEFAULT_ENV_FILE)
    file_values, problem, unsafe = _read_env_file(env_file)
    try:
        return _settings(process, file_values, env_file, problem, unsafe)
    except ConfigError as exc:
        raise ConfigError(_redactor(process, file_values)(str(exc))) from None


def _settings(process: Mapping[str, str], file_values: Mapping[str, str], env_file: Path, problem: Optional[str],
              unsafe: bool) -> Settings:
    env = {**file_values, **process}  # the process environment wins
    _glued(file_values, env)  # also a file line the environment overrides: it may hide the webhook

    automation_root = Path(env.get("ATVM_AUTOMATION_ROOT") or DEFAULT_AUTOMATION_ROOT)
    mode = (env.get("ATVM_DELIVERY") or "at-most-once").strip().lower()
    if mode not in ("at-most-once", "at-least-once"):
        raise ConfigError("ATVM_DELIVERY must be at-most-once or at-least-once (value not shown)")
    webhook = (env.get("MATTERMOST_ATVM_WEBHOOK") or "").strip()
    if webhook and not webhook.lower().startswith(("http://", "https://")):
        raise ConfigError("MATTERMOST_ATVM_WEBHOOK must be an http:// or https:// URL (value not shown)")
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
        poll_seconds=_seconds(env, "ATVM_POLL_SECONDS", 1.0, minimum=0.01),
        hung_after_seconds=_seconds(env, "ATVM_HUNG_AFTER_SECONDS", 3600.0),
        start_timeout_seconds=_seconds(env, "ATVM_START_TIMEOUT_SECONDS", 1800.0),
        gone_grace_seconds=_seconds(env, "ATVM_GONE_GRACE_SECONDS", 60.0),
        settle_seconds=_seconds(env, "ATVM_SETTLE_SECONDS", 2.0),
        launch_allowance_seconds=_seconds(env, "ATVM_LAUNCH_ALLOWANCE_SECONDS", 300.0),
        post_timeout_seconds=_seconds(env, "ATVM_POST_TIMEOUT_SECONDS", 15.0, minimum=0.05),
        post_attempts=_count(env, "ATVM_POST_ATTEMPTS", 5),
        post_backoff_seconds=_seconds(env, "ATVM_POST_BACKOFF_SECONDS", 2.0),
        post_max_wait_seconds=_seconds(env, "ATVM_POST_MAX_WAIT_SECONDS", 300.0),
        at_least_once=mode == "at-least-once",
        username=(env.get("MATTERMOST_ATVM_USERNAME") or "").strip(),
        unit_dir=Path(env.get("ATVM_UNIT_DIR") or "/etc/systemd/system"),
        templates=_templates(env),
        wake=_wake(env),
    )


def _wake(env: Mapping[str, str]) -> str:
    value = (env.get("ATVM_WAKE") or "auto").strip().lower()
    if value not in ("auto", "poll"):
        raise ConfigError(f"{_setting('ATVM_WAKE', value)} must be auto or poll")
    return value
