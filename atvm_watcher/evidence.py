"""The adapter: the ONE module that knows where an ATVM run leaves its evidence.

Matching a real controller whose launcher writes elsewhere is a change to this file alone.
It turns files and processes into a frozen ``Snapshot`` that the pure decision code reads.
Default layout for build B (CONTRACT.md, "Where the run's evidence is"):

    $ATVM_LOG_DIR/B.log  .status  .exit  .pid       the run (or the categorized parent)
    $ATVM_REPORT_DIR/B/**.json|.xml                  its reports
    $ATVM_LOG_DIR/B/g.log  g.status  g.exit          group g of a categorized run
    $ATVM_REPORT_DIR/B/g/**                          group g's reports

It is incremental so that a poll costs the same at 1 MiB and at 1 GiB of log: logs are read
from a remembered offset, reports are re-parsed only when their size or mtime changed.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from . import procs
from .buildname import check_group_name
from .procs import Liveness
from .reports import MAX_REPORT_BYTES, ReportResult, parse_report

LOG_FIRST_READ_WINDOW = 16 * 1024 * 1024  # the banner and summary are at the end of a log
LOG_CHUNK = 1024 * 1024
MAX_LINE = 64 * 1024
BANNER = "(Run Finished)"
PASSED_RE = re.compile(r"All specs passed!")
FAILED_RE = re.compile(r"(\d+) of (\d+) failed")
STATES = ("COMPLETED", "FAILED", "CANCELLED", "TERMINATED", "HUNG", "UNKNOWN")


@dataclass(frozen=True)
class LogFacts:
    path: str
    size: int
    mtime: float
    finished_banner: bool = False
    summary: Optional[str] = None  # "passed" | "failed" once Cypress printed its closing line
    failed_specs: int = 0
    total_specs: int = 0


@dataclass(frozen=True)
class OutcomeFile:
    path: str
    mtime: float
    text: str  # first line, stripped; "" for an empty (maybe half-written) file
    problem: Optional[str] = None


@dataclass(frozen=True)
class Report:
    mtime: float
    size: int
    result: ReportResult


@dataclass(frozen=True)
class ScopeEvidence:
    """What one run, or one sub-run of a categorized run, left on disk."""

    group: Optional[str]
    log: Optional[LogFacts]
    reports: Tuple[Report, ...]
    status: Optional[OutcomeFile]
    exit: Optional[OutcomeFile]
    notes: Tuple[str, ...] = ()


@dataclass(frozen=True)
class Snapshot:
    build: str
    categorized: bool
    taken_at: float
    watcher_started_at: float
    files_existed_at_start: bool  # a log or outcome file of this build existed when the watcher started
    launcher: Liveness
    parent: ScopeEvidence
    groups: Tuple[ScopeEvidence, ...] = field(default_factory=tuple)


class LogTail:
    """Reads a log incrementally, remembering the offset; copes with truncation and rotation."""

    def __init__(self, path: Path):
        self.path = path
        self.inode: Optional[Tuple[int, int]] = None
        self.offset = 0
        self.carry = b""
        self.banner = False
        self.summary: Optional[str] = None
        self.failed_specs = self.total_specs = 0

    def _reset(self, ident: Tuple[int, int], size: int) -> None:
        self.__init__(self.path)  # type: ignore[misc]
        self.inode = ident
        self.offset = max(0, size - LOG_FIRST_READ_WINDOW)

    def facts(self) -> Optional[LogFacts]:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        ident = (st.st_dev, st.st_ino)
        if ident != self.inode or st.st_size < self.offset:
            self._reset(ident, st.st_size)
        if st.st_size > self.offset:
            self._read_new(st.st_size)
        return LogFacts(str(self.path), st.st_size, st.st_mtime, self.banner, self.summary,
                        self.failed_specs, self.total_specs)

    def _read_new(self, size: int) -> None:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                while self.offset < size:
                    chunk = fh.read(min(LOG_CHUNK, size - self.offset))
                    if not chunk:
                        break
                    self.offset += len(chunk)
                    self._scan(chunk)
        except OSError:
            return  # unreadable right now; the next poll tries again

    def _scan(self, chunk: bytes) -> None:
        data = self.carry + chunk
        cut = data.rfind(b"\n")
        lines, self.carry = (data[: cut + 1], data[cut + 1 :]) if cut >= 0 else (b"", data)
        if len(self.carry) > MAX_LINE:  # an endless line: keep its tail only
            self.carry = self.carry[-MAX_LINE:]
        if b"(Run Finished)" in lines:
            self.banner = True
            self.summary = None  # a later Cypress run in the same log: its own summary counts
        if not self.banner:
            return
        text = lines.decode("utf-8", "replace")
        if PASSED_RE.search(text):
            self.summary = "passed"
        for m in FAILED_RE.finditer(text):
            self.summary, self.failed_specs, self.total_specs = "failed", int(m.group(1)), int(m.group(2))


def read_outcome(path: Path) -> Optional[OutcomeFile]:
    try:
        st = os.stat(path)
        with open(path, "rb") as fh:
            raw = fh.read(256)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return OutcomeFile(str(path), 0.0, "", f"unreadable: {exc.strerror}")
    first = raw.decode("utf-8", "replace").strip().splitlines()
    return OutcomeFile(str(path), st.st_mtime, first[0].strip() if first else "")


class ReportScanner:
    """Finds report files under a folder; re-parses one only when its size or mtime changed."""

    def __init__(self, root: Path, skip_dirs: Tuple[str, ...] = ()):
        self.root = root
        self.skip_dirs = skip_dirs
        self.cache: Dict[str, Report] = {}

    def scan(self, exclude: Tuple[str, ...] = ()) -> Tuple[Report, ...]:
        found: Dict[str, Report] = {}
        for path, st in self._walk(self.root, top=True, exclude=exclude):
            old = self.cache.get(path)
            if old and old.size == st.st_size and old.mtime == st.st_mtime:
                found[path] = old
            else:
                found[path] = Report(st.st_mtime, st.st_size, self._parse(path, st.st_size))
        self.cache = found
        return tuple(found[p] for p in sorted(found))

    def _walk(self, folder: Path, top: bool, exclude: Tuple[str, ...]):
        try:
            entries = list(os.scandir(folder))
        except OSError:
            return
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    if not (top and entry.name in exclude):
                        yield from self._walk(Path(entry.path), False, exclude)
                elif entry.name.endswith((".json", ".xml")) and entry.is_file(follow_symlinks=False):
                    yield entry.path, entry.stat(follow_symlinks=False)
            except OSError:
                continue

    @staticmethod
    def _parse(path: str, size: int) -> ReportResult:
        if size > MAX_REPORT_BYTES:
            return ReportResult(path, "unknown", "invalid", f"{size} bytes is over the {MAX_REPORT_BYTES}-byte limit")
        try:
            with open(path, "rb") as fh:
                data = fh.read(MAX_REPORT_BYTES + 1)
        except OSError as exc:
            return ReportResult(path, "unknown", "invalid", f"unreadable: {exc.strerror}")
        return parse_report(path, data)


class Scope:
    """Readers for one run or sub-run's files."""

    def __init__(self, group: Optional[str], log: Path, reports: Path, status: Path, exit_file: Path):
        self.group = group
        self.tail = LogTail(log)
        self.scanner = ReportScanner(reports)
        self.status_path, self.exit_path = status, exit_file

    def evidence(self, read_reports: bool = True, exclude: Tuple[str, ...] = ()) -> ScopeEvidence:
        return ScopeEvidence(
            group=self.group,
            log=self.tail.facts(),
            reports=self.scanner.scan(exclude) if read_reports else (),
            status=read_outcome(self.status_path),
            exit=read_outcome(self.exit_path),
        )

    def any_file_exists(self) -> bool:
        return any(p.exists() for p in (self.tail.path, self.status_path, self.exit_path))


class EvidenceReader:
    """Stateful reader for one build; ``snapshot()`` is called once per poll."""

    def __init__(self, build: str, log_dir: Path, report_dir: Path, categorized: bool,
                 watcher_started_at: float, known_groups: Tuple[str, ...] = ()):
        self.build, self.log_dir, self.report_dir = build, log_dir, report_dir
        self.categorized = categorized
        self.watcher_started_at = watcher_started_at
        self.parent = Scope(None, log_dir / f"{build}.log", report_dir / build,
                            log_dir / f"{build}.status", log_dir / f"{build}.exit")
        self.pid_file = log_dir / f"{build}.pid"
        self.groups: Dict[str, Scope] = {}
        for g in known_groups:
            self._add_group(g)
        self.files_existed_at_start = self.parent.any_file_exists() or bool(self._group_files())
        self.launcher = procs.LauncherTracker(build, self.pid_file)

    def _add_group(self, g: str) -> None:
        self.groups[g] = Scope(g, self.log_dir / self.build / f"{g}.log", self.report_dir / self.build / g,
                               self.log_dir / self.build / f"{g}.status", self.log_dir / self.build / f"{g}.exit")

    def _group_files(self) -> List[Tuple[float, str]]:
        """(first-seen mtime, group) for every group with a file in the layout."""
        seen: Dict[str, float] = {}
        for folder, is_log_dir in ((self.log_dir / self.build, True), (self.report_dir / self.build, False)):
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue
            for e in entries:
                try:
                    if is_log_dir and e.name.endswith((".log", ".status", ".exit")) and e.is_file():
                        name = e.name.rsplit(".", 1)[0]
                    elif not is_log_dir and e.is_dir(follow_symlinks=False):
                        name = e.name
                    else:
                        continue
                    mtime = e.stat().st_mtime
                except OSError:
                    continue
                if check_group_name(name):
                    seen[name] = min(mtime, seen.get(name, mtime))
        return sorted((t, g) for g, t in seen.items())

    def snapshot(self, now: Optional[float] = None) -> Snapshot:
        now = time.time() if now is None else now
        if self.categorized:
            for _, g in self._group_files():  # groups in order of appearance
                if g not in self.groups:
                    self._add_group(g)
        return Snapshot(
            build=self.build,
            categorized=self.categorized,
            taken_at=now,
            watcher_started_at=self.watcher_started_at,
            files_existed_at_start=self.files_existed_at_start,
            launcher=self.launcher.check(now),
            parent=self.parent.evidence(read_reports=not self.categorized),
            groups=tuple(s.evidence() for s in self.groups.values()),
        )

    @property
    def group_order(self) -> Tuple[str, ...]:
        return tuple(self.groups)
