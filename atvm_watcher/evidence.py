"""The adapter: reads what an ATVM run leaves on disk.

It turns files and processes into a frozen ``Snapshot`` that the pure decision code reads. Where
the files are is layout.py's business (RunLayout); what they mean, and how to read them cheaply, is
this module's. Reports are ``*.json`` (mochawesome) and ``*.xml`` (JUnit) anywhere under a scope's
report folder.

It is incremental so that a poll costs the same at 1 MiB and at 1 GiB of log and stays small at
10,000 reports: logs are read from a remembered offset, reports are re-parsed only when they changed,
and not every report is stat-ed on every poll (see ReportScanner; figures in docs/PERFORMANCE.md).
"""

from __future__ import annotations

import os
import re
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

from . import procs
from .buildname import check_group_name
from .layout import RunLayout, ScopePaths
from .reports import MAX_REPORT_BYTES, parse_report
from .safefile import open_regular, read_capped, read_first_line
from .vocab import (
    NO_REPORTS,
    LogFacts,
    OutcomeFile,
    Report,
    ReportResult,
    ReportSet,
    ScopeEvidence,
    Snapshot,
    changed_at,
)

LOG_FIRST_READ_WINDOW = 16 * 1024 * 1024  # the banner and summary are at the end of a log
LOG_CHUNK = 1024 * 1024
MAX_LINE = 64 * 1024
TAIL_CHECK = 64
# Report scanning (see ReportScanner); docs/PERFORMANCE.md has what these cost and buy.
YOUNG_SECONDS = 30.0
SWEEP_SECONDS = 60.0
RACY_SECONDS = 2.0
# A log that shows a finished run (banner and summary) last written this long before the watcher first
# read it, and that grows later, is being appended to by a new run (see Scope._appended_after_end);
# a run's own trailing lines come right after its summary.
FINISHED_QUIET_SECONDS = 5.0
THOROUGH_SECONDS = 60.0
BANNER = "(Run Finished)"
PASSED_RE = re.compile(r"All specs passed!")
FAILED_RE = re.compile(r"(\d+) of (\d+) failed")


class LogTail:
    """Reads a log from a remembered offset: a quiet poll costs one stat, a busy one reads only what was appended.

    The cost of a poll does not depend on the log's size. The first read covers the last
    LOG_FIRST_READ_WINDOW bytes only: Cypress prints its banner and summary at the end. A new inode
    (rotation) or a smaller size (truncation) starts over; so does a log that was truncated and grew
    past the offset again between two polls (copytruncate), noticed because the TAIL_CHECK bytes before
    the offset are re-read with every read and no longer match.
    """

    def __init__(self, path: Path):
        self.path = path
        self.inode: Optional[Tuple[int, int]] = None
        self.restarted_at: Optional[float] = None
        self._start(0)

    def _start(self, offset: int) -> None:
        self.offset = offset
        self.carry = b""  # an incomplete last line, completed by the next read
        self.tail = b""  # the TAIL_CHECK bytes before offset, as read
        self.banner = False
        self.summary: Optional[str] = None
        self.failed_specs = self.total_specs = 0

    def facts(self, changes: Optional[Changes] = None, mono: float = 0.0, wall: float = 0.0) -> Optional[LogFacts]:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None  # a FIFO or device is no log, and reading one could block
        ident = (st.st_dev, st.st_ino)
        if ident != self.inode or st.st_size < self.offset:
            if changes is not None and changes.watching:
                self.restarted_at = mono  # created, replaced or truncated while watched: a new run's log
            self.inode = ident
            self._start(max(0, st.st_size - LOG_FIRST_READ_WINDOW))
        if st.st_size > self.offset:
            self._read_new(st.st_size)
        at, seen = changes.note(str(self.path), st, mono, wall) if changes is not None else (None, False)
        return LogFacts(str(self.path), st.st_size, st.st_mtime, self.banner, self.summary,
                        self.failed_specs, self.total_specs, at, seen, self.restarted_at)

    def _read_new(self, size: int) -> None:
        try:
            fd, _ = open_regular(self.path)
            with os.fdopen(fd, "rb") as fh:
                if self.tail and not self._same_history(fh):
                    self._start(max(0, size - LOG_FIRST_READ_WINDOW))
                fh.seek(self.offset)
                while self.offset < size:
                    chunk = fh.read(min(LOG_CHUNK, size - self.offset))
                    if not chunk:
                        break
                    self.offset += len(chunk)
                    self.tail = (self.tail + chunk[-TAIL_CHECK:])[-TAIL_CHECK:]
                    self._scan(chunk)
        except OSError:
            return  # unreadable right now; the next poll tries again

    def _same_history(self, fh) -> bool:
        fh.seek(self.offset - len(self.tail))
        return fh.read(len(self.tail)) == self.tail

    def _scan(self, chunk: bytes) -> None:
        data = self.carry + chunk
        cut = data.rfind(b"\n") + 1
        self.carry = data[cut:][-MAX_LINE:]  # an endless line: keep its tail only
        # The incomplete last line is searched too (a summary printed without a newline still counts);
        # it is searched again once complete, which gives the same answer.
        at = data.rfind(BANNER.encode())
        if at >= 0:
            self.banner, self.summary = True, None  # a later Cypress run in the same log: its own summary counts
            data = data[at:]
        if self.banner:
            self._find_summary(data.decode("utf-8", "replace"))

    def _find_summary(self, text: str) -> None:
        if PASSED_RE.search(text):
            self.summary = "passed"
        for m in FAILED_RE.finditer(text):
            self.summary, self.failed_specs, self.total_specs = "failed", int(m.group(1)), int(m.group(2))


class Changes:
    """When the watcher saw each file change, on the monotonic clock (vocab.py says why).

    Until the first snapshot is complete (``watching`` false) a file is merely found: its change is
    dated by its age at first sight, never negative (a future mtime is a change now). Afterwards a
    new or changed file is a change the watcher saw, dated when it saw it.
    """

    def __init__(self) -> None:
        self.seen: Dict[str, Tuple[Tuple[int, int, int], float, bool]] = {}
        self.watching = False

    def note(self, key: str, st: os.stat_result, mono: float, wall: float) -> Tuple[float, bool]:
        sig = (st.st_ino, st.st_size, st.st_mtime_ns)
        prev = self.seen.get(key)
        if prev is not None and prev[0] == sig:
            return prev[1], prev[2]
        if prev is None and not self.watching:
            at, seen = mono - max(0.0, wall - st.st_mtime), False
        else:
            at, seen = mono, True
        self.seen[key] = (sig, at, seen)
        return at, seen


def read_outcome(path: Path, changes: Optional[Changes] = None, mono: float = 0.0,
                 wall: float = 0.0) -> Optional[OutcomeFile]:
    try:
        word, st = read_first_line(path, 256)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return OutcomeFile(str(path), 0.0, "", f"unreadable: {exc.strerror}", mono, False)
    at, seen = changes.note(str(path), st, mono, wall) if changes is not None else (None, False)
    return OutcomeFile(str(path), st.st_mtime, word, None, at, seen)


def parse_file(path: str, size: int) -> ReportResult:
    if size > MAX_REPORT_BYTES:
        return ReportResult(path, "unknown", "invalid", f"{size} bytes is over the {MAX_REPORT_BYTES}-byte limit")
    try:
        data, _ = read_capped(path, MAX_REPORT_BYTES + 1)
    except OSError as exc:
        return ReportResult(path, "unknown", "invalid", f"unreadable: {exc.strerror}")
    return parse_report(path, data)


@dataclass
class _Seen:
    """A report file as last stat-ed, and what parsing it gave."""

    ino: int
    size: int
    mtime_ns: int
    parsed_at: float  # wall clock, compared with the file's mtime
    report: Report

    def same(self, st: os.stat_result) -> bool:
        return self.ino == st.st_ino and self.size == st.st_size and self.mtime_ns == st.st_mtime_ns


class ReportScanner:
    """The report files under a folder, kept parsed at a cost per poll that barely grows with their number.

    Stat-ing every file on every poll costs about 50 ms at 10,000 reports. Instead, on each poll:
    every known folder is stat-ed, and one whose inode or mtime changed is listed again (adding,
    removing or renaming a file changes its folder's mtime); files modified in the last YOUNG_SECONDS
    are stat-ed again (reporters write in bursts); the others are stat-ed round-robin, each at least
    once per SWEEP_SECONDS, which bounds how late an old report rewritten in place is noticed; and
    while the scope's finish evidence is new (``thorough``), every file is stat-ed, so a verdict never
    rests on a stale stat. A file is parsed again when its inode, size or mtime changed, or when it
    was parsed within RACY_SECONDS of its mtime (a same-size rewrite inside one timestamp tick).
    """

    def __init__(self, root: Path, skip_dirs: Tuple[str, ...] = ()):
        self.root = str(root)
        self.skip_dirs = skip_dirs  # top-level folders that belong to someone else (e.g. sub-runs)
        self.folders: Dict[str, Tuple[int, int, float]] = {}  # folder -> (inode, mtime_ns, listed at)
        self.subfolders: Dict[str, Tuple[str, ...]] = {}
        self.names: Dict[str, Set[str]] = {}  # folder -> its report files
        self.files: Dict[str, _Seen] = {}
        self.young: Set[str] = set()
        self.order: List[str] = []  # sorted paths: the result's order and the sweep's
        self.cursor = 0
        self.budget = 0.0
        self.last_scan: Optional[float] = None
        self.reports: ReportSet = NO_REPORTS
        self.changed = self.relisted = False
        self.checked: Set[str] = set()  # paths stat-ed during the current scan
        self.watching = False  # the first scan is done: what is new or changed now was seen changing
        self.mono = 0.0

    def scan(self, now: Optional[float] = None, thorough: bool = False, mono: Optional[float] = None) -> ReportSet:
        """``now`` is the wall clock (compared with mtimes); ``mono`` dates the changes seen (vocab.py)."""
        now = time.time() if now is None else now
        self.mono = time.monotonic() if mono is None else mono
        self.checked = set()
        self._visit_folders()
        for path in self._due(now, thorough):
            if path not in self.checked:
                self._check(path, now)
        if self.relisted:
            self.order = sorted(self.files)
        if self.changed or self.relisted:
            self.reports = ReportSet(self.files[p].report for p in self.order)
        self.changed = self.relisted = False
        self.last_scan = now
        self.watching = True
        return self.reports

    def _visit_folders(self) -> None:
        stack = [self.root]
        while stack:
            folder = stack.pop()
            try:
                st = os.stat(folder)
            except OSError:
                self._forget_folder(folder)
                continue
            known = self.folders.get(folder)
            if known is None or known[:2] != (st.st_ino, st.st_mtime_ns) or racy(known[2], st.st_mtime):
                listed_at = time.time()
                if self._list(folder):
                    self.folders[folder] = (st.st_ino, st.st_mtime_ns, listed_at)
            stack.extend(self.subfolders.get(folder, ()))

    def _list(self, folder: str) -> bool:
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError:
            return False
        subs: List[str] = []
        found: Dict[str, int] = {}
        for e in entries:
            try:
                if e.is_dir(follow_symlinks=False):
                    if not (folder == self.root and e.name in self.skip_dirs):
                        subs.append(e.path)
                elif e.name.endswith((".json", ".xml")) and e.is_file(follow_symlinks=False):
                    found[e.path] = e.inode()  # from the directory listing itself: no stat
            except OSError:
                continue
        for gone in set(self.subfolders.get(folder, ())) - set(subs):
            self._forget_folder(gone)
        self.subfolders[folder] = tuple(subs)
        for gone in self.names.get(folder, set()) - found.keys():
            self._drop(gone)
        self.names[folder] = set(found)
        for path, ino in found.items():
            seen = self.files.get(path)
            if seen is None or seen.ino != ino:  # new, or replaced by a rename
                self._check(path, None)
        return True

    def _forget_folder(self, folder: str) -> None:
        for sub in self.subfolders.pop(folder, ()):
            self._forget_folder(sub)
        for path in self.names.pop(folder, set()):
            self._drop(path)
        self.folders.pop(folder, None)

    def _drop(self, path: str) -> None:
        if self.files.pop(path, None) is not None:
            self.relisted = True
        self.young.discard(path)

    def _due(self, now: float, thorough: bool) -> List[str]:
        if thorough:
            return list(self.files)
        n = len(self.order)
        if self.last_scan is not None and n:
            self.budget = min(float(n), self.budget + n * max(0.0, now - self.last_scan) / SWEEP_SECONDS)
        take = int(self.budget)
        self.budget -= take
        due = list(self.young)
        if take:
            self.cursor %= n
            due += self.order[self.cursor : self.cursor + take]
            due += self.order[: max(0, self.cursor + take - n)]
            self.cursor += take
        return due

    def _check(self, path: str, now: Optional[float]) -> None:
        self.checked.add(path)
        try:
            st = os.stat(path, follow_symlinks=False)
        except OSError:
            self._drop(path)
            return
        seen = self.files.get(path)
        if seen is None or not seen.same(st) or racy(seen.parsed_at, st.st_mtime):
            parsed_at = time.time()
            if seen is not None and seen.same(st):  # parsed again only to be sure: not a change
                at, saw = seen.report.changed_at, seen.report.seen_change
            elif seen is None and not self.watching:
                at, saw = self.mono - max(0.0, parsed_at - st.st_mtime), False
            else:
                at, saw = self.mono, True
            report = Report(st.st_mtime, st.st_size, parse_file(path, st.st_size), at, saw)
            if seen is None:
                self.relisted = True
            self.files[path] = _Seen(st.st_ino, st.st_size, st.st_mtime_ns, parsed_at, report)
            self.changed = True
        now = time.time() if now is None else now
        if now - YOUNG_SECONDS < st.st_mtime < now + RACY_SECONDS:  # far in the future: a skewed clock
            self.young.add(path)
        else:
            self.young.discard(path)


def racy(seen_at: float, mtime: float) -> bool:
    """Was this seen so close to its mtime that a change within the same timestamp tick could hide?

    An mtime well in the future (a skewed clock) is not racy: any later write sets the mtime to now.
    """
    return abs(seen_at - mtime) < RACY_SECONDS


class Clock:
    """The two clocks the reader needs; tests and tools may pass their own."""

    wall = staticmethod(time.time)
    mono = staticmethod(time.monotonic)


SYSTEM_CLOCK = Clock()


class Scope:
    """Readers for one run or sub-run's files."""

    def __init__(self, group: Optional[str], paths: ScopePaths):
        self.group = group
        self.tail = LogTail(paths.log)
        self.scanner = ReportScanner(paths.reports)
        self.status_path, self.exit_path = paths.status, paths.exit
        self.changes = Changes()
        self.ended_log: Optional[Tuple[Tuple[int, int], int]] = None  # (inode, size) of a log found finished

    def evidence(self, mono: float, wall: float, read_reports: bool = True) -> ScopeEvidence:
        log = self.tail.facts(self.changes, mono, wall)
        if log is not None and not self.changes.watching:
            if log.finished_banner and log.summary and wall - log.mtime >= FINISHED_QUIET_SECONDS:
                self.ended_log = (self.tail.inode, self.tail.offset) if self.tail.inode else None
        elif log is not None and self.ended_log is not None:
            log = self._appended_after_end(log, mono, wall)
        reports = NO_REPORTS
        status = read_outcome(self.status_path, self.changes, mono, wall)
        exit_ = read_outcome(self.exit_path, self.changes, mono, wall)
        if read_reports:
            finished = [changed_at(f) for f in (status, exit_) if f is not None]
            if log is not None and log.finished_banner:
                finished.append(changed_at(log))
            thorough = bool(finished) and mono - max(finished) < THOROUGH_SECONDS
            reports = self.scanner.scan(wall, thorough=thorough, mono=mono)
        self.changes.watching = True
        return ScopeEvidence(group=self.group, log=log, reports=reports, status=status, exit=exit_)

    def _appended_after_end(self, log: LogFacts, mono: float, wall: float) -> LogFacts:
        """A log that held a finished, quiet run when first read and grows now: a new run appends to it.

        Its earlier (Run Finished) banner and summary are the earlier run's: forget them and read on
        from where that run ended, and date a new run's start here, as for a rewritten log (a cut)."""
        inode, end = self.ended_log or (None, 0)
        if self.tail.inode != inode:
            self.ended_log = None  # replaced or truncated: LogTail already starts over
            return log
        if log.size <= end:
            return log
        self.ended_log = None
        self.tail.restarted_at = mono
        self.tail._start(end)
        return self.tail.facts(self.changes, mono, wall) or log


class EvidenceReader:
    """Stateful reader for one build; ``snapshot()`` is called once per poll."""

    def __init__(self, layout: RunLayout, categorized: bool, clock: Clock = SYSTEM_CLOCK,
                 known_groups: Tuple[str, ...] = (), recorded_run_start: Optional[float] = None,
                 requested_at: Optional[float] = None):
        self.build = build = layout.build
        self.layout = layout
        self.clock = clock
        self.recorded_run_start = recorded_run_start
        self.requested_at = requested_at
        self.categorized = categorized
        self.watcher_started_at = clock.mono()
        self.parent = Scope(None, self.layout.run())
        self.groups: Dict[str, Scope] = {}
        for g in known_groups:
            self._add_group(g)
        self.leftovers: Set[str] = set()  # groups whose only files were an earlier run's (see mark_leftovers)
        self.launcher = procs.LauncherTracker(build, self.layout.pid_file())

    def _add_group(self, g: str) -> None:
        self.groups[g] = Scope(g, self.layout.group(g))

    def _group_files(self) -> List[Tuple[float, str]]:
        """(last mtime, group) for every group with a file in the layout.

        Sub-runs run one after another, so the last change orders them as the first does; and it is not
        pulled back by files an earlier run left in a group of the same name."""
        seen: Dict[str, float] = {}
        for folder in self.layout.group_folders():
            try:
                entries = list(os.scandir(folder.path))
            except OSError:
                continue
            for e in entries:
                name = folder.group_of(e.name)
                try:
                    if name is None or not (e.is_file() if folder.holds_files else e.is_dir(follow_symlinks=False)):
                        continue
                    mtime = e.stat().st_mtime
                except OSError:
                    continue
                if check_group_name(name):
                    seen[name] = max(mtime, seen.get(name, mtime))
        return sorted((t, g) for g, t in seen.items())

    def snapshot(self) -> Snapshot:
        mono, wall = self.clock.mono(), self.clock.wall()
        if self.categorized:
            for _, g in self._group_files():  # groups in order of appearance
                if g not in self.groups:
                    self._add_group(g)
        groups = {g: s.evidence(mono, wall) for g, s in self.groups.items()}
        self._reappeared(groups)
        return Snapshot(
            build=self.build,
            categorized=self.categorized,
            taken_at=mono,
            watcher_started_at=self.watcher_started_at,
            launcher=self.launcher.check(mono, wall),
            parent=self.parent.evidence(mono, wall, read_reports=not self.categorized),
            groups=tuple(groups[g] for g in self.groups),
            recorded_run_start=self.recorded_run_start,
            requested_at=self.requested_at,
            wall_at=wall,
        )

    def mark_leftovers(self, groups: Tuple[str, ...]) -> None:
        """The groups the decision found to hold only an earlier run's files (decide.this_runs_groups)."""
        self.leftovers = set(groups)

    def _reappeared(self, evidence: Dict[str, ScopeEvidence]) -> None:
        """A group that held only an earlier run's files and now changes appears in this run now: it takes
        its place after the groups seen so far, so that an earlier run's group of the same name never puts
        this run's group ahead of those that ran before it (its position counts this run's groups only)."""
        for g in [g for g in self.groups if g in self.leftovers]:
            e = evidence[g]
            if any(f is not None and f.seen_change for f in (e.log, e.status, e.exit, *e.reports)):
                self.leftovers.discard(g)
                self.groups[g] = self.groups.pop(g)

    @property
    def group_order(self) -> Tuple[str, ...]:
        return tuple(self.groups)
