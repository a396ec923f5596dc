"""Is the launcher alive? Read from /proc: a pid file first, else a scan of argv for the build name.

Once a launcher is found it is re-checked by pid alone (one small read); the /proc scan runs only
while no launcher is known, and even then reads only the argv of processes it has not ruled out
yet (see ArgvScanner). A pid is trusted only while its start time matches what was seen, so a
recycled pid never keeps a dead run "alive".
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

PROC = "/proc"  # a plain string: paths under it are built on every poll; tests point it at a fake tree
SELF_MARKERS = (b"atvm_run_watcher", b"atvm-run-watcher")  # the watcher and its helpers
TOKEN_SPLIT = re.compile(rb"[=/:,\s\x00]+")
PIDFILE_SLACK = 2.0  # seconds: a pid file is written after its process started
DEAD = ("Z", "X", "x")
# While no launcher is known, a process whose argv lacks the build name is not read again, except
# during RECHECK_NEW_SECONDS after it was first seen (between fork and exec a child still shows its
# parent's argv) and on a full rescan every RESCAN_SECONDS (a process that exec's or rewrites its argv
# later). RESCAN_SECONDS bounds how late such a launcher is found: keep it well under the gone grace.
RECHECK_NEW_SECONDS = 2.0
RESCAN_SECONDS = 30.0

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
_boot_times: Dict[str, float] = {}


def boot_time() -> float:
    if PROC not in _boot_times:
        try:
            with open(f"{PROC}/uptime", "rb") as fh:
                uptime = float(fh.read().split()[0])
            _boot_times[PROC] = time.time() - uptime
        except (OSError, ValueError, IndexError):
            _boot_times[PROC] = 0.0
    return _boot_times[PROC]


def process_start(pid: int) -> Optional[Tuple[float, str]]:
    """(start time as epoch seconds, state letter) or None when there is no such process."""
    try:
        with open(f"{PROC}/{pid}/stat", "rb") as fh:
            raw = fh.read()
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
    if info is None or info[1] in DEAD:
        return False
    return started_at is None or abs(info[0] - started_at) < 0.5


def argv_has_token(cmdline: bytes, token: bytes) -> bool:
    return token in TOKEN_SPLIT.split(cmdline)


def is_candidate(cmdline: bytes, token: bytes) -> bool:
    """Does this argv name the build as a whole token, and is it not the watcher or one of its helpers?"""
    if token not in cmdline or any(m in cmdline for m in SELF_MARKERS):
        return False
    return argv_has_token(cmdline, token)


def list_pids() -> List[int]:
    try:
        names = os.listdir(PROC)
    except OSError:
        return []
    return [int(n) for n in names if n.isdigit()]


def read_last_pid() -> Optional[bytes]:
    """The pid most recently created (last field of /proc/loadavg), or None where it cannot be read."""
    try:
        with open(f"{PROC}/loadavg", "rb") as fh:
            return fh.read().split()[4]
    except (OSError, IndexError):
        return None


def read_cmdline(pid: int) -> bytes:
    try:
        with open(f"{PROC}/{pid}/cmdline", "rb") as fh:
            return fh.read()
    except OSError:
        return b""


class ArgvScanner:
    """Finds the oldest live process naming the build in its argv, reading each argv once, not every poll.

    Reading 500 argvs costs about 10 ms, too much for every poll. So a pid whose argv was ruled out
    is skipped (see RECHECK_NEW_SECONDS, RESCAN_SECONDS), and /proc is not even listed while the last
    pid the kernel handed out (in /proc/loadavg) is unchanged: then no process was created since.
    """

    def __init__(self, build: str, exclude: Iterable[int] = ()):
        self.token = build.encode()
        self.exclude = frozenset(exclude)
        self.passed: Dict[int, float] = {}  # pid -> when first seen; its argv did not name the build
        self.full_at: Optional[float] = None
        self.last_pid: Optional[bytes] = None

    def find(self, now: float) -> Optional[int]:
        full = self.full_at is None or not 0 <= now - self.full_at < RESCAN_SECONDS
        if full:
            self.full_at = now
        last_pid = read_last_pid()
        if full or last_pid is None or last_pid != self.last_pid:
            self.last_pid = last_pid
            return self._scan(list_pids(), now, full, relisted=True)
        young = [pid for pid, first in self.passed.items() if now - first < RECHECK_NEW_SECONDS]
        return self._scan(young, now, False, relisted=False)

    def _scan(self, pids: List[int], now: float, full: bool, relisted: bool) -> Optional[int]:
        # After a listing, pids gone from /proc drop out of ``passed``: a reused pid is read afresh.
        passed: Dict[int, float] = {} if relisted else self.passed
        best: Optional[Tuple[float, int]] = None
        for pid in pids:
            first = self.passed.get(pid)
            if first is not None and not full and now - first >= RECHECK_NEW_SECONDS:
                passed[pid] = first
                continue
            info = None if pid in self.exclude else self._launcher_info(pid)
            if info is None:
                passed[pid] = now if first is None else first
            elif best is None or info[0] < best[0]:
                best = (info[0], pid)
        self.passed = passed
        return best[1] if best else None

    def _launcher_info(self, pid: int) -> Optional[Tuple[float, str]]:
        if not is_candidate(read_cmdline(pid), self.token):
            return None
        info = process_start(pid)
        return info if info and info[1] not in DEAD else None


def find_by_argv(build: str, exclude: Tuple[int, ...]) -> Optional[int]:
    """Oldest live process whose argv holds the build name as a whole token (not us, not helpers)."""
    return ArgvScanner(build, exclude).find(time.time())


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
        self.scanner = ArgvScanner(build, self.exclude)

    def check(self, now: float) -> Liveness:
        if self.pid is not None and alive(self.pid, self.started_at):
            self.last_seen = now
            return Liveness(True, self.pid, self.started_at, now, self.source)
        pid, pid_mtime, note = read_pid_file(self.pid_file)
        source = "pid file"
        if pid is not None:
            info = process_start(pid)
            if info is None or info[1] in DEAD:
                pid = None
            elif pid_mtime is not None and info[0] > pid_mtime + PIDFILE_SLACK:
                note, pid = f"pid {pid} from the pid file belongs to a newer process (pid reused)", None
        if pid is None:
            pid, source = self.scanner.find(now), "process scan"
        if pid is None:
            return Liveness(False, self.pid, self.started_at, self.last_seen, self.source, note)
        info = process_start(pid)
        self.pid, self.source = pid, source
        self.started_at = info[0] if info else None
        self.last_seen = now
        return Liveness(True, pid, self.started_at, now, source, note)
