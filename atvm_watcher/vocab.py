"""The words every module shares: run states, delivery outcomes, exit codes, and the evidence types.

Pure data: no I/O and no imports from this package, so the decision core (``decide.py``) can
depend on this module alone, and the evidence adapter, the ledger, the commands and the tests
all speak the same vocabulary.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Any, Callable, Dict, FrozenSet, Iterable, Iterator, List, Optional, Tuple


class Word(str, Enum):
    """A str enum whose str() and format() are its value on every Python version (3.9-3.13)."""

    def __str__(self) -> str:
        return str(self.value)

    __format__ = str.__format__


class State(Word):
    WAITING = "WAITING"  # no evidence of the run yet
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TERMINATED = "TERMINATED"
    HUNG = "HUNG"
    UNKNOWN = "UNKNOWN"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL

    @property
    def posted(self) -> bool:
        return self in POSTED

    @classmethod
    def of(cls, value: Any) -> Optional[State]:
        """The state a (possibly damaged) state.json field names, or None."""
        try:
            return cls(value) if isinstance(value, str) else None
        except ValueError:
            return None


TERMINAL: FrozenSet[State] = frozenset({State.COMPLETED, State.FAILED, State.CANCELLED, State.TERMINATED,
                                        State.HUNG, State.UNKNOWN})
POSTED: FrozenSet[State] = frozenset({State.COMPLETED, State.FAILED})  # the only states ever posted
TERMINAL_WORDS: Tuple[str, ...] = ("COMPLETED", "FAILED", "CANCELLED", "TERMINATED", "HUNG", "UNKNOWN")


class Delivery(Word):
    """Where a scope's post stands. ``posted.marker`` is the only proof of POSTED."""

    NOT_REQUIRED = "not-required"  # not a posted state (or nothing decided yet)
    PENDING = "pending"  # decided COMPLETED/FAILED; the post is owed and no attempt has settled
    SENDING = "sending"  # intent recorded: the request may be on the wire (a crash here is UNCERTAIN)
    POSTED = "posted"  # HTTP 200 with body exactly "ok"
    NOT_SENT = "not-sent"  # certainly no post: safe to send again
    UNCERTAIN = "uncertain"  # the server may have acted: never resent automatically
    REJECTED = "rejected"  # a permanent answer: resending would be refused the same way
    CANCELLED = "cancelled"  # cancelled.marker found before the post

    @classmethod
    def of(cls, value: Any) -> Optional[Delivery]:
        try:
            return cls(value) if isinstance(value, str) else None
        except ValueError:
            return None


class ExitCode(IntEnum):
    """Exit codes of the CLI; the unit's restart policy is checked against RESTART_PREVENTED."""

    OK = 0
    INTERNAL = 1
    USAGE = 2
    CONFIG = 3
    REJECTED = 4
    UNCERTAIN = 5
    LOCKED = 6
    FINISHED = 7
    RETRY = 75


EXIT_MEANING: Dict[ExitCode, str] = {
    ExitCode.OK: "reached and handled a terminal state (COMPLETED/FAILED posted, or CANCELLED, TERMINATED,\n"
                 "      HUNG, UNKNOWN: never posted), or the build had already finished; never restarted",
    ExitCode.INTERNAL: "unexpected internal error (systemd restarts the watcher; state on disk stays consistent)",
    ExitCode.USAGE: "refused input (bad build name, bad arguments); nothing written",
    ExitCode.CONFIG: "configuration error (a setting, or an env file readable by group/others)",
    ExitCode.REJECTED: "the server rejected the post permanently (400/403/404/413/501): recorded with its error id",
    ExitCode.UNCERTAIN: "delivery uncertain: the post may exist; never resent automatically (see --at-least-once)",
    ExitCode.LOCKED: "another watcher already holds this build's lock",
    ExitCode.RETRY: "the post was certainly not made after bounded retries: a restart retries safely",
}
# systemd's Restart=on-failure restarts on any non-zero code; these must be listed in the unit's
# RestartPreventExitStatus= because a restart cannot help (or could post twice).
RESTART_PREVENTED: FrozenSet[ExitCode] = frozenset({ExitCode.USAGE, ExitCode.CONFIG, ExitCode.REJECTED,
                                                    ExitCode.UNCERTAIN, ExitCode.LOCKED})
RESTARTED: FrozenSet[ExitCode] = frozenset({ExitCode.INTERNAL, ExitCode.RETRY})
# A watch that ends with several delivery outcomes exits with the first of these that occurred:
# restartable first, so a restart resends what is safe to resend.
EXIT_FOR_DELIVERY: Dict[Delivery, ExitCode] = {Delivery.NOT_SENT: ExitCode.RETRY,
                                               Delivery.UNCERTAIN: ExitCode.UNCERTAIN,
                                               Delivery.REJECTED: ExitCode.REJECTED}
EXIT_RANK: Tuple[ExitCode, ...] = (ExitCode.RETRY, ExitCode.UNCERTAIN, ExitCode.REJECTED)


def exit_codes_help() -> str:
    lines = ["exit codes of watch:"]
    for code in ExitCode:
        if code in EXIT_MEANING:
            lines.append(f"  {int(code):<3} {EXIT_MEANING[code]}")
    lines.append(f"record-request also exits {int(ExitCode.LOCKED)} (already watched) and {int(ExitCode.FINISHED)} "
                 "(build already finished; --rerun to start over).")
    return "\n".join(lines)


# --- evidence: what the adapter (evidence.py) reads and the decision core (decide.py) decides on ---
#
# Two clocks, never mixed: an ``mtime`` (and a process start time) is the wall clock's, which steps
# both ways and may be in the future; it serves only to tell an earlier run's leftovers from this
# run's files. Every elapsed duration (settle, no progress, gone grace, start timeout, the run's
# length) is measured on the monotonic clock, from ``changed_at``: when the watcher saw the file
# change, or, for a file it found already there, the file's age at first sight (never negative)
# taken back from the moment it first saw it. ``seen_change`` says the watcher itself saw the file
# appear or change: such a file belongs to this run whatever its mtime says.


@dataclass(frozen=True)
class LogFacts:
    """What the Cypress console log says (evidence.LogTail reads it; ANSI colour codes removed)."""

    path: str
    size: int
    mtime: float
    finished_banner: bool = False  # the latest Cypress run in the log printed (Run Finished)
    summary: Optional[str] = None  # "passed" | "failed" once Cypress printed its closing line
    failed_specs: int = 0
    total_specs: int = 0
    unfinished: bool = False  # (Run Starting) with no (Run Finished) after it
    failed_tests: int = 0  # failed tests the log shows anywhere (closing row, (Results) boxes, mocha's "N failing")
    cancelled: bool = False  # Cypress Cloud cancelled the run ("The run was canceled")
    error: Optional[str] = None  # a Cypress error that ends a run, as printed (e.g. no spec files found)
    changed_at: Optional[float] = None  # monotonic; None: hand-made evidence whose clock is the mtime's
    seen_change: bool = False
    restarted_at: Optional[float] = None  # monotonic: when the watcher saw the log rewritten from scratch
    flaky: Tuple[str, ...] = ()  # tests that failed an attempt, then passed on a retry (the first ones)
    flaky_count: int = 0  # every such test
    unread: bool = False  # a part of the log was never read (see evidence.LogTail): what ran there is unknown


@dataclass(frozen=True)
class OutcomeFile:
    path: str
    mtime: float
    text: str  # first line, stripped; "" for an empty (maybe half-written) file. Never shown unless it parses
    problem: Optional[str] = None
    changed_at: Optional[float] = None
    seen_change: bool = False
    size: int = 0  # bytes: what is shown of a file whose first line does not parse (never its content)


@dataclass(frozen=True)
class ReportResult:
    path: str
    kind: str  # "mochawesome" | "junit" | "unknown"
    status: str  # "ok" | "incomplete" | "invalid" | "not-a-report"
    detail: str  # one line for an operator when status is not "ok"
    tests: int = 0
    passed: int = 0
    failed: int = 0  # failed tests + failed hooks + junit failure/error cases
    pending: int = 0
    skipped: int = 0
    failed_titles: Tuple[str, ...] = ()
    failed_errors: Tuple[str, ...] = ()  # the first line of each failed test's error ("" when none), as the titles


@dataclass(frozen=True)
class Report:
    mtime: float
    size: int
    result: ReportResult
    changed_at: Optional[float] = None
    seen_change: bool = False


def changed_at(f: Any) -> float:
    """When a file last changed on the monotonic clock (see above); hand-made evidence uses its mtime."""
    return f.changed_at if f.changed_at is not None else f.mtime


class ReportSet(Sequence):
    """The reports of one scope, in the adapter's order: folder by folder, each folder's files by name.

    A read-only sequence of reports. The adapter hands back the very same object while no report changed,
    so what the decision derives from thousands of reports (totals, the newest mtime, ...) is computed once
    per set (``derive``) instead of on every poll.

    It holds reports (``ReportSet(reports)``), or the rows of a table the adapter keeps in compact columns
    (``ReportSet.of_table``): each report is then made as it is read, and a set made of rows of one table
    (the decision's "this run's reports") keeps only their positions. So a run's 200,000 reports are never
    200,000 objects kept at once (docs/PERFORMANCE.md). A table has ``len()``, ``row(position)`` and
    ``rows(positions)`` (positions None: all); each row it makes has ``table`` and ``position``.
    """

    __slots__ = ("_items", "_table", "_positions", "_cache")

    def __init__(self, reports: Iterable[Any] = ()):
        # Rows of one table are kept as positions, read as they come: the decision's subsets of a big set
        # are made from a generator, which must never be turned into a tuple of every row.
        table: Any = None
        positions = array("q")
        items: Optional[List[Any]] = None
        for r in reports:
            t = getattr(r, "table", None)
            if items is None and t is not None and (table is None or t is table):
                table = t
                positions.append(r.position)
                continue
            if items is None:
                items = list(table.rows(positions)) if table is not None else []
            items.append(r)
        self._cache: Optional[Dict[Any, Any]] = None
        if items is None and table is not None:
            self._items, self._table, self._positions = None, table, positions
        else:
            self._items, self._table, self._positions = tuple(items or ()), None, None

    @classmethod
    def of_table(cls, table: Any) -> ReportSet:
        """Every row of an adapter's table, in its order."""
        made = cls()
        made._items, made._table = None, table
        return made

    def __len__(self) -> int:
        if self._items is not None:
            return len(self._items)
        return len(self._positions) if self._positions is not None else len(self._table)

    def __bool__(self) -> bool:
        return len(self) > 0

    def __iter__(self) -> Iterator[Any]:
        if self._items is not None:
            return iter(self._items)
        return self._table.rows(self._positions)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return ReportSet(self[i] for i in range(*index.indices(len(self))))
        if self._items is not None:
            return self._items[index]
        n = len(self)
        if not -n <= index < n:
            raise IndexError("report index out of range")
        index %= n
        return self._table.row(self._positions[index] if self._positions is not None else index)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, (ReportSet, tuple, list)):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other))

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"ReportSet(<{len(self)} reports>)"

    def derive(self, key: Any, compute: Callable[[], Any]) -> Any:
        if self._cache is None:
            self._cache = {}
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]


NO_REPORTS = ReportSet()


@dataclass(frozen=True)
class Liveness:
    alive: bool
    pid: Optional[int]
    started_at: Optional[float]  # launcher start (wall clock, epoch seconds), remembered after it is gone
    last_seen_alive: Optional[float]  # monotonic
    source: str  # "pid file", "process scan", "none"
    note: str = ""
    started_mono: Optional[float] = None  # the launcher's start on the monotonic clock
    # wall: the mtime of a pid file that names no live launcher (gone, or its pid reused): it was written
    # when the latest run that wrote one was launched, so what is older belongs to an earlier run
    launched_at: Optional[float] = None


@dataclass(frozen=True)
class ScopeEvidence:
    """What one run, or one sub-run of a categorized run, left on disk."""

    group: Optional[str]
    log: Optional[LogFacts]
    reports: Tuple[Report, ...]
    status: Optional[OutcomeFile]
    exit: Optional[OutcomeFile]


@dataclass(frozen=True)
class Snapshot:
    build: str
    categorized: bool
    taken_at: float  # monotonic: "now" for every elapsed duration
    watcher_started_at: float  # monotonic
    launcher: Liveness
    parent: ScopeEvidence
    groups: Tuple[ScopeEvidence, ...] = field(default_factory=tuple)
    recorded_run_start: Optional[float] = None  # wall: what an earlier watcher of this run decided (state.json)
    # wall: the run was asked for then (request.json), so its evidence is not much older (see decide.py)
    requested_at: Optional[float] = None
    wall_at: Optional[float] = None  # the wall clock when taken; None: hand-made, the same as taken_at
