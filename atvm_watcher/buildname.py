"""Build names: what is accepted, and how systemd spells the instance unit for one."""

from __future__ import annotations

import re

BUILD_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
GROUP_NAME_RE = BUILD_NAME_RE
UNIT_PREFIX = "atvm-run-watcher@"
UNIT_SUFFIX = ".service"
MAX_UNIT_NAME = 255


class BadName(ValueError):
    """A build or group name that is refused before anything is written."""


def systemd_escape(name: str) -> str:
    """Same result as ``systemd-escape`` for the characters a valid build name may hold."""
    out = []
    for i, ch in enumerate(name):
        if ch == "/":
            out.append("-")
        elif ch.isascii() and (ch.isalnum() or ch in ":_" or (ch == "." and i > 0)):
            out.append(ch)
        else:
            out.append("".join(f"\\x{b:02x}" for b in ch.encode("utf-8")))
    return "".join(out)


def unit_name(build: str) -> str:
    return f"{UNIT_PREFIX}{systemd_escape(build)}{UNIT_SUFFIX}"


def _printable(name: str) -> str:
    shown = name if len(name) <= 80 else name[:77] + "..."
    return ascii(shown)


def check_build_name(name: str) -> str:
    """Return the name if acceptable, else raise BadName saying why (the name shown escaped)."""
    if not isinstance(name, str) or name == "":
        raise BadName("build name is empty")
    if not BUILD_NAME_RE.fullmatch(name):
        if name[0] in "-.":
            why = "must not start with '-' or '.'"
        else:
            why = "may hold only letters A-Z a-z, digits, '.', '_' and '-' (no spaces, slashes or other characters)"
        raise BadName(f"build name {_printable(name)} refused: {why}")
    if len(unit_name(name)) > MAX_UNIT_NAME:
        raise BadName(
            f"build name {_printable(name)} refused: its unit name would be "
            f"{len(unit_name(name))} characters; systemd allows at most {MAX_UNIT_NAME}"
        )
    return name


def check_group_name(name: str) -> bool:
    """Group (sub-run) names come from files on disk; odd ones are skipped, never used in paths."""
    return bool(GROUP_NAME_RE.fullmatch(name)) and len(name) <= 128
