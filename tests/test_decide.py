"""Every row of the decision rules, as a table over evidence snapshots (the pure core: no I/O, no clock)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Optional, Tuple

import pytest

from atvm_watcher.decide import Limits, decide
from atvm_watcher.evidence import LogTail
from atvm_watcher.reports import parse_report
from atvm_watcher.vocab import Liveness, LogFacts, OutcomeFile, Report, ScopeEvidence, Snapshot

FIXTURES = Path(__file__).parent / "fixtures" / "reports"
T0 = 1_700_000_000.0  # the watcher's start
LIMITS = Limits(hung_after=3600, start_timeout=1800, gone_grace=60, settle=2)

ALIVE = Liveness(True, 4242, T0 - 10, T0, "process scan")
GONE = Liveness(False, None, None, None, "none")
GONE_AFTER_SEEN = Liveness(False, 4242, T0 - 10, T0 + 5, "process scan")
JUST_GONE = Liveness(False, 4242, T0 - 10, T0 + 99.5, "pid file")  # last seen alive half a second before NOW


def fixture_report(case: str, name: str = "mochawesome.json", mtime: float = T0 + 50) -> Report:
    data = (FIXTURES / case / name).read_bytes()
    return Report(mtime, len(data), parse_report(f"/r/{case}/{name}", data))


def raw_report(data: bytes, mtime: float = T0 + 50, name: str = "x.json") -> Report:
    return Report(mtime, len(data), parse_report(f"/r/{name}", data))


def log(mtime: float = T0 + 60, banner: bool = False, summary: Optional[str] = None, failed: int = 0,
        total: int = 0, **more) -> LogFacts:
    return LogFacts("/l/B.log", 1000, mtime, banner, summary, failed, total, **more)


def outcome(text: str, mtime: float = T0 + 60, name: str = "B.exit") -> OutcomeFile:
    return OutcomeFile(f"/l/{name}", mtime, text)


def scope(group: Optional[str] = None, log_=None, reports=(), status=None, exit_=None) -> ScopeEvidence:
    return ScopeEvidence(group, log_, tuple(reports), status, exit_)


def snap(now: float, parent: ScopeEvidence, launcher: Liveness = GONE, groups: Tuple[ScopeEvidence, ...] = (),
         requested_at: Optional[float] = None) -> Snapshot:
    return Snapshot("B", bool(groups), now, T0, launcher, parent, groups, requested_at=requested_at)


FINISHED = log(banner=True, summary="passed")
STARTED = log(unfinished=True)
FAILED_130 = log(banner=True, summary="failed", failed=3, total=3, failed_tests=130)
FAILED_256 = log(banner=True, summary="failed", failed=4, total=4, failed_tests=256)
CANCELED = log(banner=True, cancelled=True)
NO_SPECS = log(error="Can't run because no spec files were found")
NOW = T0 + 100

# (id, snapshot, expected state, expected rule)
ROWS = [
    # finished = outcome file or the (Run Finished) banner; failed = reports / summary / non-zero exit < 128
    ("banner-all-passed", snap(NOW, scope(log_=FINISHED, reports=[fixture_report("pass")])), "COMPLETED", "log-banner"),
    ("banner-no-reports", snap(NOW, scope(log_=FINISHED)), "COMPLETED", "log-banner"),
    ("banner-failed-summary", snap(NOW, scope(log_=log(banner=True, summary="failed", failed=1, total=3))),
     "FAILED", "log-banner"),
    ("banner-report-failure", snap(NOW, scope(log_=FINISHED, reports=[fixture_report("fail")])), "FAILED",
     "log-banner"),
    ("failed-before-hook", snap(NOW, scope(log_=FINISHED, reports=[fixture_report("failed-hook")])), "FAILED",
     "log-banner"),
    ("junit-failure", snap(NOW, scope(log_=FINISHED, reports=[fixture_report("fail", "junit.xml")])), "FAILED",
     "log-banner"),
    ("junit-failed-hook", snap(NOW, scope(log_=FINISHED, reports=[fixture_report("failed-hook", "junit.xml")])),
     "FAILED", "log-banner"),
    ("all-pending-passPercent-null", snap(NOW, scope(log_=FINISHED, reports=[fixture_report("pending")])),
     "COMPLETED", "log-banner"),
    ("empty-spec-results-false", snap(NOW, scope(log_=FINISHED, reports=[fixture_report("empty")])), "COMPLETED",
     "log-banner"),
    ("mixed-fixture", snap(NOW, scope(log_=FINISHED, reports=[fixture_report("mixed")])), "FAILED", "log-banner"),
    ("exit-0", snap(NOW, scope(log_=log(), exit_=outcome("0"), reports=[fixture_report("pass")])), "COMPLETED",
     "exit-code"),
    ("exit-0-but-report-failed", snap(NOW, scope(exit_=outcome("0"), reports=[fixture_report("fail")])), "FAILED",
     "exit-code"),
    ("exit-1", snap(NOW, scope(exit_=outcome("1"))), "FAILED", "exit-code"),
    ("exit-127", snap(NOW, scope(exit_=outcome("127"))), "FAILED", "exit-code"),
    ("exit-128-killed", snap(NOW, scope(log_=STARTED, exit_=outcome("128"))), "TERMINATED", "exit-signal"),
    ("exit-137-killed", snap(NOW, scope(exit_=outcome("137"))), "TERMINATED", "exit-signal"),
    ("exit-143-banner-without-closing-line", snap(NOW, scope(log_=log(banner=True), exit_=outcome("143"))),
     "TERMINATED", "exit-signal"),
    # Cypress exits with its count of failed tests modulo 256: after its closing line, >= 128 is a count
    ("exit-130-is-130-failures", snap(NOW, scope(log_=FAILED_130, exit_=outcome("130"))), "FAILED",
     "exit-after-summary"),
    ("exit-143-after-all-specs-passed", snap(NOW, scope(log_=FINISHED, exit_=outcome("143"))), "COMPLETED",
     "exit-after-summary"),
    ("exit-143-after-all-passed-but-earlier-failures", snap(NOW, scope(log_=replace(FINISHED, failed_tests=2),
                                                                       exit_=outcome("143"))),
     "FAILED", "exit-after-summary"),
    ("exit-143-after-all-passed-but-report-failed", snap(NOW, scope(log_=FINISHED, exit_=outcome("143"),
                                                                    reports=[fixture_report("fail")])),
     "FAILED", "exit-after-summary"),
    # exit 0 is a pass only when nothing contradicts it
    ("exit-0-256-failures", snap(NOW, scope(log_=FAILED_256, exit_=outcome("0"))), "FAILED", "exit-0-but-failed"),
    ("exit-0-quiet-failing", snap(NOW, scope(log_=log(failed_tests=1), exit_=outcome("0"))), "FAILED",
     "exit-0-but-failed"),
    ("exit-0-no-spec-files", snap(NOW, scope(log_=log(error="Can't run because no spec files were found"),
                                            exit_=outcome("0"))), "FAILED", "exit-0-but-error"),
    ("exit-0-crash-report", snap(NOW, scope(log_=log(unfinished=True, error="The Test Runner unexpectedly exited"),
                                           exit_=outcome("0"))), "FAILED", "exit-0-but-error"),
    ("exit-0-started-never-finished", snap(NOW, scope(log_=STARTED, exit_=outcome("0"))), "FAILED",
     "exit-0-but-unfinished"),
    ("exit-0-quiet-passing", snap(NOW, scope(log_=log(), exit_=outcome("0"))), "COMPLETED", "exit-code"),
    # a log too large to be read whole: a 0 it cannot check is no pass (a killed run's tee exits 0 too)
    ("exit-0-log-unread-started", snap(NOW, scope(log_=replace(STARTED, unread=True), exit_=outcome("0"))),
     "FAILED", "exit-0-but-unfinished"),
    ("exit-0-log-unread-no-closing-line", snap(NOW, scope(log_=log(unread=True), exit_=outcome("0"))), "UNKNOWN",
     "exit-0-log-unread"),
    ("exit-0-log-unread-report-failed", snap(NOW, scope(log_=log(unread=True), exit_=outcome("0"),
                                                        reports=[fixture_report("fail")])), "FAILED",
     "exit-0-log-unread"),
    ("exit-0-log-unread-all-specs-passed", snap(NOW, scope(log_=replace(FINISHED, unread=True), exit_=outcome("0"))),
     "COMPLETED", "exit-code"),
    ("exit-0-banner-without-closing-line", snap(NOW, scope(log_=log(banner=True), exit_=outcome("0"))),
     "COMPLETED", "exit-code"),
    ("exit-1-after-all-specs-passed", snap(NOW, scope(log_=FINISHED, exit_=outcome("1"))), "FAILED", "exit-code"),
    # Cypress Cloud's cancellation: never posted, whatever the exit code says
    ("cloud-cancelled-exit-1", snap(NOW, scope(log_=CANCELED, exit_=outcome("1"))), "CANCELLED", "cloud-cancelled"),
    ("cloud-cancelled-log-alone", snap(NOW, scope(log_=CANCELED)), "CANCELLED", "cloud-cancelled"),
    ("cloud-cancelled-launcher-alive", snap(NOW, scope(log_=CANCELED), ALIVE), "RUNNING", "launcher-alive"),
    ("status-wins-over-cloud-cancel", snap(NOW, scope(log_=CANCELED, status=outcome("FAILED", name="B.status"))),
     "FAILED", "status-file"),
    ("exit-garbage-settled", snap(NOW, scope(exit_=outcome("banana", mtime=NOW - 10))), "UNKNOWN",
     "exit-unreadable"),
    ("status-empty-still-writing", snap(NOW, scope(status=outcome("", mtime=NOW - 0.5, name="B.status")), ALIVE),
     "RUNNING", "status-settling"),
    ("exit-empty-still-writing", snap(NOW, scope(exit_=outcome("", mtime=NOW - 0.5)), ALIVE), "RUNNING",
     "exit-settling"),
    # the status file is authoritative: its word wins over every other piece of evidence
    ("status-completed", snap(NOW, scope(status=outcome("COMPLETED", name="B.status"))), "COMPLETED", "status-file"),
    ("status-failed", snap(NOW, scope(status=outcome("failed", name="B.status"))), "FAILED", "status-file"),
    ("status-cancelled", snap(NOW, scope(status=outcome("CANCELLED", name="B.status"))), "CANCELLED",
     "status-file"),
    ("status-terminated", snap(NOW, scope(status=outcome("TERMINATED", name="B.status"))), "TERMINATED",
     "status-file"),
    ("status-hung", snap(NOW, scope(status=outcome("HUNG", name="B.status")), ALIVE), "HUNG", "status-file"),
    ("status-unknown", snap(NOW, scope(status=outcome("UNKNOWN", name="B.status"))), "UNKNOWN", "status-file"),
    ("status-wins-over-exit", snap(NOW, scope(status=outcome("COMPLETED", name="B.status"), exit_=outcome("1"))),
     "COMPLETED", "status-file"),
    ("status-garbage", snap(NOW, scope(status=outcome("MAYBE", mtime=NOW - 10, name="B.status"))), "UNKNOWN",
     "status-unreadable"),
    # the log alone: the banner with its closing line decides; without it, the banner is never a pass
    ("banner-all-passed-but-earlier-failures", snap(NOW, scope(log_=log(banner=True, summary="passed",
                                                                            failed_tests=2))), "FAILED", "log-banner"),
    ("banner-130-failures-log-alone", snap(NOW, scope(log_=FAILED_130)), "FAILED", "log-banner"),
    ("banner-no-summary-alive-fresh", snap(NOW, scope(log_=log(mtime=NOW - 0.5, banner=True)), ALIVE), "RUNNING",
     "launcher-alive"),
    ("banner-no-summary-gone-fresh", snap(NOW, scope(log_=log(mtime=NOW - 0.5, banner=True))), "RUNNING",
     "log-settling"),
    ("banner-no-summary-alive-settled", snap(NOW, scope(log_=log(mtime=NOW - 5, banner=True)), ALIVE),
     "RUNNING", "launcher-alive"),
    ("banner-no-summary-launcher-gone", snap(NOW, scope(log_=log(mtime=NOW - 5, banner=True))), "UNKNOWN",
     "banner-no-summary"),
    ("banner-no-summary-gone-with-failures", snap(NOW, scope(log_=log(mtime=NOW - 5, banner=True, failed_tests=1))),
     "FAILED", "banner-no-summary"),
    ("banner-no-summary-gone-report-failed", snap(NOW, scope(log_=log(mtime=NOW - 5, banner=True),
                                                             reports=[fixture_report("fail")])),
     "FAILED", "banner-no-summary"),
    # an error that ends a Cypress run, with no outcome file: decided once the launcher is gone
    ("cypress-error-launcher-gone", snap(NOW, scope(log_=NO_SPECS)), "FAILED", "cypress-error"),
    ("cypress-error-gone-fresh", snap(NOW, scope(log_=replace(NO_SPECS, mtime=NOW - 0.5))), "RUNNING",
     "log-settling"),
    # the log ends a Cypress run, not its launcher's: while the launcher is alive (it may run Cypress again,
    # or fail after Cypress passed, and its exit code is still to come) the log decides nothing; once it is
    # gone, the log and an outcome file get the settle time
    ("banner-all-passed-launcher-alive", snap(NOW, scope(log_=FINISHED), ALIVE), "RUNNING", "launcher-alive"),
    ("banner-failed-launcher-alive", snap(NOW, scope(log_=FAILED_130), ALIVE), "RUNNING", "launcher-alive"),
    ("banner-all-passed-launcher-just-gone", snap(NOW, scope(log_=FINISHED), JUST_GONE), "RUNNING", "log-settling"),
    ("banner-all-passed-fresh-log", snap(NOW, scope(log_=replace(FINISHED, mtime=NOW - 0.5))), "RUNNING",
     "log-settling"),
    ("banner-all-passed-launcher-gone-settled", snap(NOW, scope(log_=FINISHED), GONE_AFTER_SEEN), "COMPLETED",
     "log-banner"),
    # an outcome file that holds no usable word or code: failed tests elsewhere still decide
    ("exit-garbage-closing-line-failed", snap(NOW, scope(log_=FAILED_130, exit_=outcome("\ufeff3", mtime=NOW - 10))),
     "FAILED", "exit-unreadable"),
    ("exit-empty-report-failed", snap(NOW, scope(exit_=outcome("", mtime=NOW - 10), reports=[fixture_report("fail")])),
     "FAILED", "exit-unreadable"),
    ("exit-empty-all-specs-passed", snap(NOW, scope(log_=FINISHED, exit_=outcome("", mtime=NOW - 10))), "UNKNOWN",
     "exit-unreadable"),
    ("exit-empty-closing-line-failed-still-writing", snap(NOW, scope(log_=FAILED_130, exit_=outcome("", NOW - 0.5)),
                                                          ALIVE), "RUNNING", "exit-settling"),
    ("status-garbage-closing-line-failed", snap(NOW, scope(log_=FAILED_130, status=outcome("PASS", mtime=NOW - 10,
                                                                                            name="B.status"))),
     "FAILED", "status-unreadable"),
    ("cypress-error-launcher-alive", snap(NOW, scope(log_=NO_SPECS), ALIVE), "RUNNING", "launcher-alive"),
    # no finish evidence and the launcher gone: TERMINATED, unless tests had failed (posted, never lost)
    ("quiet-failing-launcher-gone", snap(NOW, scope(log_=log(mtime=NOW - 61, failed_tests=1))), "FAILED",
     "gone-with-failures"),
    ("report-failed-launcher-gone", snap(NOW, scope(log_=log(mtime=NOW - 61), reports=[fixture_report("fail",
                                                                                                     mtime=NOW - 61)])),
     "FAILED", "gone-with-failures"),
    ("quiet-passing-launcher-gone", snap(NOW, scope(log_=log(mtime=NOW - 61))), "TERMINATED", "launcher-gone"),
    ("started-never-finished-gone", snap(NOW, scope(log_=replace(STARTED, mtime=NOW - 61))), "TERMINATED",
     "launcher-gone"),
    ("quiet-failing-launcher-alive", snap(NOW, scope(log_=log(mtime=NOW - 61, failed_tests=1)), ALIVE), "RUNNING",
     "launcher-alive"),
    # half-written reports are "not yet"; unreadable ones after the run finished are UNKNOWN unless failure is known
    ("half-written-report-waits", snap(NOW, scope(log_=FINISHED, reports=[raw_report(b'{"stats": {"tes',
                                                                                     mtime=NOW - 0.5)])),
     "RUNNING", "report-settling"),
    ("half-written-report-settled", snap(NOW, scope(log_=FINISHED, reports=[raw_report(b'{"stats": {"tes')])),
     "UNKNOWN", "report-unreadable"),
    ("corrupt-report-but-known-failure", snap(NOW, scope(exit_=outcome("1"), reports=[raw_report(b"\x00\xff")])),
     "FAILED", "exit-code"),
    ("not-a-report-ignored", snap(NOW, scope(log_=FINISHED, reports=[raw_report(b"{}")])), "COMPLETED",
     "log-banner"),
    # liveness: HUNG, TERMINATED, UNKNOWN, waiting
    ("alive-progressing", snap(NOW, scope(log_=log(mtime=NOW - 30)), ALIVE), "RUNNING", "launcher-alive"),
    ("alive-no-progress", snap(T0 + 4000, scope(log_=log(mtime=T0 + 10)), ALIVE), "HUNG", "no-progress"),
    ("alive-no-files-too-long", snap(T0 + 4000, scope(), ALIVE), "HUNG", "no-progress"),
    ("gone-within-grace", snap(NOW, scope(log_=log(mtime=NOW - 30)), GONE), "RUNNING", "launcher-gone-grace"),
    ("gone-past-grace", snap(NOW, scope(log_=log(mtime=NOW - 61)), GONE), "TERMINATED", "launcher-gone"),
    ("seen-then-gone-no-files", snap(T0 + 100, scope(), GONE_AFTER_SEEN), "TERMINATED", "launcher-gone"),
    ("seen-then-gone-recently", snap(T0 + 30, scope(), GONE_AFTER_SEEN), "RUNNING", "launcher-gone-grace"),
    ("nothing-yet", snap(T0 + 100, scope()), "WAITING", "waiting-for-start"),
    ("nothing-by-start-timeout", snap(T0 + 1800, scope()), "UNKNOWN", "no-evidence"),
]


# --- the corpus: what Cypress 13.17 really prints (tests/fixtures/cypress), read by the real LogTail ---------

CORPUS = Path(__file__).parent / "fixtures" / "cypress"
MANIFEST = json.loads((CORPUS / "manifest.json").read_text())
# With the log alone, a run that printed no verdict of its own and whose launcher left no exit code
# cannot be told from a killed one: never posted, so never COMPLETED without a pass line.
LOG_ALONE_DIFFERS = {"quiet-passed": "TERMINATED"}


def corpus_log(case: dict) -> LogFacts:
    return replace(LogTail(CORPUS / case["file"]).facts(), mtime=T0 + 60)


@pytest.mark.parametrize("case", MANIFEST, ids=[c["case"] for c in MANIFEST])
def test_corpus_case_with_its_exit_code(case):
    s = snap(NOW, scope(log_=corpus_log(case), exit_=outcome(str(case["exit_code"]), mtime=T0 + 61)))
    assert decide(s, LIMITS).run.state == case["expected_state"]


@pytest.mark.parametrize("case", MANIFEST, ids=[c["case"] for c in MANIFEST])
def test_corpus_case_while_the_exit_code_is_still_to_come(case):
    """The launcher alive after the last line (an upload to Cypress Cloud, a slow exit, another Cypress run
    to come): nothing is decided before the launcher ends, so a late exit code decides as one written at once."""
    verdict = decide(snap(NOW, scope(log_=corpus_log(case)), ALIVE), LIMITS).run
    assert verdict.state == "RUNNING", verdict
    for code in (0, 1, case["exit_code"]):
        late = decide(snap(NOW + 30, scope(log_=corpus_log(case), exit_=outcome(str(code), mtime=NOW + 20)),
                           GONE_AFTER_SEEN), LIMITS).run
        at_once = decide(snap(NOW, scope(log_=corpus_log(case), exit_=outcome(str(code), mtime=T0 + 61))),
                         LIMITS).run
        assert late.state == at_once.state, (code, late, at_once)


@pytest.mark.parametrize("case", MANIFEST, ids=[c["case"] for c in MANIFEST])
def test_corpus_case_with_the_log_alone(case):
    verdict = decide(snap(T0 + 60 + LIMITS.gone_grace + 1, scope(log_=corpus_log(case)), GONE_AFTER_SEEN), LIMITS).run
    assert verdict.state == LOG_ALONE_DIFFERS.get(case["case"], case["expected_state"]), verdict


@pytest.mark.parametrize("row", ROWS, ids=[r[0] for r in ROWS])
def test_decision_rules(row):
    _, snapshot, state, rule = row
    verdict = decide(snapshot, LIMITS).run
    assert (verdict.state, verdict.rule) == (state, rule), verdict.reason


def test_cancel_marker_wins():
    verdict = decide(snap(NOW, scope(log_=FINISHED)), LIMITS, cancelled=True).run
    assert (verdict.state, verdict.rule) == ("CANCELLED", "cancelled-marker")


def test_counts_and_titles_come_from_reports():
    verdict = decide(snap(NOW, scope(log_=FINISHED, reports=[fixture_report("fail"), fixture_report("pass")])),
                     LIMITS).run
    assert verdict.counts.failed == 1 and verdict.counts.passed == 3
    assert len(verdict.failed_titles) == 1


def test_both_reporters_count_tests_once():
    both = [fixture_report("fail"), fixture_report("fail", "junit.xml")]
    verdict = decide(snap(NOW, scope(log_=FINISHED, reports=both)), LIMITS).run
    only = decide(snap(NOW, scope(log_=FINISHED, reports=both[:1])), LIMITS).run
    assert verdict.counts == only.counts and verdict.failed_titles == only.failed_titles


# --- reports and files older than the run's start belong to an earlier run -------------------


def test_old_failed_report_is_ignored_when_launcher_start_is_known():
    old = fixture_report("fail", mtime=T0 - 3600)
    verdict = decide(snap(NOW, scope(log_=FINISHED, reports=[old, fixture_report("pass")]), GONE_AFTER_SEEN),
                     LIMITS).run
    assert verdict.state == "COMPLETED"
    assert any("older than this run's start" in i for i in verdict.ignored)


def test_old_files_ignored_relative_to_the_request_while_nothing_changed():
    old_log = log(mtime=T0 - 3600, banner=True, summary="failed", failed=1, total=1)
    verdict = decide(snap(T0 + 10, scope(log_=old_log, exit_=outcome("1", mtime=T0 - 3600)), requested_at=T0),
                     LIMITS).run
    assert verdict.state == "WAITING" and verdict.rule == "waiting-for-start"
    assert len(verdict.ignored) == 2 and all("older than this run's start" in i for i in verdict.ignored)


def test_a_finished_build_as_recent_as_the_request_is_this_run_whole():
    # The watcher started just after the run ended, no launcher: every file on disk is this run's.
    s = snap(T0 + 10, scope(log_=log(mtime=T0 - 60, banner=True, summary="passed"),
                            reports=[fixture_report("pass", mtime=T0 - 650), fixture_report("fail", mtime=T0 - 9000)]),
             requested_at=T0)
    d = decide(s, LIMITS)
    assert d.run.state == "FAILED" and d.run.ignored == ()  # the early failing report is never sliced off
    assert "as recent as the request" in d.run_start_rule


def test_late_watcher_counts_every_report_of_a_long_finished_run():
    # 30 reports over 2 hours, the log last written 121 s ago: none of them is an earlier run's.
    reports = [fixture_report("fail" if i == 7 else "pass", mtime=T0 - 7300 + i * 240) for i in range(30)]
    s = snap(T0, scope(log_=log(mtime=T0 - 121, banner=True, summary="failed", failed=1, total=30),
                       exit_=outcome("1", mtime=T0 - 120), reports=reports), requested_at=T0)
    d = decide(s, LIMITS)
    assert d.run.state == "FAILED" and d.run.ignored == ()
    assert d.run.counts.tests == 30 * 2 + 0 and d.run.counts.failed == 1 and d.run.failed_titles


def test_an_earlier_runs_outcome_file_marks_where_this_run_began():
    # Yesterday's run ended with B.exit; today's log is newer: yesterday's exit and reports are not this run's.
    s = snap(T0 + 10, scope(log_=log(mtime=T0 + 5), exit_=outcome("1", mtime=T0 - 5000),
                            reports=[fixture_report("fail", mtime=T0 - 5100), fixture_report("pass", mtime=T0)]))
    d = decide(s, LIMITS)
    assert d.run.state != "FAILED" and not d.run.terminal
    assert "earlier run's end" in d.run_start_rule and len(d.run.ignored) == 2


def test_a_restarted_watcher_keeps_the_recorded_run_start():
    old = fixture_report("fail", mtime=T0 - 50)
    s = replace(snap(NOW, scope(log_=FINISHED, reports=[old, fixture_report("pass")])), recorded_run_start=T0)
    d = decide(s, LIMITS)
    assert d.run.state == "COMPLETED" and d.run.run_start == T0 and "earlier watcher" in d.run_start_rule


def test_old_exit_file_does_not_finish_a_new_run():
    s = snap(NOW, scope(log_=log(mtime=NOW - 1), exit_=outcome("0", mtime=ALIVE.started_at - 100)), ALIVE)
    assert decide(s, LIMITS).run.state == "RUNNING"


# --- categorized runs ------------------------------------------------------------------------


def group(name: str, exit_text: Optional[str] = None, mtime: float = T0 + 60, reports=()) -> ScopeEvidence:
    return scope(group=name, log_=log(mtime=mtime), exit_=outcome(exit_text, mtime, f"B/{name}.exit")
                 if exit_text is not None else None, reports=reports)


def cat(now: float, parent: ScopeEvidence, groups, launcher=ALIVE) -> Snapshot:
    return Snapshot("B", True, now, T0, launcher, parent, tuple(groups))


def states(decision):
    return decision.run.state, [(g.group, g.state) for g in decision.groups]


def test_categorized_first_group_done_second_running():
    d = decide(cat(NOW, scope(), [group("linux", "0"), group("windows", mtime=NOW - 1)]), LIMITS)
    assert states(d) == ("RUNNING", [("linux", "COMPLETED"), ("windows", "RUNNING")])


def test_categorized_parent_exit_finishes_and_aggregates():
    d = decide(cat(NOW, scope(exit_=outcome("1", NOW - 5)),
                   [group("linux", "0"), group("windows", "1", reports=[fixture_report("fail")])], GONE), LIMITS)
    assert states(d) == ("FAILED", [("linux", "COMPLETED"), ("windows", "FAILED")])
    assert d.groups[1].counts.failed == 1


def test_categorized_launcher_gone_all_groups_terminal():
    d = decide(cat(NOW, scope(), [group("linux", "0", T0 + 20), group("windows", "0", T0 + 30)], GONE), LIMITS)
    assert states(d) == ("COMPLETED", [("linux", "COMPLETED"), ("windows", "COMPLETED")])


def test_categorized_launcher_gone_group_unfinished_is_terminated():
    d = decide(cat(NOW, scope(), [group("linux", "0", T0 + 20), group("windows", None, T0 + 30)], GONE), LIMITS)
    assert states(d) == ("TERMINATED", [("linux", "COMPLETED"), ("windows", "TERMINATED")])


def test_categorized_unfinished_group_with_failed_tests_is_posted_failed():
    """A group with no outcome file of its own (a --quiet run, a Cypress error) whose log shows failures."""
    quiet = scope(group="windows", log_=replace(log(mtime=T0 + 30), failed_tests=2))
    d = decide(cat(NOW, scope(), [group("linux", "0", T0 + 20), quiet], GONE), LIMITS)
    assert states(d) == ("TERMINATED", [("linux", "COMPLETED"), ("windows", "FAILED")])  # the parent is never posted
    assert d.groups[1].rule == "gone-with-failures"


def test_categorized_hung_parent_hangs_open_groups():
    d = decide(cat(T0 + 5000, scope(), [group("linux", "0", T0 + 20), group("windows", None, T0 + 30)]), LIMITS)
    assert states(d) == ("HUNG", [("linux", "COMPLETED"), ("windows", "HUNG")])


def test_categorized_group_killed_by_signal():
    d = decide(cat(NOW, scope(), [group("linux", "137")]), LIMITS)
    assert d.groups[0].state == "TERMINATED"


def test_categorized_parent_exit_waits_while_a_group_still_changes():
    d = decide(cat(NOW, scope(exit_=outcome("0", NOW - 0.1)), [group("linux", None, NOW - 0.5)], GONE), LIMITS)
    assert d.run.state == "RUNNING" and d.run.rule == "groups-settling"


def test_categorized_cancel():
    d = decide(cat(NOW, scope(), [group("linux", "0"), group("windows")]), LIMITS, cancelled=True)
    assert states(d) == ("CANCELLED", [("linux", "COMPLETED"), ("windows", "CANCELLED")])


def test_categorized_no_groups_no_evidence_is_unknown():
    d = decide(cat(T0 + 1800, scope(), [], GONE), LIMITS)
    assert d.run.state == "UNKNOWN"


def test_subrun_duration_starts_when_previous_ended():
    d = decide(cat(NOW, scope(), [group("linux", "0", T0 + 20), group("windows", "0", T0 + 50)], ALIVE), LIMITS)
    first, second = d.groups
    assert (first.position, second.position) == (1, 2)
    assert first.elapsed == pytest.approx(30) and second.elapsed == pytest.approx(30)  # launcher seen at T0 - 10


# The parent's log is the launcher's: a group launched through the wrapper echoes its output there too.
ECHOED_PASS = log(mtime=NOW - 1, banner=True, summary="passed")


def test_categorized_a_groups_banner_echoed_into_the_parent_log_does_not_end_the_run():
    first, second = group("linux", "0", T0 + 50), group("windows", None, NOW - 1)
    d = decide(cat(NOW, scope(log_=ECHOED_PASS), [first, second]), LIMITS)
    assert states(d) == ("RUNNING", [("linux", "COMPLETED"), ("windows", "RUNNING")])
    d = decide(cat(NOW + 5, scope(log_=ECHOED_PASS), [first, second], GONE_AFTER_SEEN), LIMITS)
    assert d.run.state == "RUNNING" and d.run.rule == "launcher-gone-grace"  # not log-banner
    d = decide(cat(NOW + 5, scope(log_=ECHOED_PASS, exit_=outcome("3", NOW + 2)),
                   [first, group("windows", "3", NOW + 1)], GONE_AFTER_SEEN), LIMITS)
    assert states(d) == ("FAILED", [("linux", "COMPLETED"), ("windows", "FAILED")]) and d.run.rule == "exit-code"


def test_categorized_parent_exit_by_a_signal_after_an_echoed_summary_is_terminated():
    d = decide(cat(NOW, scope(log_=ECHOED_PASS, exit_=outcome("143", NOW - 0.5)),
                   [group("linux", "0", T0 + 50), group("windows", None, T0 + 60)], GONE), LIMITS)
    assert states(d) == ("TERMINATED", [("linux", "COMPLETED"), ("windows", "TERMINATED")])
    assert d.run.rule == "exit-signal"


def test_categorized_parent_exit_0_with_echoed_failures_is_no_pass():
    echoed = log(mtime=NOW - 5, failed_tests=2)
    d = decide(cat(NOW, scope(log_=echoed, exit_=outcome("0", NOW - 5)),
                   [group("linux", "0", T0 + 50), group("windows", "0", T0 + 60)], GONE), LIMITS)
    assert d.run.state == "FAILED" and d.run.rule == "exit-0-but-failed"


def test_categorized_run_without_subruns_reads_its_log_as_a_plain_run():
    d = decide(Snapshot("B", True, NOW, T0, GONE_AFTER_SEEN, scope(log_=FINISHED), ()), LIMITS)
    assert (d.run.state, d.run.rule) == ("COMPLETED", "log-banner")
    d = decide(Snapshot("B", True, NOW, T0, ALIVE, scope(log_=FINISHED), ()), LIMITS)
    assert d.run.state == "RUNNING"
    quiet = log(mtime=NOW - 61, failed_tests=1)
    d = decide(Snapshot("B", True, NOW, T0, GONE, scope(log_=quiet), ()), LIMITS)
    assert (d.run.state, d.run.rule) == ("FAILED", "gone-with-failures")


def test_categorized_group_log_alone_is_over_once_the_next_group_started():
    linux = scope(group="linux", log_=log(mtime=T0 + 50, banner=True, summary="passed"))
    windows = scope(group="windows", log_=log(mtime=NOW - 1, banner=True, summary="failed", failed=1, total=2))
    d = decide(cat(NOW, scope(), [linux, windows]), LIMITS)
    # windows is the last: it may still write (Cypress again) while the launcher is alive
    assert states(d) == ("RUNNING", [("linux", "COMPLETED"), ("windows", "RUNNING")])
    d = decide(cat(NOW + 5, scope(), [linux, windows], GONE_AFTER_SEEN), LIMITS)
    assert states(d) == ("RUNNING", [("linux", "COMPLETED"), ("windows", "FAILED")])  # the parent: the gone grace
    d = decide(cat(NOW + 60, scope(), [linux, windows], GONE_AFTER_SEEN), LIMITS)
    assert states(d) == ("FAILED", [("linux", "COMPLETED"), ("windows", "FAILED")]) and d.run.rule == "groups-done"


def test_decision_is_pure_same_input_same_output():
    s = cat(NOW, scope(), [group("linux", "0"), group("windows")])
    assert decide(s, LIMITS) == decide(replace(s), LIMITS)


def test_the_rules_that_need_no_launcher_are_rules_decide_gives():
    """watch.py reads every argv again before a verdict that may rest on the launcher's absence ends a scope;
    only the outcome-file rules are spared it: each must be a rule decide.py gives, spelled as it gives it."""
    import inspect

    from atvm_watcher import decide as decide_mod
    from atvm_watcher.decide import Verdict
    from atvm_watcher.vocab import State

    source = inspect.getsource(decide_mod)
    for rule in decide_mod.OUTCOME_RULES:
        assert source.count(f'"{rule}"') >= 2, rule  # in the set and where a verdict or finish is made
    assert not decide_mod.rests_on_launcher(Verdict(State.FAILED, "exit-code", ""))
    assert decide_mod.rests_on_launcher(Verdict(State.TERMINATED, "launcher-gone", ""))
    assert decide_mod.rests_on_launcher(Verdict(State.COMPLETED, "log-banner", ""))
