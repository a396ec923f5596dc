"""Is the launcher alive? Read from /proc: a pid file first, else a scan of argv for the build name.

Once a launcher is found it is re-checked by pid alone (one small read); the /proc scan runs only
while no launcher is known, and even then reads only the argv of processes it has not ruled out
yet (see ArgvScanner). A pid is trusted only while its start time matches what was seen, so a
recycled pid never keeps a dead run "alive".
"""

from __future__ import annotations

import errno
import os
import re
import time
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Set, Tuple

from .safefile import read_capped
from .vocab import Liveness

PROC = "/proc"  # a plain string: paths under it are built on every poll; tests point it at a fake tree
SELF_MARKERS = (b"atvm_run_watcher", b"atvm-run-watcher")  # the watcher and its helpers
TOKEN_SPLIT = re.compile(rb"[=/:,\s\x00]+")
PIDFILE_SLACK = 2.0  # seconds: a pid file is written after its process started
DEAD = ("Z", "X", "x")
# While no launcher is known, a process whose argv lacks the build name is not read again, except
# during RECHECK_NEW_SECONDS after it was first seen (between fork and exec a child still shows its
# parent's argv) and on a full rescan, which the caller asks for (``find(full=True)``) before it ends a
# run or a sub-run on the launcher's absence (EvidenceReader.launcher_rescanned): a process that exec's
# or rewrites its argv later is found then at the latest, never after a time rule fired on its absence.
RECHECK_NEW_SECONDS = 2.0
# New processes are found by reading the argv of the pids handed out since the last look (pids are handed
# out in turn; /proc/loadavg names the last), not by listing /proc, when there are at most this many.
PROBE_MOST = 64
LONG_AGO = float("-inf")


def _clock_ticks() -> int:
    try:
        return os.sysconf("SC_CLK_TCK")
    except (ValueError, OSError):
        return 100


CLK_TCK = _clock_ticks()
_boot_times: Dict[str, float] = {}


def read_proc_file(path: str) -> bytes:
    """The whole of a small /proc file in three system calls (a Python file object takes nine)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        os.close(fd)


def boot_time() -> float:
    if PROC not in _boot_times:
        try:
            uptime = float(read_proc_file(f"{PROC}/uptime").split()[0])
            _boot_times[PROC] = time.time() - uptime
        except (OSError, ValueError, IndexError):
            _boot_times[PROC] = 0.0
    return _boot_times[PROC]


def process_start(pid: int) -> Optional[Tuple[float, str]]:
    """(start time as epoch seconds, state letter) or None when there is no such process."""
    try:
        raw = read_proc_file(f"{PROC}/{pid}/stat")
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


# Programs an operator runs to look at a run, never to run one: following its journal
# (journalctl ATVM_BUILD=B -f), its log (tail -f /tmp/.log/B.log) or its unit. Taken for the
# launcher, they would keep a dead run alive and date the run from when someone started looking.
VIEWERS = frozenset(b"journalctl tail less more most cat head grep egrep fgrep zgrep rg ag awk gawk sed vi vim "
                    b"view nvim nano emacs watch systemctl ps pgrep pkill strace ltrace gdb lsof find ls multitail "
                    b"lnav file stat wc".split())


def is_candidate(cmdline: bytes, token: bytes) -> bool:
    """Does this argv name the build as a whole token, and is it not the watcher, one of its helpers,
    or a program someone runs to look at the run?"""
    if token not in cmdline or any(m in cmdline for m in SELF_MARKERS):
        return False
    program = cmdline.split(b"\x00", 1)[0].rsplit(b"/", 1)[-1]
    if program in VIEWERS:
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
        return read_proc_file(f"{PROC}/loadavg").split()[4]
    except (OSError, IndexError):
        return None


def read_cmdline(pid: int) -> bytes:
    try:
        return read_proc_file(f"{PROC}/{pid}/cmdline")
    except OSError:
        return b""


class ArgvScanner:
    """Finds the oldest live process naming the build in its argv, reading each argv once, not every poll.

    Reading 500 argvs costs milliseconds, too much for every poll. So an entry of /proc whose argv was
    ruled out is skipped (see RECHECK_NEW_SECONDS), and /proc is not even listed while the last pid the
    kernel handed out (in /proc/loadavg) is unchanged: then no process was created. When it changed by
    at most PROBE_MOST, only the pids handed out since are read (a look costs what was created, not what
    runs); otherwise, or when the pids wrapped around, /proc is listed again. Entries are kept as the
    names /proc lists, so a listing costs set operations, not a Python loop. Every argv is read again
    only on the first scan and when the caller asks (``full``).
    """

    def __init__(self, build: str, exclude: Iterable[int] = ()):
        self.token = build.encode()
        self.exclude = frozenset(str(pid) for pid in exclude)
        self.settled: Set[str] = set()  # ruled out for good (until the next full rescan)
        self.young: Dict[str, float] = {}  # ruled out for now; first seen at; its argv may still change
        self.full_at: Optional[float] = None
        self.last_pid: Optional[bytes] = None
        self.listed = 0  # entries of /proc at its last listing
        self.probed = 0  # pids read by number since: past ``listed``, list again (forgets the ended ones)

    def find(self, now: float, full: bool = False) -> Optional[int]:
        """The launcher's pid, or None. ``full``: read every argv again (before a decision rests on none)."""
        full = full or self.full_at is None
        last_pid = read_last_pid()
        previous, self.last_pid = self.last_pid, last_pid
        if full or last_pid is None or previous is None:
            return self._relist(now, full)
        if last_pid == previous:
            return self._check(list(self.young), now)
        try:
            old, new = int(previous), int(last_pid)
        except ValueError:
            return self._relist(now, False)
        if new < old:  # the pids wrapped around: a pid ruled out before may be another process now
            return self._relist(now, True)
        if new - old > PROBE_MOST or self.probed > self.listed:
            return self._relist(now, False)
        created = [str(pid) for pid in range(old + 1, new + 1)]  # handed out since: new processes, or gone
        self.probed += len(created)
        self.settled.difference_update(created)
        return self._check(dict.fromkeys([*self.young, *created]), now)

    def _relist(self, now: float, full: bool) -> Optional[int]:
        try:
            live = set(os.listdir(PROC))
        except OSError:
            live = set()
        self.listed, self.probed = len(live), 0
        self.settled &= live  # entries gone from /proc are forgotten: a reused pid is read afresh
        self.young = {name: first for name, first in self.young.items() if name in live}
        if full:
            self.full_at = now
            return self._check(live, now, reread=True)
        return self._check(live - self.settled, now)

    def _check(self, names: Iterable[str], now: float, reread: bool = False) -> Optional[int]:
        best: Optional[Tuple[float, int]] = None
        for name in names:
            first = self.young.get(name, LONG_AGO if name in self.settled else now)
            if not name.isdigit() or name in self.exclude or (not reread and now - first >= RECHECK_NEW_SECONDS):
                self._settle(name)
                continue
            info = self._launcher_info(int(name))
            if info is not None and (best is None or info[0] < best[0]):
                best = (info[0], int(name))
            elif info is None and now - first >= RECHECK_NEW_SECONDS:
                self._settle(name)
            elif info is None:
                self.young[name] = first
        return best[1] if best else None

    def _settle(self, name: str) -> None:
        self.young.pop(name, None)
        self.settled.add(name)

    def _launcher_info(self, pid: int) -> Optional[Tuple[float, str]]:
        if not is_candidate(read_cmdline(pid), self.token) or not is_process(pid):
            return None
        info = process_start(pid)
        return info if info and info[1] not in DEAD else None


def is_process(pid: int) -> bool:
    """Is this pid a process, not one of its threads? A thread's id is read by number as a process's is
    (/proc lists only processes, but a pid read by number may be a thread's id, which shows its process's argv).
    Where /proc/<pid>/status cannot be read or names no Tgid, it is taken for a process."""
    try:
        status = read_proc_file(f"{PROC}/{pid}/status")
    except OSError:
        return True
    at = status.find(b"\nTgid:")
    if at < 0:
        return True
    fields = status[at + 6:status.find(b"\n", at + 1)].split()
    return not fields or fields[0] == str(pid).encode()


def find_by_argv(build: str, exclude: Tuple[int, ...]) -> Optional[int]:
    """Oldest live process whose argv holds the build name as a whole token (not us, not helpers)."""
    return ArgvScanner(build, exclude).find(time.time())


def read_pid_file(path: Path) -> Tuple[Optional[int], Optional[float], str]:
    """(pid, pid file mtime, note). A link is not followed, and the note never shows the file's content:
    the log folder may be world-writable, and a link there could point at a root-only file."""
    try:
        raw, st = read_capped(path, 64, follow_symlinks=False)
        text = raw.decode("ascii", "replace").strip()
    except FileNotFoundError:
        return None, None, ""
    except OSError as exc:
        why = "a symbolic link, not followed" if exc.errno == errno.ELOOP else exc.strerror
        return None, None, f"pid file unreadable: {why}"
    if not text.isdigit() or not 0 < int(text) < 2**22:
        return None, st.st_mtime, f"pid file holds {st.st_size} bytes that are not a pid"
    return int(text), st.st_mtime, ""


class LauncherTracker:
    """Remembers the launcher between polls: pid, start time, when it was last seen alive."""

    def __init__(self, build: str, pid_file: Path):
        self.build = build
        self.pid_file = pid_file
        self.pid: Optional[int] = None
        self.started_at: Optional[float] = None
        self.last_seen: Optional[float] = None  # monotonic
        self.started_mono: Optional[float] = None
        self.source = "none"
        self.launched_at: Optional[float] = None  # the pid file's mtime, as last read
        self.exclude = (os.getpid(), os.getppid())
        self.scanner = ArgvScanner(build, self.exclude)

    def check(self, mono: float, wall: Optional[float] = None, full: bool = False) -> Liveness:
        """Is the launcher alive now? ``mono`` dates what is seen; ``wall`` dates the launcher's start;
        ``full``: where no pid names it, read every process's argv again (see ArgvScanner)."""
        if self.pid is not None and alive(self.pid, self.started_at):
            self.last_seen = mono
            return self._liveness(True, mono)
        pid, pid_mtime, note = read_pid_file(self.pid_file)
        self.launched_at = pid_mtime
        source = "pid file"
        if pid is not None:
            info = process_start(pid)
            if info is None or info[1] in DEAD:
                pid = None
            elif pid_mtime is not None and info[0] > pid_mtime + PIDFILE_SLACK:
                note, pid = f"pid {pid} from the pid file belongs to a newer process (pid reused)", None
        if pid is None:
            pid, source = self.scanner.find(mono, full), "process scan"
        if pid is None:
            return self._liveness(False, mono, note)
        info = process_start(pid)
        self.pid, self.source = pid, source
        self.started_at = info[0] if info else None
        # Its age at first sight, on the monotonic clock: a later step of the wall clock cannot move it.
        wall = time.time() if wall is None else wall
        self.started_mono = None if self.started_at is None else mono - max(0.0, wall - self.started_at)
        self.last_seen = mono
        return self._liveness(True, mono, note)

    def _liveness(self, alive_now: bool, mono: float, note: str = "") -> Liveness:
        return Liveness(alive_now, self.pid, self.started_at, self.last_seen, self.source, note, self.started_mono,
                        None if alive_now else self.launched_at)
