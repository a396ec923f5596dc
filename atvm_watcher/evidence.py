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

import bisect
import dataclasses
import errno
import os
import re
import stat
import time
from array import array
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple

from . import procs
from .buildname import check_group_name
from .layout import GroupFolder, RunLayout, ScopePaths
from .reports import MAX_REPORT_BYTES, parse_report
from .safefile import open_regular, read_capped, read_first_line
from .vocab import (
    NO_REPORTS,
    Liveness,
    LogFacts,
    OutcomeFile,
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
SWEEP_PER_LOOK = 16  # the most old reports one look stats for the sweep, whatever their number
RACY_SECONDS = 2.0
# A log that shows a finished run (banner and summary) last written this long before the watcher first
# read it, and that grows later, is being appended to by a new run (see Scope._appended_after_end);
# a run's own trailing lines come right after its summary.
FINISHED_QUIET_SECONDS = 5.0
THOROUGH_SECONDS = 60.0
# What `cypress run` prints, and where (tests/fixtures/cypress/README.md explains each from Cypress's own
# printing code): banners around the run, the closing line of the summary table, mocha's per-spec
# epilogue, the (Results) box of each spec, Cypress Cloud's cancellation, and the errors that end a
# run before (or instead of) its summary. Matched on bytes, line by line, after ANSI colour codes are
# removed (Cypress forces colour when CI is set: corpus case some-failed-ci-ansi).
#
# Each is matched in the form Cypress prints it, whole line and all, because test and suite titles are
# printed too and may hold the same words: mocha prints a passing test as "    ✓ <title> (Nms)", a
# pending one as "  - <title>", a failed one as "  1) <title>". A banner is alone on its line, two spaces
# in; the closing line is the summary table's last row (a mark, the phrase, then the duration and five
# count columns); a (Results) row sits between the box's borders; mocha's "N failing" follows its
# "N passing (T)" (or "N pending") line, two spaces in, as nothing else does.
ANSI_RE = re.compile(rb"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b\n]*(?:\x07|\x1b\\)?|[@-Z\\-_])")
_COUNT = rb"[ \t]+(?:\d+|-)"  # a count column of the summary table ("-" for 0)
_ROW_END = rb"[ \t]+\S+" + _COUNT * 5 + rb"[ \t]*\r?$"  # duration, tests, passing, failing, pending, skipped
_BORDER = "\u2502".encode()  # the (Results) box's vertical border
CYPRESS_RE = re.compile(
    rb"^  (?P<starting>\(Run Starting\))[ \t]*\r?$"
    rb"|^  (?P<finished>\(Run Finished\))[ \t]*\r?$"
    rb"|^[ \t]+\S+[ \t]{2,}(?P<passed>All specs passed!)" + _ROW_END +
    rb"|^[ \t]+\S+[ \t]{2,}(?P<fspecs>\d+) of (?P<tspecs>\d+) failed \(\d+%\)[ \t]+\S+" + _COUNT * 2 +
    rb"[ \t]+(?P<ftests>\d+|-)" + _COUNT * 2 + rb"[ \t]*\r?$"
    # Cypress Cloud's cancellation: the footer row, and the last line (also printed with --quiet)
    rb"|^[ \t]*(?P<canceled>-[ \t]{2,}The run was canceled" + _ROW_END +
    rb"|Exiting with non-zero exit code because the run was canceled\.[ \t]*\r?$)"
    rb"|^  (?P<failing>\d+) failing[ \t]*\r?$"  # mocha's epilogue, in --quiet output too (see EPILOGUE_RE)
    rb"|^[ \t]*" + _BORDER + rb"[ \t]+Failing:[ \t]+(?P<rfailing>\d+)[ \t]+" + _BORDER + rb"[ \t]*\r?$"
    rb"|^[ \t]*(?P<error>Can't run because no spec files were found|Your configFile is invalid"
    rb"|Cypress failed to verify that your server is running|The Test Runner unexpectedly exited)",
    re.M)
# Retries (Cypress's `retries` option): the spec reporter prints `(Attempt 1 of 3) <title>` for each
# failed attempt, then the test's own line: `✓ <title>` (mocha's `√` on Windows; with `(Nms)` when slow)
# once it passed (a flaky test), or `N) <title>` when its last attempt failed too
# (tests/fixtures/cypress/retries-flaky-pass.log and retries-then-fail.log).
ATTEMPT = b"(Attempt "
TEST_LINE_RE = re.compile(
    rb"^[ \t]*(?:\(Attempt \d+ of \d+\)(?P<attempt>)|(?:\xe2\x9c\x93|\xe2\x88\x9a)(?P<passed>)|\d+\)(?P<failed>))"
    rb" (?P<title>[^\r\n]*?)(?: \(\d+ms\))?[ \t]*\r?$", re.M)
MAX_RETRIED = 100  # titles with a failed attempt and no final line yet
MAX_FLAKY = 50  # flaky titles kept; every one is counted
MAX_TITLE_BYTES = 512  # of a title kept (a post shows less)
# The line mocha prints right before "N failing": "N passing (T)", or "N pending" when tests were pending.
EPILOGUE_RE = re.compile(rb"^  \d+ (?:passing \([^)]*\)|pending)[ \t]*\r?$")
# One literal of every alternative of CYPRESS_RE (" fail" stands for " failed", " failing", "failed to verify").
KEYWORDS = (b"Run Starting", b"Run Finished", b"specs passed!", b" fail", b"Failing:", b"canceled",
            b"Can't run because", b"configFile is invalid", b"unexpectedly exited")


class LogTail:
    """Reads a log from a remembered offset: a quiet poll costs one stat, a busy one reads only what was appended.

    The cost of a poll does not depend on the log's size. The first read covers the last
    LOG_FIRST_READ_WINDOW bytes (Cypress prints its banner and summary at the end) and, for a larger log,
    its first LOG_FIRST_READ_WINDOW bytes too (where a Cypress run that never finished printed its
    (Run Starting)); what lies between is not read, and the facts say so (``unread``). A new inode
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
        self.head_due = offset > 0  # the log's beginning is still to be read (see _read_head)
        self.unread = False  # bytes between the beginning and the window were never read
        self.skip_fragment = False  # the window starts inside a line: that piece of a line is no line
        self.carry = b""  # an incomplete last line, completed by the next read
        self.last_line = b""  # the last complete line read, for what depends on the line before it
        self.tail = b""  # the TAIL_CHECK bytes before offset, as read
        self.banner = False  # (Run Finished) of the latest Cypress run in the log
        self.unfinished = False  # (Run Starting) with no (Run Finished) after it
        self.summary: Optional[str] = None
        self.failed_specs = self.total_specs = 0
        # Failed tests are never forgotten within one log, even when a later Cypress run passes.
        self.failing = self.results_failing = self.closing_failing = 0
        self.cancelled = False
        self.error: Optional[str] = None
        self.retried: Dict[bytes, None] = {}  # ordered: the oldest is dropped first
        self.flaky: List[str] = []
        self.flaky_count = 0

    def facts(self, changes: Optional[Changes] = None, mono: float = 0.0, wall: float = 0.0) -> Optional[LogFacts]:
        try:
            st = os.stat(self.path, follow_symlinks=False)
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
                        restarted_at=self.restarted_at, flaky=tuple(self.flaky), flaky_count=self.flaky_count,
                        unread=self.unread)

    def _read_new(self, size: int) -> None:
        try:
            fd, _ = open_regular(self.path, follow_symlinks=False)
            with os.fdopen(fd, "rb") as fh:
                if self.tail and not self._same_history(fh):
                    self._start(max(0, size - LOG_FIRST_READ_WINDOW))
                if self.head_due:
                    self._read_head(fh)
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

    def _read_head(self, fh) -> None:
        """The first read of a log larger than the window: its beginning too, up to LOG_FIRST_READ_WINDOW bytes.

        A Cypress run killed after more than the window of output (DEBUG lines, say) printed its
        (Run Starting) there and nothing after it: without the beginning, the log would look like one that
        shows no Cypress run at all, and an exit code of 0 from a wrapper (tee) like a pass.
        """
        window = self.offset
        limit = min(LOG_FIRST_READ_WINDOW, window)
        fh.seek(0)
        read = 0
        while read < limit:
            chunk = fh.read(min(LOG_CHUNK, limit - read))
            if not chunk:
                break
            read += len(chunk)
            self._scan(chunk)
        self.head_due = False
        if read < window:  # a gap: the head's last line and the window's first are pieces of lines
            self.unread = True
            self.carry = self.last_line = b""
            fh.seek(window - 1)
            self.skip_fragment = fh.read(1) != b"\n"

    def _same_history(self, fh) -> bool:
        fh.seek(self.offset - len(self.tail))
        return fh.read(len(self.tail)) == self.tail

    def _scan(self, chunk: bytes) -> None:
        if self.skip_fragment:
            end = chunk.find(b"\n")
            if end < 0:
                return
            chunk, self.skip_fragment = chunk[end + 1 :], False
        data = self.carry + chunk
        cut = data.rfind(b"\n") + 1
        self.carry = data[cut:][-MAX_LINE:]  # an endless line: keep its tail only
        self._match(data[:cut], True, self.last_line)
        if cut:
            self.last_line = data[data.rfind(b"\n", 0, cut - 1) + 1 : cut][-MAX_LINE:]
        self._retries(data[:cut])
        # The incomplete last line is searched too (a summary printed without a newline still counts);
        # it is searched again once complete, which gives the same answer: counts wait for the full line.
        self._match(self.carry, False, self.last_line)

    def _match(self, data: bytes, count: bool, before: bytes = b"") -> None:
        for start, line in candidates(data):
            prev = before if start == 0 else data[data.rfind(b"\n", 0, start - 1) + 1 : start]
            self._match_line(uncolour(line), count, prev)

    def _retries(self, data: bytes) -> None:
        """Flaky tests: a failed attempt, then a pass. Only read while a retry is seen or pending."""
        if not self.retried and ATTEMPT not in data:
            return
        if b"\x1b" in data:
            data = ANSI_RE.sub(b"", data)
        for m in TEST_LINE_RE.finditer(data):
            title = m["title"][:MAX_TITLE_BYTES]
            if m["attempt"] is not None:
                self.retried.pop(title, None)
                self.retried[title] = None
                if len(self.retried) > MAX_RETRIED:
                    self.retried.pop(next(iter(self.retried)))
            elif title in self.retried:
                del self.retried[title]
                if m["passed"] is not None:
                    self.flaky_count += 1
                    if len(self.flaky) < MAX_FLAKY:
                        self.flaky.append(title.decode("utf-8", "replace"))

    def _match_line(self, line: bytes, count: bool, prev: bytes = b"") -> None:
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
                ftests = m["ftests"]
                self.closing_failing = max(self.closing_failing, int(ftests) if ftests.isdigit() else 0)
            elif kind == "canceled":
                self.cancelled = True
            elif kind == "error":
                if self.banner:  # after a finished run: a later Cypress run in the same log ended with it
                    self.banner, self.summary, self.error = False, None, None
                self.error = self.error or m["error"].decode()
            elif count and kind == "failing" and EPILOGUE_RE.match(uncolour(prev)):
                self.failing += int(m["failing"])
            elif count and kind == "rfailing":
                self.results_failing += int(m["rfailing"])


def uncolour(line: bytes) -> bytes:
    return ANSI_RE.sub(b"", line) if b"\x1b" in line else line


def candidates(data: bytes) -> List[Tuple[int, bytes]]:
    """(offset, line) for the lines of ``data`` that hold a keyword of CYPRESS_RE, in order.

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
        lines.append((start, data[start:] if end < 0 else data[start:end + 1]))
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
    # Not followed: the log folder may be world-writable (/tmp/.log), and a link planted there to a root-only
    # file would put its first line into the decision. A link reads as unreadable (mtime 0): passed over.
    try:
        word, st = read_first_line(path, 256, follow_symlinks=False)
    except FileNotFoundError:
        return None
    except OSError as exc:
        why = "a symbolic link, not followed" if exc.errno == errno.ELOOP else exc.strerror
        return OutcomeFile(str(path), 0.0, "", f"unreadable: {why}", mono, False)
    at, seen = changes.note(str(path), st, mono, wall) if changes is not None else (None, False)
    return OutcomeFile(str(path), st.st_mtime, word, None, at, seen, st.st_size)


def parse_file(path: str, size: int) -> ReportResult:
    if size > MAX_REPORT_BYTES:
        return ReportResult(path, "unknown", "invalid", f"{size} bytes is over the {MAX_REPORT_BYTES}-byte limit")
    try:
        data, _ = read_capped(path, MAX_REPORT_BYTES + 1, follow_symlinks=False)
    except OSError as exc:
        return ReportResult(path, "unknown", "invalid", f"unreadable: {exc.strerror}")
    return parse_report(path, data)


# What the scanner keeps per report file, in columns (see ReportScanner): 200,000 reports used to be
# 200,000 parsed objects and their bookkeeping, a quarter of a GiB; docs/PERFORMANCE.md has the figures.
_YOUNG, _RACY = 1, 2  # a row's own flags: modified lately (stat-ed every poll); parsed too close to its mtime
_UNPARSED = 0xFFFFFFFF  # the outcome of a row listed but not parsed yet
_YOUNG_ROWS = re.compile(b"[" + b"".join(re.escape(bytes([v])) for v in range(256) if v & _YOUNG) + b"]")
_NOT_YOUNG = bytes(v & ~_YOUNG for v in range(256))  # bytearray.translate table: every row's _YOUNG cleared
_PUBLIC = ("size", "mtime_ns", "changed", "outcome", "seen")  # what a ReportSet reads: copied before a change


def _entry(name: bytes, ino: int) -> bytes:
    """A listed file as one bytes object: its name, NUL (which no name holds, and which sorts first, so entries
    sort as their names do), its inode. One object per file while a folder is listed, not three."""
    return name + b"\0" + ino.to_bytes(8, "big")


def _mtime(ns: int) -> float:
    """st_mtime from st_mtime_ns, computed as os.stat computes it (seconds plus nanoseconds times 1e-9)."""
    sec, nsec = divmod(ns, 1_000_000_000)
    return sec + nsec * 1e-9


class _Outcomes:
    """Each distinct parse outcome (a ReportResult less its path) once, with how many rows hold it.

    Thousands of passing reports of the same spec layout share one; an outcome no row holds any more is
    forgotten (a half-written report goes through many), so the table stays as small as what is on disk.
    """

    def __init__(self) -> None:
        self.items: List[Optional[tuple]] = []
        self.ids: Dict[tuple, int] = {}
        self.refs: List[int] = []
        self.free: List[int] = []

    def add(self, result: ReportResult) -> int:
        key = (result.kind, result.status, result.detail, result.tests, result.passed, result.failed,
               result.pending, result.skipped, result.failed_titles, result.failed_errors)
        found = self.ids.get(key)
        if found is None:
            found = self.free.pop() if self.free else len(self.items)
            if found == len(self.items):
                self.items.append(key)
                self.refs.append(0)
            else:
                self.items[found] = key
            self.ids[key] = found
        self.refs[found] += 1
        return found

    def drop(self, index: int) -> None:
        if index == _UNPARSED:
            return
        self.refs[index] -= 1
        if not self.refs[index]:
            del self.ids[self.items[index]]
            self.items[index] = None
            self.free.append(index)


class _Files:
    """One folder's report files, sorted by name: the names packed in one bytes object, one array per field.

    The public columns are what a ReportSet reads; once one has been handed out (``shared``) they are
    copied before any change, so a set never changes under the decision reading it. ``ino`` and
    ``flags`` are the scanner's own. The names and their offsets are never changed: a new listing
    makes a new _Files.
    """

    __slots__ = ("folder", "bfolder", "names", "starts", "ino", "flags", "shared", "marks") + _PUBLIC

    def __init__(self, folder: str, entries: List[bytes]):
        """``entries``: sorted ``_entry()``s, one per file."""
        self.folder, self.bfolder = folder, os.fsencode(folder)
        n = len(entries)
        self.names = bytearray()  # never changed once made (a bytes copy would cost its size again)
        self.starts = array("Q", [0])
        self.ino = array("Q")
        for entry in entries:  # one at a time: a list of every name, even for a moment, is what this avoids
            self.names += entry[:-8]
            self.starts.append(len(self.names))
            self.ino.append(int.from_bytes(entry[-8:], "big"))
        zeros = bytes(8 * n)
        self.size, self.mtime_ns, self.changed = array("q", zeros), array("q", zeros), array("d", zeros)
        self.outcome = array("I", [_UNPARSED]) * n
        self.seen, self.flags = bytearray(n), bytearray(n)
        self.shared = False
        self.marks: Optional[bytearray] = None  # rows stat-ed during the current scan

    def __len__(self) -> int:
        return len(self.starts) - 1

    def name(self, i: int) -> bytes:
        return bytes(self.names[self.starts[i]:self.starts[i + 1] - 1])

    def entry(self, i: int) -> bytes:
        return _entry(self.name(i), self.ino[i])

    def own(self) -> None:
        """Make the public columns this folder's alone before changing one."""
        if self.shared:
            for column in _PUBLIC:
                setattr(self, column, getattr(self, column)[:])
            self.shared = False

    def view(self) -> Tuple:
        self.shared = True
        return (self.folder, self.names, self.starts, self.size, self.mtime_ns, self.changed, self.outcome, self.seen)

    def carry(self, i: int, old: _Files, j: int, count: int = 1) -> None:
        """Rows i.. take rows j.. of an older listing of the same folder (the same names)."""
        for column in ("ino", "flags") + _PUBLIC:
            getattr(self, column)[i:i + count] = getattr(old, column)[j:j + count]


def _same_bytes(a: bytearray, a0: int, a1: int, b: bytearray, b0: int, b1: int) -> bool:
    """a[a0:a1] == b[b0:b1], compared a MiB at a time: never a copy of a whole folder's names."""
    if a1 - a0 != b1 - b0:
        return False
    step = 1 << 20
    return all(a[a0 + k:min(a1, a0 + k + step)] == b[b0 + k:min(b1, b0 + k + step)] for k in range(0, a1 - a0, step))


def _find_name(files: _Files, name: bytes) -> Optional[int]:
    """The row of ``name`` in a folder's files (sorted by name), or None: a binary search, no list of names."""
    lo, hi = 0, len(files)
    while lo < hi:
        mid = (lo + hi) // 2
        if files.name(mid) < name:
            lo = mid + 1
        else:
            hi = mid
    return lo if lo < len(files) and files.name(lo) == name else None


def _shared_rows(old: _Files, new: _Files, most: int, at_end: bool) -> int:
    """How many rows at the start (or at the end) of two listings of a folder have the same names: found by
    comparing their packed names, in C, halving each time, rather than name by name in Python."""
    n_old, n_new = len(old), len(new)
    lo, hi = 0, most
    while lo < hi:
        k = (lo + hi + 1) // 2
        if at_end:
            same = _same_bytes(old.names, old.starts[n_old - k], old.starts[n_old],
                               new.names, new.starts[n_new - k], new.starts[n_new])
        else:
            same = _same_bytes(old.names, 0, old.starts[k], new.names, 0, new.starts[k])
        lo, hi = (k, hi) if same else (lo, k - 1)
    return lo


class _Row:
    """One report of a _Table, read as a vocab.Report: mtime, size, result, changed_at, seen_change."""

    __slots__ = ("table", "position", "mtime", "size", "changed_at", "seen_change")

    def __init__(self, table: _Table, position: int, mtime: float, size: int, changed_at: Optional[float],
                 seen_change: bool):
        self.table, self.position, self.mtime, self.size = table, position, mtime, size
        self.changed_at, self.seen_change = changed_at, seen_change

    @property
    def result(self) -> ReportResult:
        return self.table.result(self.position)

    def _key(self) -> tuple:
        return self.mtime, self.size, self.result, self.changed_at, self.seen_change

    def __eq__(self, other: object) -> bool:
        if not all(hasattr(other, a) for a in ("mtime", "size", "result", "changed_at", "seen_change")):
            return NotImplemented
        return self._key() == (other.mtime, other.size, other.result, other.changed_at, other.seen_change)

    def __hash__(self) -> int:
        return hash(self._key())  # as a Report's: equal ones hash alike

    def __repr__(self) -> str:
        return f"Report({self.mtime!r}, {self.size!r}, {self.result!r}, {self.changed_at!r}, {self.seen_change!r})"


class _Table:
    """The scanner's reports as of one scan, for a ReportSet: the folders' public columns, never changed."""

    __slots__ = ("views", "bounds", "outcomes")

    def __init__(self, folders: List[_Files], outcomes: List[Optional[tuple]]):
        self.views = [f.view() for f in folders]
        self.bounds = [0]
        for f in folders:
            self.bounds.append(self.bounds[-1] + len(f))
        self.outcomes = list(outcomes)  # ids are reused once free: keep the outcomes as they are now

    def __len__(self) -> int:
        return self.bounds[-1]

    def _locate(self, position: int) -> Tuple[Tuple, int]:
        k = bisect.bisect_right(self.bounds, position) - 1
        return self.views[k], position - self.bounds[k]

    def _row(self, view: Tuple, i: int, position: int) -> _Row:
        _, _, _, size, mtime_ns, changed, _, seen = view
        at = changed[i]
        return _Row(self, position, _mtime(mtime_ns[i]), size[i], None if at != at else at, bool(seen[i]))

    def row(self, position: int) -> _Row:
        view, i = self._locate(position)
        return self._row(view, i, position)

    def rows(self, positions: Optional[Iterable[int]] = None) -> Iterator[_Row]:
        if positions is not None:
            return (self.row(p) for p in positions)
        return (self._row(view, i, base + i) for view, base in zip(self.views, self.bounds)
                for i in range(len(view[2]) - 1))

    def result(self, position: int) -> ReportResult:
        (folder, names, starts, _, _, _, outcome, _), i = self._locate(position)
        path = os.path.join(folder, os.fsdecode(bytes(names[starts[i]:starts[i + 1] - 1])))
        return ReportResult(path, *self.outcomes[outcome[i]])


class ReportScanner:
    """The report files under a folder, kept parsed at a cost per poll that does not grow with their number.

    Stat-ing every file on every poll costs about 50 ms at 10,000 reports. Instead, on each poll:
    every known folder is stat-ed, and one whose inode or mtime changed is listed again (adding,
    removing or renaming a file changes its folder's mtime); files modified in the last YOUNG_SECONDS
    are stat-ed again (reporters write in bursts), and so are files a file event named (``touch``: a
    report rewritten in place raises one); the others are stat-ed round-robin, each once per
    SWEEP_SECONDS but never more than SWEEP_PER_LOOK on one poll, which bounds how late an old report
    rewritten in place without an event is noticed (the larger of SWEEP_SECONDS and one poll per
    SWEEP_PER_LOOK reports); and while the scope's finish evidence is new (``thorough``), every file is
    stat-ed, so a verdict never rests on a stale stat. A file is parsed again when its inode, size or
    mtime changed, or when it was parsed within RACY_SECONDS of its mtime (a same-size rewrite inside
    one timestamp tick).

    What is kept per file is small and bounded (about 40 bytes of columns and its name, see _Files),
    whatever the number of reports: no object per report is kept, only one per distinct parse outcome
    (_Outcomes). The reports come back folder by folder (folders in path order), each folder's by name.
    """

    def __init__(self, root: Path, skip_dirs: Tuple[str, ...] = ()):
        self.root = str(root)
        self.skip_dirs = tuple(os.fsencode(d) for d in skip_dirs)  # top-level folders of someone else (sub-runs)
        self.folders: Dict[str, Tuple[int, int, float]] = {}  # folder -> (inode, mtime_ns, listed at)
        self.subfolders: Dict[str, Tuple[str, ...]] = {}
        self.files: Dict[str, _Files] = {}  # folder -> its report files
        self.order: List[_Files] = []  # the folders' files in folder order: the result's order and the sweep's
        self.bounds: List[int] = [0]
        self.outcomes = _Outcomes()
        self.cursor = 0
        self.budget = 0.0
        self.last_scan: Optional[float] = None
        self.reports: ReportSet = NO_REPORTS
        self.changed = self.relisted = False
        self.gone: Dict[str, Set[int]] = {}  # folder -> rows found gone during the current scan
        self.watching = False  # the first scan is done: what is new or changed now was seen changing
        self.mono = 0.0
        self.any_young = False  # a row may carry _YOUNG (False: none does, and _due need not look for one)
        self.young_until = float("-inf")  # wall clock: past it, no row's mtime (at its last stat) is young
        self.touched: Dict[str, Set[bytes]] = {}  # folder -> names a file event named since the last scan

    def touch(self, folder: str, name: str) -> None:
        """A file event named this file: the next scan stats it (a report rewritten in place keeps its folder's
        mtime, so nothing else would tell). A name that is no report of a known folder is ignored."""
        self.touched.setdefault(folder, set()).add(os.fsencode(name))

    def scan(self, now: Optional[float] = None, thorough: bool = False, mono: Optional[float] = None) -> ReportSet:
        """``now`` is the wall clock (compared with mtimes); ``mono`` dates the changes seen (vocab.py)."""
        now = time.time() if now is None else now
        self.mono = time.monotonic() if mono is None else mono
        self.gone = {}
        for files in self.files.values():
            files.marks = None
        self._visit_folders()
        self._order()
        for files, i in self._due(now, thorough):
            if not self._was_checked(files, i):
                self._check(files, i, now)
        self.touched = {}
        self._remove_gone()
        self._order()
        if self.changed or self.relisted:
            table = _Table(self.order, self.outcomes.items) if self.bounds[-1] else None
            self.reports = ReportSet.of_table(table) if table is not None else NO_REPORTS
        self.changed = self.relisted = False
        self.last_scan = now
        self.watching = True
        return self.reports

    def _order(self) -> None:
        if self.relisted or len(self.order) != len(self.files):
            self.order = [self.files[f] for f in sorted(self.files)]
            self.bounds = [0]
            for files in self.order:
                self.bounds.append(self.bounds[-1] + len(files))

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
        subs: List[str] = []
        entries: List[bytes] = []
        try:
            with os.scandir(os.fsencode(folder)) as it:  # bytes: a name costs less kept as bytes
                for e in it:
                    try:
                        if e.is_dir(follow_symlinks=False):
                            if not (folder == self.root and e.name in self.skip_dirs):
                                subs.append(os.fsdecode(e.path))
                        elif e.name.endswith((b".json", b".xml")) and e.is_file(follow_symlinks=False):
                            entries.append(_entry(e.name, e.inode()))  # the inode from the listing: no stat
                    except OSError:
                        continue
        except OSError:
            return False
        for gone in set(self.subfolders.get(folder, ())) - set(subs):
            self._forget_folder(gone)
        self.subfolders[folder] = tuple(subs)
        entries.sort()
        files = _Files(folder, entries)
        del entries  # before the new files are parsed
        self._relisted(folder, files)
        return True

    def _relisted(self, folder: str, new: _Files) -> None:
        """Take a folder's new listing: rows of names still there keep what was known of them.

        A folder usually changes by a file or two: the rows it shares with the old listing at its start and
        at its end are taken over in bulk; only what lies between is merged name by name.
        """
        old = self.files.get(folder)
        if old is not None and old.names == new.names and old.ino == new.ino:
            return  # the same files: nothing to do
        listed = new.ino[:]  # this listing's inodes, before rows take over what was known of them
        n_new, n_old = len(new), len(old) if old is not None else 0
        head = tail = 0
        if old is not None:
            head = _shared_rows(old, new, min(n_old, n_new), at_end=False)
            tail = _shared_rows(old, new, min(n_old, n_new) - head, at_end=True)
            new.carry(0, old, 0, head)
            new.carry(n_new - tail, old, n_old - tail, tail)
        recheck = array("Q")
        j, j_end = head, n_old - tail
        for i in range(head, n_new - tail):
            name = new.name(i)
            while j < j_end and old.name(j) < name:
                self.outcomes.drop(old.outcome[j])  # gone
                j += 1
            if j < j_end and old.name(j) == name:
                new.carry(i, old, j)
                j += 1
            else:
                recheck.append(i)  # new
        for k in range(j, j_end):
            self.outcomes.drop(old.outcome[k])
        if new.ino != listed:  # a name whose inode changed: the file was replaced by a rename
            for i in range(n_new):
                if new.ino[i] != listed[i] and new.outcome[i] != _UNPARSED:
                    new.ino[i] = listed[i]
                    recheck.append(i)
        if n_new:
            self.files[folder] = new
        else:
            self.files.pop(folder, None)
        self.relisted = True
        for i in recheck:
            self._check(new, i, None)

    def _forget_folder(self, folder: str) -> None:
        for sub in self.subfolders.pop(folder, ()):
            self._forget_folder(sub)
        files = self.files.pop(folder, None)
        if files is not None:
            for k in range(len(files)):
                self.outcomes.drop(files.outcome[k])
            self.relisted = True
        self.folders.pop(folder, None)

    def _due(self, now: float, thorough: bool) -> Iterator[Tuple[_Files, int]]:
        if thorough:
            return ((files, i) for files in self.order for i in range(len(files)))
        n = self.bounds[-1]
        if self.last_scan is not None and n:
            # Each report once per SWEEP_SECONDS, but at most SWEEP_PER_LOOK a poll: after a long wait (file
            # events) a poll costs the same at 100 and at 100,000 reports, and the sweep takes more polls.
            most = min(n, SWEEP_PER_LOOK)
            self.budget = min(float(most), self.budget + n * max(0.0, now - self.last_scan) / SWEEP_SECONDS)
        take = int(self.budget)
        self.budget -= take
        due: List[Tuple[_Files, int]] = []
        if self.any_young and now >= self.young_until:
            # Every young row was last stat-ed with an mtime YOUNG_SECONDS old by now: none is young any more.
            # Cleared in C, not stat-ed one by one (after a long wait on file events, a write since raised
            # an event that names the file; polled, each was stat-ed within a poll of becoming old).
            for files in self.order:
                files.flags = files.flags.translate(_NOT_YOUNG)
            self.any_young = False
        if self.any_young:  # the young rows' flags are searched in C; skipped once none is young
            due = [(files, m.start()) for files in self.order for m in _YOUNG_ROWS.finditer(files.flags)]
            self.any_young = bool(due)
            if not due:
                self.young_until = float("-inf")
        for folder, names in self.touched.items():
            files = self.files.get(folder)
            for name in names if files is not None else ():
                i = _find_name(files, name)
                if i is not None:
                    due.append((files, i))
        if take:
            self.cursor %= n
            for position in list(range(self.cursor, min(n, self.cursor + take))) + list(
                    range(0, max(0, self.cursor + take - n))):
                k = bisect.bisect_right(self.bounds, position) - 1
                due.append((self.order[k], position - self.bounds[k]))
            self.cursor += take
        return iter(due)

    @staticmethod
    def _was_checked(files: _Files, i: int) -> bool:
        return files.marks is not None and bool(files.marks[i])

    def _check(self, files: _Files, i: int, now: Optional[float]) -> None:
        if files.marks is None:
            files.marks = bytearray(len(files))
        files.marks[i] = 1
        bpath = files.bfolder + b"/" + files.name(i)
        try:
            st = os.stat(bpath, follow_symlinks=False)
        except OSError:
            self.gone.setdefault(files.folder, set()).add(i)
            return
        known = files.outcome[i] != _UNPARSED
        same = known and (files.ino[i], files.size[i], files.mtime_ns[i]) == (st.st_ino, st.st_size, st.st_mtime_ns)
        if not same or files.flags[i] & _RACY:
            parsed_at = time.time()
            if same:  # parsed again only to be sure: not a change
                at, saw = files.changed[i], bool(files.seen[i])
            elif not known and not self.watching:
                at, saw = self.mono - max(0.0, parsed_at - st.st_mtime), False
            else:
                at, saw = self.mono, True
            outcome = self.outcomes.add(parse_file(os.fsdecode(bpath), st.st_size))
            files.flags[i] = (files.flags[i] & ~_RACY) | (_RACY if racy(parsed_at, st.st_mtime) else 0)
            if same and outcome == files.outcome[i]:  # the same as before: the same set of reports, not a new
                self.outcomes.drop(outcome)  # one (the decision derives its figures once per set, walking all)
            else:
                files.own()
                self.outcomes.drop(files.outcome[i])
                files.ino[i], files.size[i], files.mtime_ns[i] = st.st_ino, st.st_size, st.st_mtime_ns
                files.changed[i], files.seen[i], files.outcome[i] = at, saw, outcome
                self.changed = True
        now = time.time() if now is None else now
        young = now - YOUNG_SECONDS < st.st_mtime < now + RACY_SECONDS  # far in the future: a skewed clock
        files.flags[i] = (files.flags[i] & ~_YOUNG) | (_YOUNG if young else 0)
        if young:
            until = st.st_mtime + YOUNG_SECONDS
            self.young_until = until if not self.any_young else max(self.young_until, until)
            self.any_young = True

    def _remove_gone(self) -> None:
        for folder, rows in self.gone.items():
            old = self.files.get(folder)
            if old is None:
                continue
            kept = [i for i in range(len(old)) if i not in rows]
            new = _Files(folder, [old.entry(i) for i in kept])
            for k, i in enumerate(kept):
                new.carry(k, old, i)
            for i in rows:
                self.outcomes.drop(old.outcome[i])
            if kept:
                self.files[folder] = new
            else:
                self.files.pop(folder)
            self.relisted = True


def racy(seen_at: float, mtime: float) -> bool:
    """Was this seen so close to its mtime that a change within the same timestamp tick could hide?

    An mtime well in the future (a skewed clock) is not racy: any later write sets the mtime to now.
    """
    return abs(seen_at - mtime) < RACY_SECONDS


def _holds_reports(folder: Path) -> bool:
    """Does the folder itself (not a subfolder) hold a report file?"""
    try:
        with os.scandir(folder) as it:
            return any(e.name.endswith((".json", ".xml")) and e.is_file(follow_symlinks=False) for e in it)
    except OSError:
        return False


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
        self.log_seen: Optional[tuple] = None  # what the decision read in the log at the last snapshot

    def evidence(self, mono: float, wall: float, read_reports: bool = True, thorough: bool = False) -> ScopeEvidence:
        # The outcome files first: a launcher writes them after the log, so the log read next holds all
        # of it, and an exit code is never weighed against a log read before its last lines landed.
        status = read_outcome(self.status_path, self.changes, mono, wall)
        exit_ = read_outcome(self.exit_path, self.changes, mono, wall)
        log = self.tail.facts(self.changes, mono, wall)
        if log is not None and not self.changes.watching:
            if log.finished_banner and log.summary and wall - log.mtime >= FINISHED_QUIET_SECONDS:
                self.ended_log = (self.tail.inode, self.tail.offset) if self.tail.inode else None
        elif log is not None and self.ended_log is not None:
            log = self._appended_after_end(log, mono, wall)
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
        self.tail.head_due = False  # what lies before ``end`` is the earlier run's: never read into this one
        return self.tail.facts(self.changes, mono, wall) or log

    def errors(self) -> Dict[str, str]:
        """The first error line of each failed test in this scope's latest reports, by title (for the post)."""
        found: Dict[str, str] = {}
        for r in self.scanner.reports:
            for title, error in zip(r.result.failed_titles, r.result.failed_errors):
                if error:
                    found.setdefault(title, error)
        return found


def log_substance(log: Optional[LogFacts]) -> Optional[LogFacts]:
    """What a log says, less its size and when it last changed (growth alone only moves deadlines later).

    Every other field counts, so a field added to LogFacts later is news without a change here."""
    if log is None:
        return None
    return dataclasses.replace(log, size=0, mtime=0.0, changed_at=None)


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
        self.thorough_once = False  # see look_everywhere
        self.liveness: Optional[Liveness] = None  # the launcher as the last snapshot saw it, at ``looked_at``
        self.looked_at: Optional[float] = None
        self.confirmed_ends: Set[Optional[str]] = set()  # scopes ended on the launcher's absence, once rescanned
        self.group_folders = tuple(str(f.path) for f in layout.group_folders()) if categorized else ()

    def _add_group(self, g: str) -> None:
        self.groups[g] = Scope(g, self.layout.group(g))

    def _group_files(self, folders: Optional[Sequence[GroupFolder]] = None) -> List[Tuple[float, str]]:
        """(last mtime, group) for every group with a file in the layout (in ``folders`` when given).

        Sub-runs run one after another, so the last change orders them as the first does; and it is not
        pulled back by files an earlier run left in a group of the same name."""
        seen: Dict[str, float] = {}
        for folder in self.layout.group_folders() if folders is None else folders:
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
                    seen[name] = max(mtime, seen.get(name, mtime))
        return sorted((t, g) for g, t in seen.items())

    def snapshot(self) -> Snapshot:
        mono, wall = self.clock.mono(), self.clock.wall()
        thorough, self.thorough_once = self.thorough_once, False
        if self.categorized:
            for _, g in self._group_files():  # groups in order of appearance
                if g not in self.groups:
                    self._add_group(g)
        groups = {g: s.evidence(mono, wall, thorough=thorough) for g, s in self.groups.items()}
        self._reappeared(groups)
        return Snapshot(
            build=self.build,
            categorized=self.categorized,
            taken_at=mono,
            watcher_started_at=self.watcher_started_at,
            launcher=self._check_launcher(mono, wall),
            parent=self.parent.evidence(mono, wall, read_reports=not self.categorized, thorough=thorough),
            groups=tuple(groups[g] for g in self.groups),
            recorded_run_start=self.recorded_run_start,
            requested_at=self.requested_at,
            wall_at=wall,
        )

    def _check_launcher(self, mono: float, wall: float) -> Liveness:
        self.liveness, self.looked_at = self.launcher.check(mono, wall), mono
        return self.liveness

    def launcher_rescanned(self, ending: Iterable[Optional[str]]) -> bool:
        """The decision on the last snapshot ends these scopes (None: the run): if no launcher was alive then,
        read every process's argv again, once per scope, before that stands (procs.ArgvScanner reads an argv
        once, and a launcher may have exec'd or rewritten its argv since). True when that found a launcher:
        the caller takes a new snapshot and decides again."""
        new = set(ending) - self.confirmed_ends
        live = self.liveness
        if not new or live is None or live.alive:
            return False
        if self.launcher.scanner.full_at != self.looked_at:  # else the snapshot's own scan read every argv
            if self.launcher.check(self.clock.mono(), self.clock.wall(), full=True).alive:
                return True
        self.confirmed_ends |= new
        return False

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

    def scope(self, group: Optional[str]) -> Optional[Scope]:
        """The reader of the plain run or categorized parent (None), or of one sub-run."""
        return self.parent if group is None else self.groups.get(group)

    def categorize_mismatch(self, finished: bool) -> Optional[str]:
        """Why the run does not look the way --categorize (given or not) says, or None.

        A plain watcher sees a categorized run's sub-runs: group files (logs, outcome files) where the
        layout puts them, or group report folders while the run's own report folder holds no report of
        its own (a plain run's reporter may well write into subfolders). A categorized watcher whose run
        finished without any sub-run posts the run's own result, once, as a plain watcher would.
        """
        folders = self.layout.group_folders()
        where = ", ".join(sorted({str(f.path) for f in folders}))
        if self.categorized:
            if not finished or self.groups:
                return None
            return (f"the run finished and no sub-run appeared (none under {where}): its own result is its one "
                    "post; if the run was not categorized, watch it without --categorize next time")
        scanner = self.parent.scanner  # it lists the run's report folder on every snapshot: no scandir of its own
        holds = bool(scanner.files.get(scanner.root)) if scanner.last_scan is not None else \
            _holds_reports(self.layout.run().reports)
        if not holds:
            found = self._group_files(folders)
        else:
            found = self._group_files([f for f in folders if f.holds_files])
        if not found:
            return None
        names = ", ".join(g for _, g in found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
        return (f"this looks like a categorized run: sub-runs {names} under {where}; without --categorize they "
                "get one post for the whole run instead of one each (to post per sub-run: cancel this watcher "
                "with cancel-atvm-run-watcher.sh, then start it again with --categorize --rerun)")

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
            if scope.ended_log is not None:  # a finished log that grows: a new run appends (evidence() reads it)
                return True
            news = log_substance(scope.tail.facts(scope.changes, mono, wall)) != scope.log_seen or news
        return news

    def launcher_alive_until(self, pid: int, mono: float) -> None:
        """The waiter followed the launcher (a pidfd, or its /proc entry) and saw it alive until ``mono``.

        Between two looks the tracker cannot know this; without it, a launcher that ends after a long quiet
        wait would look gone since the look before, and the gone grace would be cut short."""
        tracker = self.launcher
        if tracker.pid == pid and (tracker.last_seen is None or tracker.last_seen < mono):
            tracker.last_seen = mono

    def reports_touched(self, paths: Iterable[str]) -> None:
        """File events named these files in report folders since the last look: the next snapshot stats them,
        whether or not the sweep is due to reach them (an old report rewritten in place changes no folder)."""
        scanners = {}
        for scope in (self.parent, *self.groups.values()):
            if scope is self.parent and self.categorized:
                continue  # a categorized parent's reports are not read: nothing would take what it is handed
            for folder in (scope.scanner.root, *scope.scanner.folders):
                scanners[folder] = scope.scanner
        for path in paths:
            folder, name = os.path.split(path)
            scanner = scanners.get(folder)
            if scanner is not None and name:
                scanner.touch(folder, name)

    def look_everywhere(self) -> None:
        """The next snapshot stats every report (events were lost: no change may be assumed absent)."""
        self.thorough_once = True
