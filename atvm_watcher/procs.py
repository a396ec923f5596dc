"""Is the launcher alive? Read from /proc: a pid file first, else a scan of argv for the build name.

Once a launcher is found it is re-checked by pid alone (cheap); the full /proc scan runs only
while no launcher is known. A pid is trusted only while its start time matches what was seen,
so a recycled pid never keeps a dead run "alive".
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Tuple

PROC = Path("/proc")
SELF_MARKERS = (b"atvm_run_watcher", b"atvm-run-watcher")  # the watcher and its helpers
TOKEN_SPLIT = re.compile(rb"[=/:,\s\x00]+")
PIDFILE_SLACK = 2.0  # seconds: a pid file is written after its process started


@dataclass(frozen=True)
class Liveness:
    alive: bool
    pid: Optional[int]
    started_at: Optional[float]  # launcher start (epoch seconds), remembered after it is gone
    last_seen_alive: Optional[float]
    source: str  # "pid file", "process scan", "none"
    note: str = ""


def _clock_ticks() -> int:
    try:
        return os.sysconf("SC_CLK_TCK")
    except (ValueError, OSError):
        return 100


CLK_TCK = _clock_ticks()
_boot_time: Optional[float] = None


def boot_time() -> float:
    global _boot_time
    if _boot_time is None:
        try:
            uptime = float((PROC / "uptime").read_text().split()[0])
            _boot_time = time.time() - uptime
        except (OSError, ValueError, IndexError):
            _boot_time = 0.0
    return _boot_time


def process_start(pid: int) -> Optional[Tuple[float, str]]:
    """(start time as epoch seconds, state letter) or None when there is no such process."""
    try:
        raw = (PROC / str(pid) / "stat").read_bytes()
    except OSError:
        return None
    try:
        rest = raw[raw.rindex(b")") + 2 :].split()  # comm may hold spaces and parentheses
        state = rest[0].decode("ascii", "replace")
        ticks = int(rest[19])
    except (ValueError, IndexError):
        return None
    return boot_time() + ticks / CLK_TCK, state


def alive(pid: int, started_at: Optional[float] = None) -> bool:
    info = process_start(pid)
    if info is None or info[1] in ("Z", "X", "x"):
        return False
    return started_at is None or abs(info[0] - started_at) < 0.5


def argv_has_token(cmdline: bytes, token: bytes) -> bool:
    return token in TOKEN_SPLIT.split(cmdline)


def iter_pids() -> Iterator[int]:
    try:
        names = os.listdir(PROC)
    except OSError:
        return
    for name in names:
        if name.isdigit():
            yield int(name)


def find_by_argv(build: str, exclude: Tuple[int, ...]) -> Optional[int]:
    """Oldest live process whose argv holds the build name as a whole token (not us, not helpers)."""
    token = build.encode()
    best: Optional[Tuple[float, int]] = None
    for pid in iter_pids():
        if pid in exclude:
            continue
        try:
            cmdline = (PROC / str(pid) / "cmdline").read_bytes()
        except OSError:
            continue
        if not cmdline or token not in cmdline or any(m in cmdline for m in SELF_MARKERS):
            continue
        if not argv_has_token(cmdline, token):
            continue
        info = process_start(pid)
        if info and info[1] not in ("Z", "X", "x") and (best is None or info[0] < best[0]):
            best = (info[0], pid)
    return best[1] if best else None


def read_pid_file(path: Path) -> Tuple[Optional[int], Optional[float], str]:
    """(pid, pid file mtime, note)."""
    try:
        st = path.stat()
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except FileNotFoundError:
        return None, None, ""
    except OSError as exc:
        return None, None, f"pid file unreadable: {exc.strerror}"
    if not text.isdigit() or not 0 < int(text) < 2**22:
        return None, st.st_mtime, f"pid file holds {text[:20]!r}, not a pid"
    return int(text), st.st_mtime, ""


class LauncherTracker:
    """Remembers the launcher between polls: pid, start time, when it was last seen alive."""

    def __init__(self, build: str, pid_file: Path):
        self.build = build
        self.pid_file = pid_file
        self.pid: Optional[int] = None
        self.started_at: Optional[float] = None
        self.last_seen: Optional[float] = None
        self.source = "none"
        self.exclude = (os.getpid(), os.getppid())

    def check(self, now: float) -> Liveness:
        if self.pid is not None and alive(self.pid, self.started_at):
            self.last_seen = now
            return Liveness(True, self.pid, self.started_at, now, self.source)
        pid, pid_mtime, note = read_pid_file(self.pid_file)
        source = "pid file"
        if pid is not None:
            info = process_start(pid)
            if info is None or info[1] in ("Z", "X", "x"):
                pid = None
            elif pid_mtime is not None and info[0] > pid_mtime + PIDFILE_SLACK:
                note, pid = f"pid {pid} from the pid file belongs to a newer process (pid reused)", None
        if pid is None:
            pid, source = find_by_argv(self.build, self.exclude), "process scan"
        if pid is None:
            return Liveness(False, self.pid, self.started_at, self.last_seen, self.source, note)
        info = process_start(pid)
        self.pid, self.source = pid, source
        self.started_at = info[0] if info else None
        self.last_seen = now
        return Liveness(True, pid, self.started_at, now, source, note)
