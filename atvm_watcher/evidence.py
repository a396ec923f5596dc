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
THOROUGH_SECONDS = 60.0
# What `cypress run` prints, and where (tests/fixtures/cypress/README.md explains each from Cypress's own
# printing code): banners around the run, the closing line of the summary table, mocha's per-spec
# epilogue, the (Results) box of each spec, Cypress Cloud's cancellation, and the errors that end a
# run before (or instead of) its summary. Matched on bytes, line by line, after ANSI colour codes are
# removed (Cypress forces colour when CI is set: corpus case some-failed-ci-ansi).
ANSI_RE = re.compile(rb"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b\n]*(?:\x07|\x1b\\)?|[@-Z\\-_])")
CYPRESS_RE = re.compile(
    rb"(?P<starting>\(Run Starting\))"
    rb"|(?P<finished>\(Run Finished\))"
    rb"|(?P<passed>All specs passed!)"
    # the closing row: "N of M failed (P%)", then duration, tests, passing and failing columns ("-" for 0)
    rb"|(?P<fspecs>\d+) of (?P<tspecs>\d+) failed(?: \(\d+%\)[ \t]+\S+[ \t]+\S+[ \t]+\S+[ \t]+(?P<ftests>\d+))?"
    # Cypress Cloud's cancellation: the footer row, and the last line (also printed with --quiet)
    rb"|^[ \t]*(?:-[ \t]+|Exiting with non-zero exit code because )(?P<canceled>[Tt]he run was canceled)"
    rb"|^[ \t]*(?P<failing>\d+) failing[ \t]*\r?$"  # mocha's epilogue, in --quiet output too
    rb"|^[ \t]*(?:\S+[ \t]+)?Failing:[ \t]+(?P<rfailing>\d+)"  # the (Results) box of a spec
    rb"|^[ \t]*(?P<error>Can't run because no spec files were found|Your configFile is invalid"
    rb"|Cypress failed to verify that your server is running|The Test Runner unexpectedly exited)",
    re.M)
# One literal of every alternative of CYPRESS_RE (" fail" stands for " failed", " failing", "failed to verify").
KEYWORDS = (b"Run Starting", b"Run Finished", b"specs passed!", b" fail", b"Failing:", b"canceled",
            b"Can't run because", b"configFile is invalid", b"unexpectedly exited")


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
        self.banner = False  # (Run Finished) of the latest Cypress run in the log
        self.unfinished = False  # (Run Starting) with no (Run Finished) after it
        self.summary: Optional[str] = None
        self.failed_specs = self.total_specs = 0
        # Failed tests are never forgotten within one log, even when a later Cypress run passes.
        self.failing = self.results_failing = self.closing_failing = 0
        self.cancelled = False
        self.error: Optional[str] = None

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
                        self.failed_specs, self.total_specs, unfinished=self.unfinished,
                        failed_tests=max(self.failing, self.results_failing, self.closing_failing),
                        cancelled=self.cancelled, error=self.error, changed_at=at, seen_change=seen,
                        restarted_at=self.restarted_at)

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
        self._match(data[:cut], count=True)
        # The incomplete last line is searched too (a summary printed without a newline still counts);
        # it is searched again once complete, which gives the same answer: counts wait for the full line.
        self._match(self.carry, count=False)

    def _match(self, data: bytes, count: bool) -> None:
        for line in candidate_lines(data):
            self._match_line(ANSI_RE.sub(b"", line) if b"\x1b" in line else line, count)

    def _match_line(self, line: bytes, count: bool) -> None:
        for m in CYPRESS_RE.finditer(line):
            kind = m.lastgroup
            if kind == "starting":  # a new Cypress run: what ends a run is its own
                self.banner, self.unfinished, self.summary, self.cancelled, self.error = False, True, None, False, None
            elif kind == "finished":
                self.banner, self.unfinished, self.summary = True, False, None
            elif kind == "passed" and self.banner:
                self.summary = "passed"
            elif kind in ("fspecs", "tspecs", "ftests") and self.banner:
                self.summary, self.failed_specs, self.total_specs = "failed", int(m["fspecs"]), int(m["tspecs"])
                self.closing_failing = max(self.closing_failing, int(m["ftests"] or 0))
            elif kind == "canceled":
                self.cancelled = True
            elif kind == "error":
                self.error = self.error or m["error"].decode()
            elif count and kind == "failing":
                self.failing += int(m["failing"])
            elif count and kind == "rfailing":
                self.results_failing += int(m["rfailing"])


def candidate_lines(data: bytes) -> List[bytes]:
    """The lines of ``data`` that hold a keyword of CYPRESS_RE, in order.

    Searching for a few literals is C-speed; running the whole pattern over every byte is not (2 s
    for the first 16 MiB read). Each keyword survives colouring: ANSI codes surround it, never split it.
    """
    starts: Set[int] = set()
    for keyword in KEYWORDS:
        at = data.find(keyword)
        while at >= 0:
            start = data.rfind(b"\n", 0, at) + 1
            starts.add(start)
            end = data.find(b"\n", at)
            if end < 0:
                break
            at = data.find(keyword, end)
    lines = []
    for start in sorted(starts):
        end = data.find(b"\n", start)
        lines.append(data[start:] if end < 0 else data[start:end + 1])
    return lines


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
        self.log_seen: Optional[tuple] = None  # what the decision read in the log at the last snapshot

    def evidence(self, mono: float, wall: float, read_reports: bool = True, thorough: bool = False) -> ScopeEvidence:
        # The outcome files first: a launcher writes them after the log, so the log read next holds all
        # of it, and an exit code is never weighed against a log read before its last lines landed.
        status = read_outcome(self.status_path, self.changes, mono, wall)
        exit_ = read_outcome(self.exit_path, self.changes, mono, wall)
        log = self.tail.facts(self.changes, mono, wall)
        reports = NO_REPORTS
        if read_reports:
            finished = [changed_at(f) for f in (status, exit_) if f is not None]
            if log is not None and log.finished_banner:
                finished.append(changed_at(log))
            thorough = thorough or bool(finished) and mono - max(finished) < THOROUGH_SECONDS
            reports = self.scanner.scan(wall, thorough=thorough, mono=mono)
        self.changes.watching = True
        self.log_seen = log_substance(log)
        return ScopeEvidence(group=self.group, log=log, reports=reports, status=status, exit=exit_)


def log_substance(log: Optional[LogFacts]) -> Optional[tuple]:
    """What of a log the decision reads, less when it last changed (that only moves deadlines later)."""
    if log is None:
        return None
    return (log.finished_banner, log.summary, log.failed_specs, log.total_specs, log.unfinished, log.failed_tests,
            log.cancelled, log.error, log.seen_change, log.restarted_at)


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
        self.launcher = procs.LauncherTracker(build, self.layout.pid_file())
        self.thorough_once = False  # see look_everywhere
        self.group_folders = tuple(str(f.path) for f in layout.group_folders()) if categorized else ()

    def _add_group(self, g: str) -> None:
        self.groups[g] = Scope(g, self.layout.group(g))

    def _group_files(self) -> List[Tuple[float, str]]:
        """(first-seen mtime, group) for every group with a file in the layout."""
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
                    mtime = (os.stat(os.path.join(e.path, *folder.rest)) if folder.rest else e.stat()).st_mtime
                except OSError:
                    continue
                if check_group_name(name):
                    seen[name] = min(mtime, seen.get(name, mtime))
        return sorted((t, g) for g, t in seen.items())

    def snapshot(self) -> Snapshot:
        mono, wall = self.clock.mono(), self.clock.wall()
        thorough, self.thorough_once = self.thorough_once, False
        if self.categorized:
            for _, g in self._group_files():  # groups in order of appearance
                if g not in self.groups:
                    self._add_group(g)
        return Snapshot(
            build=self.build,
            categorized=self.categorized,
            taken_at=mono,
            watcher_started_at=self.watcher_started_at,
            launcher=self.launcher.check(mono, wall),
            parent=self.parent.evidence(mono, wall, read_reports=not self.categorized, thorough=thorough),
            groups=tuple(s.evidence(mono, wall, thorough=thorough) for s in self.groups.values()),
            recorded_run_start=self.recorded_run_start,
            requested_at=self.requested_at,
            wall_at=wall,
        )

    @property
    def group_order(self) -> Tuple[str, ...]:
        return tuple(self.groups)

    # --- hooks for the waiter (wake.py), which sleeps until something here may have changed ------------

    def watch_targets(self) -> Tuple[Tuple[str, ...], Tuple[str, ...], Tuple[str, ...], Tuple[str, ...]]:
        """(files, trees, folders, logs) to watch for a change of this run's evidence, as wake.Targets reads them.

        Files: every scope's log and outcome files, and the pid file. Trees: every scope's report folder and
        each subfolder its scanner listed (a folder found later is added after the look that found it).
        Folders: where a categorized run's groups appear. Logs: the files among ``files`` whose growth
        ``log_news`` can judge."""
        files = [str(self.layout.pid_file())]
        trees: List[str] = []
        logs = []
        for scope in (self.parent, *self.groups.values()):
            logs.append(str(scope.tail.path))
            files += [logs[-1], str(scope.status_path), str(scope.exit_path)]
            if scope is not self.parent or not self.categorized:  # a categorized parent's reports are not read
                trees.append(scope.scanner.root)
                trees += scope.scanner.folders
        return tuple(files), tuple(trees), self.group_folders, tuple(logs)

    def log_news(self) -> bool:
        """Read what the logs gained since the last snapshot: may it change the decision?

        A chatty log wakes the watcher often; most lines change nothing the decision reads (see
        ``log_substance``), and for those this read is the whole look. The change is dated now all the
        same (it is progress: deadlines only move later), and the next snapshot finds the log as this left it."""
        mono, wall = self.clock.mono(), self.clock.wall()
        news = False
        for scope in (self.parent, *self.groups.values()):
            news = log_substance(scope.tail.facts(scope.changes, mono, wall)) != scope.log_seen or news
        return news

    def launcher_alive_until(self, pid: int, mono: float) -> None:
        """The waiter followed the launcher (a pidfd, or its /proc entry) and saw it alive until ``mono``.

        Between two looks the tracker cannot know this; without it, a launcher that ends after a long quiet
        wait would look gone since the look before, and the gone grace would be cut short."""
        tracker = self.launcher
        if tracker.pid == pid and (tracker.last_seen is None or tracker.last_seen < mono):
            tracker.last_seen = mono

    def look_everywhere(self) -> None:
        """The next snapshot stats every report (events were lost: no change may be assumed absent)."""
        self.thorough_once = True
