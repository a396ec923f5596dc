"""The pure core: which state is this run in, and which rule says so.

A function of an evidence ``Snapshot`` (with its ``taken_at`` as "now") and the ``Limits``;
no clock, no I/O. Every rule has a short id (shown by ``inspect`` and stored in state.json)
and a sentence an operator can follow.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Iterable, List, Optional, Tuple

from .vocab import (
    POSTED,
    TERMINAL,
    TERMINAL_WORDS,
    Liveness,
    LogFacts,
    OutcomeFile,
    Report,
    ReportSet,
    ScopeEvidence,
    Snapshot,
    State,
    changed_at,
)

STALE_TOLERANCE = 1.0  # seconds: mtimes and process start times are not perfectly comparable
EXIT_RE = re.compile(r"[+-]?\d{1,6}")


@dataclass(frozen=True)
class Limits:
    hung_after: float = 3600.0
    start_timeout: float = 1800.0
    gone_grace: float = 60.0
    settle: float = 2.0
    launch_allowance: float = 300.0  # how long before its request (or watcher) a run may have been launched


@dataclass(frozen=True)
class Counts:
    tests: int = 0
    passed: int = 0
    failed: int = 0
    pending: int = 0
    skipped: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(*(a + b for a, b in zip(self.as_tuple(), other.as_tuple())))

    def as_tuple(self) -> Tuple[int, int, int, int, int]:
        return (self.tests, self.passed, self.failed, self.pending, self.skipped)


@dataclass(frozen=True)
class Verdict:
    state: State
    rule: str
    reason: str
    group: Optional[str] = None
    counts: Counts = Counts()
    failed_titles: Tuple[str, ...] = ()
    run_start: Optional[float] = None  # wall: this run's start as far as it is known (recorded in state.json)
    finished_at: Optional[float] = None  # wall: the mtime of the finish evidence
    ignored: Tuple[str, ...] = ()  # evidence passed over, and why
    elapsed: Optional[float] = None  # seconds from the run's (or sub-run's) start to its finish, monotonic
    position: Optional[int] = None  # 1-based, among this run's sub-runs

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL


@dataclass(frozen=True)
class Decision:
    run: Verdict  # the plain run, or the categorized parent
    groups: Tuple[Verdict, ...] = ()
    run_start_rule: str = ""
    # wall: a start that stays true when the files it was read from are overwritten (the launcher's start,
    # an earlier run's end, a pid file): the watcher keeps it for its next polls (watch.py)
    run_start_kept: Optional[float] = None
    leftover_groups: Tuple[str, ...] = ()  # groups on disk holding only an earlier run's files: no sub-runs


def decide(snap: Snapshot, limits: Limits, cancelled: bool = False) -> Decision:
    start = run_start(snap, limits)
    parent, ignored = fresh(snap.parent, start.era(snap.parent, snap))
    groups = [fresh(g, start.era(g, snap)) for g in snap.groups]
    if not snap.categorized:
        run = replace(decide_scope(snap, parent, limits, start, cancelled), ignored=ignored)
        return Decision(_why_waiting(run, start), (), start.how, start.kept)
    d = decide_categorized(snap, parent, ignored, groups, limits, start, cancelled)
    return replace(d, run=_why_waiting(d.run, start), run_start_kept=start.kept)


def _why_waiting(v: Verdict, start: RunStart) -> Verdict:
    """A watcher that waits while files of the build are on disk says why they are not this run's."""
    if v.state != State.WAITING or not v.ignored:
        return v
    return replace(v, reason=f"{v.reason}: the {len(v.ignored)} file(s) of the build on disk are an earlier "
                   f"run's (this run's start from {start.how})")


# --- which files are this run's, and which an earlier run of the same build left behind ---------
#
# Build names are reused, so yesterday's log, outcome files, reports and group folders may still be
# on disk. A file is this run's when the watcher saw it appear or change; otherwise its mtime must
# not be older than the run's start (the "floor"), and it must not predate a rewrite of its scope's
# log that the watcher saw (the "cut": a new run rewrote the log, so what did not change since is
# older). The floor, strongest evidence first:
#   1. the launcher's start time, when the launcher was seen (a wrapper's pid file, or its argv);
#   2. the run start recorded earlier for this run: by an earlier watcher (state.json), or by this one
#      from rules 1, 3 or 5, whose evidence stays true when this run overwrites the files it came from
#      (its own .exit replaces the earlier run's);
#   3. an earlier run's end: the run's own outcome file (.status/.exit) older than other files of the
#      build. A run writes its outcome last, so an older one can only be an earlier run's;
#   4. while nothing has changed since the watcher started (the run may not have started yet, or
#      may have finished before the watcher): the request's time less the launch allowance, when
#      every file (a pid file too) is older than it. Checked before rule 3: a run that ended longer
#      than the allowance before its request is not this run, however much newer than an earlier
#      run's end it is;
#   5. the latest launch: the pid file of a launcher that is no longer running (or whose pid was
#      reused) was written when the run that wrote it was launched. Taken with rule 3 (the later of
#      the two wins), after rule 4: a watcher started after its run ended finds that run's pid file,
#      while a pid file as old as everything else on disk may be an earlier run's.
# Once the run is seen changing with none of these, every file on disk is taken as this run's:
# a watcher started late, while its run goes on, counts the run's early reports too. A log found
# holding a finished, quiet run that then grows is a new run appending to it: a cut, like a rewrite
# (evidence.Scope). Undecidable, so never posted: a run that ended longer than the allowance before
# its watcher started, with no launcher, pid file or earlier run's end to place it (rule 4 waits for
# a run that never comes; the start timeout ends it UNKNOWN). A file dated in the future when first
# found has an unknown age: it is taken as changed then (evidence.Changes), so yesterday's files
# dated ahead by a clock since corrected count as recent until something newer places them.


def _own(scope: ScopeEvidence) -> List:
    return [f for f in (scope.log, scope.status, scope.exit) if f is not None]


def _seen_change(scope: ScopeEvidence) -> bool:
    """Did the watcher see a file of this scope change? What comes from its reports is derived once per set:
    a set of 200,000 reports is read row by row (vocab.ReportSet), never on every poll."""
    return any(f.seen_change for f in _own(scope)) or bool(scope.reports) and _derive(
        scope.reports, "seen", lambda: any(r.seen_change for r in scope.reports))


@dataclass(frozen=True)
class RunStart:
    floor: Optional[float]  # wall clock; None: no floor (every file not cut off is this run's)
    how: str
    started_mono: Optional[float] = None  # the run's start on the monotonic clock, for its duration
    cut_parent: Optional[float] = None  # monotonic: the first log rewrite seen (categorized parent's cut)
    lasting: bool = False  # read from evidence that stays true (see Decision.run_start_kept)

    @property
    def kept(self) -> Optional[float]:
        return self.floor if self.lasting else None

    def era(self, scope: ScopeEvidence, snap: Snapshot) -> Tuple[Optional[float], Optional[float]]:
        """(floor, cut) for one scope: its own log rewrite cuts it; the parent is cut by the first one."""
        cut = scope.log.restarted_at if scope.log is not None else None
        if scope is snap.parent and snap.categorized:
            cut = self.cut_parent
        return self.floor, cut


def earlier_run_end(snap: Snapshot) -> Optional[OutcomeFile]:
    """The build's newest outcome file that other files of the build are newer than: an earlier run's end.

    Each of .status and .exit is weighed on its own: a run that writes .status after one that wrote
    .exit leaves that older .exit behind, and the newer .status must not hide it."""
    outcomes = [f for f in (snap.parent.status, snap.parent.exit) if f is not None and not f.problem]
    if not outcomes:
        return None
    others = [f.mtime for s in (snap.parent, *snap.groups) for f in _own(s)
              if f is not snap.parent.status and f is not snap.parent.exit]
    others += [_newest_report(s.reports) for s in (snap.parent, *snap.groups) if s.reports]
    newest = max(others, default=None)
    ended = [f for f in outcomes if newest is not None and newest > f.mtime + STALE_TOLERANCE]
    return max(ended, key=lambda f: f.mtime, default=None)


def _newest_report(reports) -> float:
    return _derive(reports, "newest", lambda: max((r.mtime for r in reports), default=0.0))


def run_start(snap: Snapshot, limits: Limits) -> RunStart:
    scopes = (snap.parent, *snap.groups)
    restarts = [s.log.restarted_at for s in scopes if s.log is not None and s.log.restarted_at is not None]
    cut_parent = min(restarts) if restarts else None
    launcher = snap.launcher
    if launcher.started_at is not None:
        began = launcher.started_mono
        if began is None and snap.wall_at is None:  # hand-made evidence: one clock for everything
            began = launcher.started_at
        return RunStart(launcher.started_at, "the launcher process's start time", began, cut_parent, True)
    if snap.recorded_run_start is not None:
        return RunStart(snap.recorded_run_start, "the run start recorded for this run by an earlier watcher, or "
                        "by this one from evidence since overwritten", None, cut_parent)
    changed = any(_seen_change(s) for s in scopes) or bool(restarts)
    if not changed:
        # Before rule 3: a run that ended longer than the allowance before its request is not this run,
        # even when it is newer than an earlier run's end.
        waiting = _before_request(snap, limits, scopes, cut_parent)
        if waiting is not None:
            return waiting
    marks = []  # (floor, why): each says files older than it are an earlier run's; the latest one wins
    ended = earlier_run_end(snap)
    if ended is not None:
        # Itself and whatever is not clearly newer than it are the earlier run's (see ``earlier``).
        marks.append((ended.mtime + 2 * STALE_TOLERANCE,
                      f"{ended.path} is older than other files of the build: an earlier run's end"))
    if launcher.launched_at is not None:
        marks.append((launcher.launched_at, "the pid file of a launcher no longer running: when the latest run "
                      "that wrote one was launched"))
    if marks:
        floor, how = max(marks)
        return RunStart(floor, how, None, cut_parent, True)
    if changed:
        return RunStart(None, "the run's files changed while watched, and no earlier run's end is on disk",
                        None, cut_parent)
    # Files as recent as the request: they are this run's, all of them; a bound must never slice a run.
    return RunStart(None, "the newest file of the build is as recent as the request, less the launch allowance "
                    f"({limits.launch_allowance:g}s): the files on disk are this run's", None, cut_parent)


def _before_request(snap: Snapshot, limits: Limits, scopes, cut_parent: Optional[float]) -> Optional[RunStart]:
    """Rule 4: nothing changed yet and every file (a pid file too) is older than the request less the allowance."""
    wall_start = _wall(snap, snap.watcher_started_at)
    asked = min(snap.requested_at, wall_start) if snap.requested_at is not None else wall_start
    bound = asked - limits.launch_allowance
    times = [f.mtime for s in scopes for f in _own(s)] + [_newest_report(s.reports) for s in scopes if s.reports]
    if snap.launcher.launched_at is not None:
        times.append(snap.launcher.launched_at)
    newest = max(times, default=None)
    if newest is not None and newest >= bound - STALE_TOLERANCE:
        return None
    return RunStart(bound, f"nothing changed since the watcher started and every file of the build is older than "
                    f"the request less the launch allowance ({limits.launch_allowance:g}s): an earlier run's; "
                    "waiting for this run", None, cut_parent)


def _wall(snap: Snapshot, mono: float) -> float:
    """A monotonic instant on the wall clock of this snapshot (hand-made snapshots share one clock)."""
    return mono if snap.wall_at is None else snap.wall_at - (snap.taken_at - mono)


def fresh(scope: ScopeEvidence, era: Tuple[Optional[float], Optional[float]]) -> Tuple[ScopeEvidence, Tuple[str, ...]]:
    """Drop what an earlier run of the same build left in this scope (see above)."""
    floor, cut = era
    ignored: List[str] = []

    def keep(item):
        if isinstance(item, OutcomeFile) and item.problem and item.mtime == 0.0:
            ignored.append(f"{item.path}: passed over, it cannot be read ({item.problem})")
            return None  # not even its age is known: the rest of the evidence decides
        why = earlier(item, floor, cut)
        if item is not None and why:
            ignored.append(f"{item.path}: {why} (an earlier run of the same build)")
            return None
        return item

    log, status, exit_ = keep(scope.log), keep(scope.status), keep(scope.exit)
    reports, dropped = _derive(scope.reports, ("fresh", floor, cut), lambda: _fresh_reports(scope.reports, floor, cut))
    return replace(scope, log=log, status=status, exit=exit_, reports=reports), tuple(ignored) + dropped


def earlier(f, floor: Optional[float], cut: Optional[float]) -> Optional[str]:
    """Why a file is an earlier run's, or None when it is this run's."""
    if f is None:
        return None
    if cut is not None and changed_at(f) < cut - STALE_TOLERANCE:
        return "unchanged since its log was rewritten by a new run"
    if floor is not None and not f.seen_change and f.mtime < floor - STALE_TOLERANCE:
        return "older than this run's start"
    return None


def _derive(reports, key, compute):
    """Reuse what was derived from this very set of reports on an earlier poll (see ReportSet)."""
    return reports.derive(key, compute) if isinstance(reports, ReportSet) else compute()


def _fresh_reports(reports, floor: Optional[float], cut: Optional[float]):
    why = [earlier(r, floor, cut) for r in reports]
    if not any(why):
        return reports, ()  # the same object: what is derived from it stays memoised
    kept = ReportSet(r for i, r in enumerate(reports) if not why[i])
    return kept, tuple(f"{r.result.path}: {why[i]} (an earlier run of the same build)"
                       for i, r in enumerate(reports) if why[i])


# --- one scope: a plain run or one sub-run ---------------------------------------------------


def tally(reports: Iterable[Report]) -> Tuple[Counts, Tuple[str, ...], List[Report]]:
    """Counts and failed titles; a run with both reporters counts its tests once (mochawesome preferred).

    A failure seen only by the other reporter still counts, so that no failure is ever lost.
    """
    return _derive(reports, "tally", lambda: _tally(reports))


def _tally(reports: Iterable[Report]) -> Tuple[Counts, Tuple[str, ...], List[Report]]:
    sums = {"mochawesome": [0, 0, 0, 0, 0], "junit": [0, 0, 0, 0, 0]}  # tests passed failed pending skipped
    titles: dict = {"mochawesome": [], "junit": []}
    unreadable = []
    for r in reports:
        res = r.result
        if res.status == "ok" and res.kind in sums:
            for i, n in enumerate((res.tests, res.passed, res.failed, res.pending, res.skipped)):
                sums[res.kind][i] += n
            titles[res.kind].extend(res.failed_titles)
        elif res.status in ("incomplete", "invalid"):
            unreadable.append(r)
    main, other = "mochawesome", "junit"
    if sums[main][0] == 0 and sums[main][2] == 0:
        main, other = other, main
    counts, chosen = Counts(*sums[main]), titles[main]
    if counts.failed == 0 and sums[other][2] > 0:
        counts, chosen = replace(counts, failed=sums[other][2]), titles[other]
    return counts, tuple(chosen), unreadable


def _has_evidence(scopes: Iterable[ScopeEvidence]) -> bool:
    return any(s.log or s.status or s.exit or s.reports for s in scopes)


def _outcome_word(f: OutcomeFile, now: float, limits: Limits) -> Optional[Verdict]:
    word = State.of(f.text.upper())
    if word in TERMINAL:
        return Verdict(word, "status-file", f"{f.path} says {word} (the launcher's word is final)",
                       finished_at=f.mtime)
    if f.problem or now - changed_at(f) >= limits.settle:
        return Verdict(State.UNKNOWN, "status-unreadable", f"{f.path} " + (
            f"cannot be read ({f.problem})" if f.problem  # the content is never shown: it may not be the run's
            else f"holds {f.size} bytes that are not a state word (one of {', '.join(TERMINAL_WORDS)})"))
    return Verdict(State.RUNNING, "status-settling", f"{f.path} is still being written")


@dataclass(frozen=True)
class Finish:
    """Evidence that a scope finished, and what it says; decide_finished adds the reports."""

    rule: str
    reason: str
    failed: bool  # the evidence itself says the run failed
    finished_at: float
    passed: bool = False  # positive evidence of a pass: Cypress's "All specs passed!", or exit 0 uncontradicted


def _exit_code(f: OutcomeFile, now: float, limits: Limits) -> Tuple[Optional[Verdict], Optional[int]]:
    if EXIT_RE.fullmatch(f.text) and not f.problem:
        return None, int(f.text)
    if f.problem or now - changed_at(f) >= limits.settle:
        return Verdict(State.UNKNOWN, "exit-unreadable", f"{f.path} " + (
            f"cannot be read ({f.problem})" if f.problem else f"holds {f.size} bytes that are not an exit code")), None
    return Verdict(State.RUNNING, "exit-settling", f"{f.path} is still being written"), None


def _log_failures(log: Optional[LogFacts]) -> Optional[str]:
    """What in the log says tests failed, in words, or None."""
    if log is None:
        return None
    if log.summary == "failed":
        tests = f", {log.failed_tests} failed tests" if log.failed_tests else ""
        return f"Cypress's closing line says {log.failed_specs} of {log.total_specs} specs failed{tests}"
    if log.failed_tests:
        return f"the log shows {log.failed_tests} failed tests"
    return None


def _contradicts_exit_0(log: Optional[LogFacts]) -> Optional[Tuple[str, str]]:
    """(rule, what in the log says the run did not pass) when an exit code of 0 cannot be believed."""
    if log is None:
        return None
    failures = _log_failures(log)
    if failures:
        return "exit-0-but-failed", (f"{failures} (Cypress exits with the number of failed tests modulo 256, so "
                                     "256 failures exit 0; or the code is a wrapper's, such as tee's)")
    wrapper = "the exit code is likely a wrapper's (such as tee's), not Cypress's"
    if log.error:
        return "exit-0-but-error", f"Cypress printed {log.error!r}, which ends a run with exit code 1; {wrapper}"
    if log.unfinished:
        return "exit-0-but-unfinished", (f"the log shows a Cypress run that started ((Run Starting)) and never "
                                         f"finished (no (Run Finished)): it crashed or was killed; {wrapper}")
    return None


def _by_exit_code(f: OutcomeFile, log: Optional[LogFacts], now: float, limits: Limits):
    verdict, code = _exit_code(f, now, limits)
    if code is None:
        return verdict, None
    if code >= 128 or code < 0:
        if log is None or log.summary is None:
            return Verdict(State.TERMINATED, "exit-signal",
                           f"{f.path} says exit code {code} and Cypress printed no closing summary: the launcher "
                           "was killed by a signal", finished_at=f.mtime), None
        # After its closing line, Cypress's code is its count of failed tests modulo 256 (130 failures exit 130).
        failures = _log_failures(log)
        said = failures or "Cypress's closing line says All specs passed!"
        return None, Finish("exit-after-summary", f"{f.path} says exit code {code}, after {said}: the code is a "
                            "count of failed tests modulo 256 (or a signal after the run ended), not a kill",
                            failures is not None, f.mtime, passed=failures is None and log.summary == "passed")
    if code == 0:
        contradiction = _contradicts_exit_0(log)
        if contradiction:
            rule, why = contradiction
            return None, Finish(rule, f"{f.path} says exit code 0, but {why}", True, f.mtime)
        if log is not None and log.unread and log.summary != "passed":
            # What the unread middle held (a run that started and never finished, failed tests) cannot
            # contradict the 0, so the 0 is no evidence of a pass: UNKNOWN, or FAILED if the reports say so.
            return None, Finish("exit-0-log-unread", f"{f.path} says exit code 0, but the middle of {log.path} was "
                                "not read (only its first and last part: it is that large) and the part read shows "
                                "no closing line of Cypress's: a pass cannot be told from a failed or killed run",
                                False, f.mtime)
        return None, Finish("exit-code", f"{f.path} says the launcher finished (exit code 0)", False, f.mtime,
                            passed=True)
    return None, Finish("exit-code", f"{f.path} says the launcher failed (exit code {code})", True, f.mtime)


def _by_log(log: LogFacts, now: float, limits: Limits, over: Optional[float]):
    """Finish evidence from the log alone (no outcome file).

    The log says how a Cypress run ended, not how its launcher does: a launcher may run Cypress again
    into the same log, or fail after Cypress passed, and its exit code may still be on its way. So the
    log decides only once whoever writes it is over (``over``, monotonic: since when; None while it may
    still write, see ``over_since``) and it has not changed for the settle time after that.
    """
    if not (log.finished_banner or log.cancelled or log.error) or over is None:
        return None, None  # nothing in the log ends a run, or its launcher is alive: the launcher's end decides
    if now - max(changed_at(log), over) < limits.settle:
        return Verdict(State.RUNNING, "log-settling", f"{log.path} shows how Cypress's run ended; waiting "
                       f"{limits.settle:g}s after its last change and the launcher's end for an outcome file"), None
    if log.cancelled:
        return _cloud_cancelled(log), None
    if log.finished_banner and log.summary:
        failures = _log_failures(log)
        said = failures or "All specs passed!"
        return None, Finish("log-banner", f"{log.path} shows Cypress's (Run Finished) banner and closing line "
                            f"({said}), and the launcher is over", failures is not None, log.mtime,
                            passed=failures is None)
    if log.finished_banner:
        return None, Finish("banner-no-summary", f"{log.path} shows (Run Finished) but not Cypress's closing line "
                            "(All specs passed! or N of M failed), and the launcher is over: no evidence of a pass",
                            log.failed_tests > 0, log.mtime)
    return None, Finish("cypress-error", f"{log.path}: Cypress printed {log.error!r}, which ends a run with exit "
                        "code 1, and the launcher is over", True, log.mtime)


def _cloud_cancelled(log: LogFacts) -> Verdict:
    # Cypress exits 1 after a cancellation: the cancellation, not the code, says what happened.
    return Verdict(State.CANCELLED, "cloud-cancelled",
                   f"{log.path}: Cypress says the run was canceled (in Cypress Cloud); nothing is posted",
                   finished_at=log.mtime)


# The rules an outcome file (or the operator's cancel) decides: whether the launcher is alive plays no part.
OUTCOME_RULES = frozenset({
    "cancelled-marker", "status-file", "status-unreadable", "exit-code", "exit-signal", "exit-after-summary",
    "exit-0-but-failed", "exit-0-but-error", "exit-0-but-unfinished", "exit-0-log-unread", "exit-unreadable",
})


def rests_on_launcher(verdict: Verdict) -> bool:
    """Could a launcher alive (and not seen) have changed this verdict? Every rule but OUTCOME_RULES may read
    the launcher's liveness (the log decides only once it is over; the gone grace and start timeout). Its
    start, where no launcher was ever seen, dates the run for every rule (which reports are this run's)."""
    return verdict.rule not in OUTCOME_RULES


def over_since(launcher: Liveness) -> Optional[float]:
    """Since when (monotonic) the run's launcher is over; None while it is alive.

    A launcher never seen is over since ever (the log alone decides once it settles); one seen, since it
    was last seen alive.
    """
    if launcher.alive:
        return None
    return launcher.last_seen_alive if launcher.last_seen_alive is not None else float("-inf")


def _unusable_outcome(verdict: Verdict, f: OutcomeFile, log: Optional[LogFacts]) -> Optional[Finish]:
    """An outcome file that still holds no word or code once settled: the failed tests seen elsewhere decide.

    Cypress's N of M failed (or any failed test in the log or the reports) is FAILED whatever the exit code
    says, so it is FAILED when the exit code cannot be read either; without a failure it stays UNKNOWN.
    """
    if verdict.state != State.UNKNOWN or verdict.rule not in ("status-unreadable", "exit-unreadable"):
        return None
    failures = _log_failures(log)
    return Finish(verdict.rule, f"{verdict.reason}{', but ' + failures if failures else ''}", failures is not None,
                  f.mtime)


def finished_by(scope: ScopeEvidence, now: float, limits: Limits, over: Optional[float]):
    """(verdict that settles it, None) or (None, Finish) or (None, None): not finished.

    ``over``: since when the scope's launcher is over (see ``over_since``), None while it may still write.
    """
    log = scope.log
    if scope.status:
        verdict, finish = _outcome_word(scope.status, now, limits), None
    elif scope.exit and log and log.cancelled:
        return _cloud_cancelled(log), None
    elif scope.exit:
        verdict, finish = _by_exit_code(scope.exit, log, now, limits)
    elif log:
        return _by_log(log, now, limits, over)
    else:
        return None, None
    unusable = _unusable_outcome(verdict, scope.status or scope.exit, log) if verdict is not None else None
    return (None, unusable) if unusable else (verdict, finish)


def decide_finished(scope: ScopeEvidence, finish: Finish, now: float, limits: Limits) -> Verdict:
    counts, titles, unreadable = tally(scope.reports)
    if any(now - changed_at(r) < limits.settle for r in unreadable):
        return Verdict(State.RUNNING, "report-settling", f"{finish.reason}; a report is still being written")
    failed_reports = counts.failed > 0
    base = dict(group=scope.group, counts=counts, failed_titles=titles, finished_at=finish.finished_at)
    if finish.failed or failed_reports:
        why = finish.reason + ("; reports show failures" if failed_reports else "")
        return Verdict(State.FAILED, finish.rule, why, **base)
    if unreadable:
        bad = unreadable[0].result
        return Verdict(State.UNKNOWN, "report-unreadable",
                       f"{finish.reason}, but report {bad.path} cannot be read ({bad.status}: {bad.detail}); "
                       "a failure in it cannot be ruled out", **base)
    if not finish.passed:  # finished, no failure seen, and nothing says it passed: COMPLETED needs a pass
        return Verdict(State.UNKNOWN, finish.rule, finish.reason, **base)
    return Verdict(State.COMPLETED, finish.rule, finish.reason + "; no failures in the reports", **base)


def settle_scope(scope: ScopeEvidence, now: float, limits: Limits, over: Optional[float]) -> Optional[Verdict]:
    """A verdict from the scope's own finish evidence (terminal or settling), else None."""
    verdict, finish = finished_by(scope, now, limits, over)
    if finish:
        return decide_finished(scope, finish, now, limits)
    if verdict is None:
        return None
    if verdict.state in POSTED:  # the launcher's own word: counts for the message
        counts, titles, _ = tally(scope.reports)
        verdict = replace(verdict, counts=counts, failed_titles=titles)
    return replace(verdict, group=scope.group)


def last_progress(scopes: Iterable[ScopeEvidence], since: float) -> float:
    """When any of this run's files last changed (monotonic), and not before ``since``."""
    times = [since]
    for s in scopes:
        times += [changed_at(f) for f in _own(s)]
        if s.reports:
            times.append(_derive(s.reports, "changed", lambda s=s: max(changed_at(r) for r in s.reports)))
    return max(times)


def _baseline(snap: Snapshot) -> float:
    """Since when a silent run counts as silent: its launcher's start, else the watcher's (monotonic)."""
    return snap.launcher.started_mono if snap.launcher.started_mono is not None else snap.watcher_started_at


def gone_with_failures(verdict: Verdict, scope: ScopeEvidence) -> Verdict:
    """A launcher gone without finish evidence is TERMINATED, unless tests had failed: those are posted.

    Without an outcome file, a launcher that ended (a --quiet run prints no summary) looks like one
    that was killed; failed tests are reported either way, so that no failure goes unposted.
    """
    # launcher-gone: the run's launcher; parent-*: a sub-run left unfinished when its run ended
    if verdict.state != State.TERMINATED or not (verdict.rule == "launcher-gone" or verdict.rule.startswith("parent-")):
        return verdict
    counts, titles, _ = tally(scope.reports)
    failures = _log_failures(scope.log) or (f"the reports show {counts.failed} failures" if counts.failed else None)
    if failures is None:
        return verdict
    return Verdict(State.FAILED, "gone-with-failures", f"{verdict.reason}, but {failures}", group=scope.group,
                   counts=counts, failed_titles=titles, finished_at=scope.log.mtime if scope.log else None)


def liveness_verdict(snap: Snapshot, scopes: List[ScopeEvidence], limits: Limits) -> Verdict:
    now, launcher = snap.taken_at, snap.launcher
    progress = last_progress(scopes, _baseline(snap))
    if launcher.alive:
        idle = now - progress
        if idle >= limits.hung_after:
            return Verdict(State.HUNG, "no-progress",
                           f"launcher pid {launcher.pid} is alive but nothing changed for {idle:.0f}s "
                           f"(limit {limits.hung_after:g}s)")
        return Verdict(State.RUNNING, "launcher-alive", f"launcher pid {launcher.pid} is alive ({launcher.source})")
    if _has_evidence(scopes) or launcher.last_seen_alive is not None:
        gone_since = max(progress, launcher.last_seen_alive if launcher.last_seen_alive is not None else progress)
        gone = now - gone_since
        if gone >= limits.gone_grace:
            return Verdict(State.TERMINATED, "launcher-gone",
                           f"the launcher is gone: for {gone:.0f}s of watching no launcher was seen alive and no file "
                           f"of the run changed (grace {limits.gone_grace:g}s), with no finish evidence")
        return Verdict(State.RUNNING, "launcher-gone-grace",
                       f"no launcher seen for {gone:.0f}s; TERMINATED after {limits.gone_grace:g}s")
    waited = now - snap.watcher_started_at
    if waited >= limits.start_timeout:
        return Verdict(State.UNKNOWN, "no-evidence",
                       f"no log, report, outcome file or launcher of this run after {waited:.0f}s "
                       f"(start timeout {limits.start_timeout:g}s)")
    return Verdict(State.WAITING, "waiting-for-start", "no evidence of this run yet")


def finish_changed(scope: ScopeEvidence) -> Optional[float]:
    """When the scope's finish evidence last changed (monotonic), if it has any."""
    times = [changed_at(f) for f in (scope.status, scope.exit) if f is not None]
    if scope.log is not None and scope.log.finished_banner:
        times.append(changed_at(scope.log))
    return max(times) if times else None


def _first_change(scope: ScopeEvidence) -> Optional[float]:
    times = [changed_at(f) for f in _own(scope)]
    if scope.reports:  # derived once per set, as above
        times.append(_derive(scope.reports, "first", lambda: min(changed_at(r) for r in scope.reports)))
    return min(times, default=None)


def timed(v: Verdict, scope: ScopeEvidence, began: Optional[float], start: RunStart) -> Verdict:
    """The verdict with its start (wall, recorded) and, once terminal, its length (monotonic)."""
    v = replace(v, run_start=start.floor)
    end = finish_changed(scope) if v.terminal else None
    if end is None or began is None or end < began:
        return v
    return replace(v, elapsed=end - began)


def decide_scope(snap: Snapshot, scope: ScopeEvidence, limits: Limits, start: RunStart,
                 cancelled: bool) -> Verdict:
    if cancelled:
        return Verdict(State.CANCELLED, "cancelled-marker", "cancelled.marker is present", run_start=start.floor)
    verdict = settle_scope(scope, snap.taken_at, limits, over_since(snap.launcher))
    if verdict is None:
        verdict = gone_with_failures(liveness_verdict(snap, [scope], limits), scope)
        if not verdict.terminal:
            counts, titles, _ = tally(scope.reports)
            verdict = replace(verdict, counts=counts, failed_titles=titles)
    began = start.started_mono if start.started_mono is not None else _first_change(scope)
    return timed(verdict, scope, began, start)


# --- categorized runs -------------------------------------------------------------------------


def aggregate(groups: List[Verdict]) -> State:
    states = [g.state for g in groups]
    if State.FAILED in states:
        return State.FAILED
    if all(s == State.COMPLETED for s in states):
        return State.COMPLETED
    return next(s for s in states if s != State.COMPLETED)


Fresh = Tuple[ScopeEvidence, Tuple[str, ...]]  # a scope less an earlier run's files, and what was dropped


def this_runs_groups(groups: List[Fresh]) -> Tuple[List[ScopeEvidence], Tuple[str, ...], Tuple[str, ...]]:
    """Sub-runs with evidence of this run, what was ignored, and the groups only an earlier run left behind."""
    kept: List[ScopeEvidence] = []
    ignored: List[str] = []
    left: List[str] = []
    for g, ig in groups:
        ignored += ig
        if _own(g) or g.reports:
            kept.append(g)
        elif ig:
            ignored.append(f"sub-run {g.group}: only an earlier run's files; not a sub-run of this run")
            left.append(g.group or "")
    return kept, tuple(ignored), tuple(left)


def subrun_over(scopes: List[ScopeEvidence], i: int, launcher: Liveness) -> Optional[float]:
    """Since when sub-run ``i`` is over, as far as its log alone can tell (None: it may still write).

    Sub-runs run one after another: once the next one has started (it has files), this one is over, and
    wrote its outcome file before, if any; its log settles from its own last change. The last one is over
    when the launcher is.
    """
    if i + 1 < len(scopes):
        return float("-inf")
    return over_since(launcher)


def settle_parent(parent: ScopeEvidence, has_subruns: bool, now: float, limits: Limits,
                  launcher: Liveness) -> Optional[Verdict]:
    """A categorized run's parent: once it has sub-runs, only its own outcome files finish it.

    Its log is the launcher's, and a sub-run's output may be echoed into it (a group launched through the
    wrapper shows its output, which the outer wrapper logs): a banner, closing line or cancellation there
    is a sub-run's end, not the run's. So the run ends by ``B.status``/``B.exit``, or by the launcher gone
    with every sub-run finished (decide_categorized). The log still keeps an exit code of 0 from being a
    pass when it shows failed tests or a Cypress run that never finished. Before any sub-run exists, the
    log is the run's own and is read as a plain run's.
    """
    if not has_subruns:
        return settle_scope(parent, now, limits, over_since(launcher))
    log = parent.log and replace(parent.log, finished_banner=False, summary=None, cancelled=False)
    return settle_scope(replace(parent, log=log), now, limits, None)


def decide_categorized(snap: Snapshot, parent: ScopeEvidence, ignored: Tuple[str, ...],
                       groups: List[Fresh], limits: Limits, start: RunStart,
                       cancelled: bool) -> Decision:
    now = snap.taken_at
    scopes, group_ignored, leftovers = this_runs_groups(groups)
    own = [settle_scope(g, now, limits, subrun_over(scopes, i, snap.launcher)) for i, g in enumerate(scopes)]
    all_ignored = ignored + group_ignored
    if cancelled:
        verdict = Verdict(State.CANCELLED, "cancelled-marker", "cancelled.marker is present")
    else:
        verdict = settle_parent(parent, bool(scopes), now, limits, snap.launcher) or liveness_verdict(
            snap, [parent] + scopes, limits)
        if not scopes:  # the parent's log is the run's own: its failed tests are posted, as a plain run's
            verdict = gone_with_failures(verdict, parent)
        if verdict.state == State.TERMINATED and verdict.rule == "launcher-gone" and scopes and all(
            v is not None and v.terminal for v in own
        ):
            verdict = Verdict(State.COMPLETED, "groups-done", "the launcher is gone and every sub-run finished")
    unresolved_wait = any(
        (v is None or not v.terminal) and now - last_progress([g], float("-inf")) < limits.settle
        for v, g in zip(own, scopes)
    )
    if verdict.terminal and unresolved_wait and not cancelled:
        verdict = Verdict(State.RUNNING, "groups-settling", f"{verdict.reason}; a sub-run's files are still changing")
    final_groups: List[Verdict] = []
    began = start.started_mono if start.started_mono is not None else min(
        (t for t in (_first_change(g) for g in scopes) if t is not None), default=None)
    for position, (v, g) in enumerate(zip(own, scopes), start=1):
        if v is None or not v.terminal:
            counts, titles, _ = tally(g.reports)
            if verdict.terminal:
                inherited = State.TERMINATED if verdict.state in POSTED else verdict.state
                v = gone_with_failures(Verdict(
                    inherited, f"parent-{verdict.state.lower()}",
                    f"the run ended ({verdict.state}: {verdict.reason}) before this sub-run finished",
                    group=g.group, counts=counts, failed_titles=titles), g)
            else:
                v = Verdict(State.RUNNING, "sub-run-running", "the sub-run has no finish evidence yet (its log "
                            "alone is final once the next sub-run has started or the launcher is over)",
                            group=g.group, counts=counts, failed_titles=titles)
        # Sub-runs run one after another: one starts when the one before it finished.
        v = timed(replace(v, position=position), g, began, start)
        began = finish_changed(g) if finish_changed(g) is not None else began
        final_groups.append(v)
    launcher_word = verdict.rule == "status-file"  # the launcher's .status is final, for the parent as for any scope
    if verdict.terminal and verdict.state in POSTED and final_groups and not launcher_word:
        verdict = replace(verdict, state=aggregate(final_groups + ([verdict] if verdict.rule != "groups-done" else [])))
    total = Counts()
    for v in final_groups:
        total = total + v.counts
    run = replace(verdict, counts=total, run_start=start.floor, ignored=all_ignored)
    return Decision(run, tuple(final_groups), start.how, leftover_groups=leftovers)
