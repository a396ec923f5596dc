"""Waiting between two looks at the evidence: woken by a change, not by a timer.

A waiting watcher sleeps in one ``select()`` on three things: an inotify instance watching the run's
files and folders (``EvidenceReader.watch_targets``), a pidfd of the launcher (readable when it exits),
and the stop request's wake-up pipe (stop.py). It also wakes at the next instant a time rule of the
decision could fire (``next_deadline``) and at the latest after SAFETY_SECONDS, which bounds what a
missed event can delay. Where inotify cannot be had (no libc symbol, the per-user limit of instances
or watches reached, a system-call filter) or ``ATVM_WAKE=poll`` asks so, it polls every
``ATVM_POLL_SECONDS`` as it always did: the decisions are the same, only later.

What cannot be seen by events is polled: a launcher without a pidfd (Linux before 5.3) is checked every
``ATVM_POLL_SECONDS`` (one read of its /proc stat, not a whole look), and a decision that is settling
(a file still being written, perhaps through mmap, which raises no event) is looked at as often.
A watcher quiet for ATVM_REST_AFTER_SECONDS hands its inotify instance and pidfd to the light waiter
(rest.py, started by commands/watch.py in the same process), which waits on them the same way.
docs/PERFORMANCE.md has what this costs and buys.
"""

from __future__ import annotations

import errno
import os
import struct
import time
from typing import Callable, Dict, Iterable, List, NamedTuple, Optional, Set, Tuple

from .stop import StopRequest
from .vocab import ReportSet, Snapshot, changed_at

# The longest a waiting watcher sleeps: it bounds how late a change that raised no event is seen (a
# write by another machine to a network filesystem, an mmap write) and how late a new launcher found
# only by its argv is seen. A decision that would end the run or a sub-run while no launcher is alive
# (the gone grace, the start timeout, a settled log) first has every argv read again
# (EvidenceReader.launcher_rescanned), so those rules never rest on this bound. Each safety look costs
# well under a millisecond: once a minute is less than a bare interpreter waking every second
# (docs/PERFORMANCE.md, section 2).
SAFETY_SECONDS = 60.0
# Looks woken by events are rationed like tokens in a bucket: a few at once (a banner, the closing line
# and the .exit file come in quick succession, and each is looked at when it lands), then at most
# LOOKS_PER_SECOND while files keep changing (a chatty log), so a busy run costs a bounded number of looks.
LOOKS_PER_SECOND = 20.0
LOOK_BURST = 4.0
# A reporter writes a report in a few system calls (create, write, write, close): events that concern only
# report folders are gathered for this long into one look, which then finds the report whole. Reports are
# never finish evidence, so no post waits for this; any other event ends the wait at once.
REPORTS_GATHER_SECONDS = 0.1
# File events naming report files are handed to the next look (EvidenceReader.reports_touched); past this
# many, the look stats every report instead (lost_events), so what is kept between looks stays bounded.
TOUCHED_MOST = 1024
DEADLINE_MARGIN = 0.002  # wake just after a deadline, not just before it

# <sys/inotify.h>
IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE = 0x2, 0x4, 0x8
IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x40, 0x80, 0x100, 0x200
IN_DELETE_SELF, IN_MOVE_SELF = 0x400, 0x800
IN_Q_OVERFLOW, IN_IGNORED = 0x4000, 0x8000
IN_ONLYDIR, IN_MASK_ADD = 0x01000000, 0x20000000
ENTRIES = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO  # a folder's names came or went
CONTENT = IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE  # bytes or times changed
SELF = IN_DELETE_SELF | IN_MOVE_SELF  # the watched file or folder itself went away
EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then len bytes of name


class Targets(NamedTuple):
    """What to watch: ``files`` (their content and presence), ``trees`` (folders where any change of any
    entry matters: report folders) and ``folders`` (folders where entries coming and going matter).
    ``logs``, among ``files``: their growth alone is told apart (``Waiter.logs_only``)."""

    files: Tuple[str, ...] = ()
    trees: Tuple[str, ...] = ()
    folders: Tuple[str, ...] = ()
    logs: Tuple[str, ...] = ()


class Inotify:
    """libc's inotify through ctypes (the standard library has no binding).

    Pickled, it is its descriptor's number: a watcher that rests (rest.py) keeps the instance, with its
    watches and its queued events, open across exec()."""

    def __init__(self, fd: int = -1) -> None:
        import ctypes  # only a watcher that waits on events pays for it

        libc = ctypes.CDLL(None, use_errno=True)
        init, self._add, self._rm = libc.inotify_init1, libc.inotify_add_watch, libc.inotify_rm_watch
        init.argtypes, init.restype = (ctypes.c_int,), ctypes.c_int
        self._add.argtypes, self._add.restype = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32), ctypes.c_int
        self._rm.argtypes, self._rm.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
        self._errno = ctypes.get_errno
        if fd < 0:
            fd = init(os.O_NONBLOCK | os.O_CLOEXEC)
            if fd < 0:
                raise self._error("inotify_init1")
        self.fd = fd

    def __getstate__(self) -> Dict[str, int]:
        return {"fd": self.fd}

    def __setstate__(self, state: Dict[str, int]) -> None:
        self.__init__(state["fd"])  # type: ignore[misc]

    def _error(self, what: str) -> OSError:
        code = self._errno()
        return OSError(code, f"{what}: {os.strerror(code)}")

    def add(self, path: str, mask: int) -> int:
        wd = self._add(self.fd, os.fsencode(path), mask)
        if wd < 0:
            raise self._error("inotify_add_watch")
        return wd

    def remove(self, wd: int) -> None:
        self._rm(self.fd, wd)  # fails only when the watch is already gone

    def read(self) -> List[Tuple[int, int, str]]:
        """Every queued event as (wd, mask, name); [] when none is queued."""
        events = []
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return events
            at = 0
            while at + EVENT.size <= len(data):
                wd, mask, _cookie, size = EVENT.unpack_from(data, at)
                name = data[at + EVENT.size : at + EVENT.size + size].split(b"\0", 1)[0]
                events.append((wd, mask, os.fsdecode(name)))
                at += EVENT.size + size

    def close(self) -> None:
        os.close(self.fd)


_ANY = None  # every name in a folder matters


class Watches:
    """Keeps inotify watches on the targets, re-armed as files and folders come, go and are replaced.

    A file is watched itself (its content) and through its folder (a name created, deleted or renamed:
    rotation, an atomic replace); a path that does not exist yet is watched through its nearest
    existing ancestor, for the next name on the way. In a folder shared with other runs (the log folder)
    only the events naming this run's files count, so other runs' activity wakes the watcher only to
    drop what it reads.
    """

    def __init__(self, inotify: Inotify) -> None:
        self.inotify = inotify
        self.watched: Dict[str, Tuple[int, Tuple[int, int], int]] = {}  # path -> (wd, (dev, ino), mask)
        self.names: Dict[int, Optional[Set[str]]] = {}  # wd -> names that count (None: any)
        self.targets: Optional[Targets] = None
        self.stale = True  # entries came or went, or a watch went away: check every watch again
        self.overflowed = False
        self.log_wds: Set[int] = set()  # the watches on the logs themselves
        self.tree_wds: Set[int] = set()  # the watches on report folders
        self.tree_paths: Dict[int, str] = {}  # report folder watch -> its folder
        self.touched: Optional[Set[str]] = set()  # report files events named since the last look (None: too many)
        self.logs_only = True  # every relevant event since this was last set was a log's content
        self.trees_only = True  # every relevant event since this was last set was in a report folder

    def forget(self) -> None:
        """Make every watch again at the next ``arm`` (the events that said which were gone were read elsewhere)."""
        self.watched = {}
        self.stale = True

    def arm(self, targets: Targets) -> bool:
        """Bring the watches in line with ``targets``; True when a watch was added or widened (what changed
        before it was armed raised no event: the caller looks again). OSError: inotify refused a watch."""
        if targets == self.targets and not self.stale:
            return False
        self.targets, self.stale = targets, False
        want: Dict[str, Tuple[int, Optional[Set[str]]]] = {}
        idents: Dict[str, Tuple[int, int]] = {}

        def need(path: str, mask: int, name: Optional[str] = _ANY) -> None:
            old_mask, names = want.get(path, (0, set()))
            if names is not None:
                names = _ANY if name is _ANY else names | {name}
            want[path] = (old_mask | mask, names)

        def exists(path: str) -> bool:
            if path not in idents:
                try:
                    st = os.stat(path)
                except OSError:
                    return False
                idents[path] = (st.st_dev, st.st_ino)
            return True

        def through_ancestor(path: str) -> None:
            while not exists(path):
                parent, name = os.path.split(path)
                if parent == path:
                    return
                if exists(parent):
                    need(parent, ENTRIES, name)
                    return
                path = parent

        for path in targets.files:
            folder, name = os.path.split(path)
            if exists(folder):
                need(folder, ENTRIES, name)
                if exists(path):
                    need(path, CONTENT)
            else:
                through_ancestor(folder)
        for path, mask in [(p, ENTRIES | CONTENT) for p in targets.trees] + [(p, ENTRIES) for p in targets.folders]:
            if exists(path):
                need(path, mask)
            else:
                through_ancestor(path)
        return self._apply(want, idents)

    def _apply(self, want: Dict[str, Tuple[int, Optional[Set[str]]]], idents: Dict[str, Tuple[int, int]]) -> bool:
        added = False
        before = {w[0] for w in self.watched.values()}
        names: Dict[int, Optional[Set[str]]] = {}
        for path, (mask, wanted_names) in want.items():
            known = self.watched.get(path)
            if known is None or known[1] != idents[path] or mask & ~known[2]:
                try:
                    wd = self.inotify.add(path, mask | SELF | IN_MASK_ADD)
                except OSError as exc:
                    if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.EACCES):
                        self.stale = True  # gone meanwhile (its folder's event says so), or not ours to read
                        continue
                    raise
                self.watched[path] = (wd, idents[path], mask | (known[2] if known and known[0] == wd else 0))
                added = True
            wd = self.watched[path][0]
            if wd in names and names[wd] is not None:
                names[wd] = _ANY if wanted_names is _ANY else names[wd] | wanted_names
            elif wd not in names:
                names[wd] = None if wanted_names is _ANY else set(wanted_names)
        for path in [p for p in self.watched if p not in want]:
            del self.watched[path]
        self.log_wds = {self.watched[p][0] for p in self.targets.logs if p in self.watched}
        self.tree_paths = {self.watched[p][0]: p for p in self.targets.trees if p in self.watched}
        self.tree_wds = set(self.tree_paths)
        for wd in before - set(names):  # no longer wanted, or left on a replaced file (a rotated log)
            self.inotify.remove(wd)
        self.names = names
        return added

    def relevant(self, events: Iterable[Tuple[int, int, str]]) -> bool:
        """Did any of these events concern this run (not merely another file in a shared folder)?"""
        hit = False
        for wd, mask, name in events:
            if mask & IN_Q_OVERFLOW:  # events were lost: look at everything, check every watch
                self.overflowed = self.stale = hit = True
                continue
            if wd not in self.names:
                continue  # a watch dropped since
            if mask & (IN_IGNORED | SELF):  # the watched path itself went away
                for path in [p for p, w in self.watched.items() if w[0] == wd]:
                    del self.watched[path]
                self.stale = hit = True
                continue
            names = self.names[wd]
            if name and names is not None and name not in names:
                continue
            if mask & ENTRIES:
                self.stale = True
            if name and wd in self.tree_paths and self.touched is not None:
                self.touched.add(os.path.join(self.tree_paths[wd], name))
                if len(self.touched) > TOUCHED_MOST:
                    self.touched = None
            self.logs_only = self.logs_only and wd in self.log_wds
            self.trees_only = self.trees_only and wd in self.tree_wds
            hit = True
        if hit and (self.stale or self.overflowed):
            self.logs_only = False
        if self.overflowed:
            self.trees_only = False
        return hit


class Waiter:
    """Sleeps until the evidence may have changed; see the module's docstring."""

    def __init__(self, stop: StopRequest, poll_seconds: float, mode: str = "auto",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stop, self.poll_seconds, self.clock = stop, poll_seconds, clock
        self.watches: Optional[Watches] = None
        self.why_polling = "ATVM_WAKE=poll" if mode == "poll" else ""
        if mode != "poll":
            try:
                self.watches = Watches(Inotify())
            except (OSError, AttributeError) as exc:  # AttributeError: a libc without inotify
                self.why_polling = f"inotify is not available ({exc}{_limit_hint(exc)})"
        self.pid: Optional[int] = None
        self.pidfd = -1
        self.alive: Callable[[], bool] = _never  # picklable, as every attribute (rest.py)
        self.seen_alive: Optional[Tuple[int, float]] = None  # (pid, monotonic): the launcher was alive then
        self.looked_at = float("-inf")
        self.tokens = LOOK_BURST
        self.woken = False  # the last wait ended on events (not on its timeout)
        self.event_at = clock()  # when a wait last ended on a change (or the launcher's exit); rest.py reads it

    def __getstate__(self) -> Dict[str, object]:
        state = dict(self.__dict__)
        state["stop"] = None  # signal handlers and their pipe belong to one process image: given back on resume
        return state

    @property
    def on_events(self) -> bool:
        return self.watches is not None

    def describe(self) -> str:
        if self.watches is None:
            return f"polling every {self.poll_seconds:g}s ({self.why_polling})"
        return (f"waiting on file events (inotify), the launcher's exit (pidfd where available) and deadlines; "
                f"looking at least every {SAFETY_SECONDS:g}s")

    def looked(self, targets: Targets) -> bool:
        """Called after each look: watch ``targets`` from now on. True when the caller must look again at
        once: a watch was added (what changed before raised no event) or events were lost."""
        now = self.clock()
        self.tokens = min(LOOK_BURST, self.tokens + (now - self.looked_at) * LOOKS_PER_SECOND) - 1.0
        self.looked_at = now
        self.seen_alive = None
        if self.watches is None:
            return False
        self.watches.overflowed = False
        try:
            return self.watches.arm(targets)
        except OSError as exc:  # the watch limit (ENOSPC) or another refusal: poll from now on
            self._fall_back(f"inotify refused a watch ({exc}{_limit_hint(exc)}); polling every {self.poll_seconds:g}s")
            return True

    def lost_events(self) -> bool:
        """The event queue overflowed since the last look (or events named too many reports to keep): the next
        look must not rely on events."""
        return self.watches is not None and (self.watches.overflowed or self.watches.touched is None)

    def reports_touched(self) -> Tuple[str, ...]:
        """The report files file events named since this was last called (for EvidenceReader.reports_touched)."""
        if self.watches is None:
            return ()
        touched, self.watches.touched = self.watches.touched, set()
        return tuple(touched or ())

    def follow(self, pid: Optional[int], alive: Callable[[], bool]) -> None:
        """Watch this launcher (None: no live launcher). ``alive()`` says whether it is still the same process."""
        if pid == self.pid:
            return
        self._close_pidfd()
        self.pid, self.alive = pid, alive
        pidfd_open = getattr(os, "pidfd_open", None)
        if pid is None or self.watches is None or pidfd_open is None:
            return
        try:
            fd = pidfd_open(pid)
        except OSError:  # gone already (ESRCH), or not permitted: polled instead
            return
        if alive():  # checked after the open: the pidfd is this very process, not a reuse of its pid
            self.pidfd = fd
        else:
            os.close(fd)

    @property
    def launcher_polled(self) -> bool:
        """A live launcher whose exit no pidfd reports: its liveness is polled every ATVM_POLL_SECONDS."""
        return self.pid is not None and self.pidfd < 0

    @property
    def logs_only(self) -> bool:
        """The last wait ended on events that were all a log's content growing (``EvidenceReader.log_news``
        tells whether that needs a look)."""
        return self.watches is not None and self.watches.logs_only and self.woken

    def wait(self, timeout: float) -> bool:
        """Until this run's evidence may have changed or ``timeout`` passed; False when a stop was requested."""
        if self.watches is None:
            return self.stop.sleep(min(timeout, self.poll_seconds))
        watches, pid = self.watches, self.pid
        watches.logs_only = watches.trees_only = True
        end = self.clock() + max(0.0, timeout)
        woken, gathering = False, False
        while not self.stop.requested and not woken:
            left = end - self.clock()
            if left <= 0:
                woken = gathering
                break
            if self.launcher_polled:
                left = min(left, self.poll_seconds)
            fds = [watches.inotify.fd] + ([self.pidfd] if self.pidfd >= 0 else [])
            ready = self.stop.wait(left, fds)
            woken = self._woken(ready)
            if woken:
                self.event_at = self.clock()
            if woken and watches.trees_only and self.pid == pid:  # only reports so far: gather what follows
                if not gathering:
                    gathering, end = True, min(end, self.clock() + REPORTS_GATHER_SECONDS)
                woken = False
        self.woken = woken and self.pid == pid  # the launcher's exit is no log growth
        if self.stop.requested:
            return False
        # Out of tokens: wait until one has come back (a look at the next deadline, or a stop, ends it too).
        gap = min(end, self.looked_at + (1.0 - self.tokens) / LOOKS_PER_SECOND) - self.clock()
        return self.stop.sleep(gap) if gap > 0 else True

    def breathe(self) -> bool:
        """After a read that needed no look: pause 1/LOOKS_PER_SECOND (what is written meanwhile is read at
        once after it, in one go); False when a stop was requested."""
        return self.stop.sleep(1.0 / LOOKS_PER_SECOND)

    def _woken(self, ready: List[int]) -> bool:
        pid, now = self.pid, self.clock()
        if pid is not None:
            # A pidfd turns readable when its process ends, and that wakes this select at once: so the
            # launcher was alive until now, also when it has just ended (polled: until the last tick).
            ended = self.pidfd in ready if self.pidfd >= 0 else not self.alive()
            if self.pidfd >= 0 or not ended:
                self.seen_alive = (pid, now)
            if ended:
                self._close_pidfd()
                self.pid = None
                return True
        watches = self.watches
        return watches is not None and watches.inotify.fd in ready and watches.relevant(watches.inotify.read())

    def _fall_back(self, why: str) -> None:
        self.why_polling = why
        self.close()

    def _close_pidfd(self) -> None:
        if self.pidfd >= 0:
            os.close(self.pidfd)
        self.pidfd = -1

    def close(self) -> None:
        self._close_pidfd()
        if self.watches is not None:
            self.watches.inotify.close()
            self.watches = None


def _limit_hint(exc: BaseException) -> str:
    """Which limit an inotify refusal points at, for the operator."""
    code = getattr(exc, "errno", None)
    if code == errno.EMFILE:
        return ("; the user's limit of inotify instances (sysctl fs.inotify.max_user_instances, 128 by default: "
                "one per waiting watcher) or the process's open-file limit is reached")
    if code == errno.ENOSPC:
        return "; the user's limit of inotify watches (sysctl fs.inotify.max_user_watches) is reached"
    if code == errno.ENFILE:
        return "; the system's open-file table is full"
    return ""


def _never() -> bool:
    return False


def next_deadline(snap: Snapshot, spans: Iterable[float]) -> Optional[float]:
    """The next instant (monotonic) at which a time rule could change the decision though nothing changes.

    Every elapsed-time rule of decide.py compares ``now - t`` with one of the limits (``spans``), where
    ``t`` is one of: when the watcher started, when the launcher started, when it was last seen alive
    (once it is gone), or when a file of the run last changed (a maximum of these at most). So without
    a change the decision can only change when ``now`` crosses some ``t + span``: the earliest still
    ahead is the deadline (a few wake-ups at instants where no rule fires are the price of not
    restating the rules here; ``deadlines`` lists them all for a caller that can tell them apart).
    """
    return next(iter(deadlines(snap, spans)), None)


def deadlines(snap: Snapshot, spans: Iterable[float]) -> List[float]:
    """Every instant ``t + span`` still ahead (see ``next_deadline``), earliest first."""
    spans = tuple(spans)
    launcher = snap.launcher
    times = [snap.watcher_started_at, launcher.started_mono]
    if not launcher.alive:
        times.append(launcher.last_seen_alive)
    for scope in (snap.parent, *snap.groups):
        times += [changed_at(f) for f in (scope.log, scope.status, scope.exit) if f is not None]
        reports = scope.reports
        if reports:
            newest = lambda r=reports: max(changed_at(x) for x in r)  # noqa: E731
            # The adapter hands back the same ReportSet while no report changed: computed once per set.
            times.append(reports.derive("newest-change", newest) if isinstance(reports, ReportSet) else newest())
    now = snap.taken_at
    return sorted({t + span for t in times if t is not None for span in spans if t + span > now})


def timeout_until(deadline: Optional[float], now: float) -> float:
    """Seconds to wait for ``deadline`` (just past it), never more than SAFETY_SECONDS."""
    if deadline is None:
        return SAFETY_SECONDS
    return min(SAFETY_SECONDS, max(0.0, deadline - now) + DEADLINE_MARGIN)
