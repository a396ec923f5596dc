"""Which files are this run's: the rules of decide.py's comment, each on hand-made snapshots (no I/O)."""

from __future__ import annotations

import os
from dataclasses import replace

from test_decide import GONE, LIMITS, T0, cat, fixture_report, group, log, outcome, scope, snap

from atvm_watcher.decide import decide
from atvm_watcher.evidence import EvidenceReader
from atvm_watcher.layout import RunLayout
from atvm_watcher.vocab import Liveness


def test_a_newer_status_file_does_not_hide_an_earlier_runs_exit_file():
    # Today's launcher writes .status, yesterday's wrote .exit: that .exit is where today's run began.
    s = snap(T0 + 10, scope(log_=log(mtime=T0 - 60, banner=True, summary="passed"),
                            status=outcome("COMPLETED", mtime=T0 - 59, name="B.status"),
                            exit_=outcome("1", mtime=T0 - 90000),
                            reports=[fixture_report("fail", mtime=T0 - 90010), fixture_report("pass", mtime=T0 - 70)]),
             requested_at=T0)
    d = decide(s, LIMITS)
    assert d.run.state == "COMPLETED" and d.run.counts.failed == 0
    assert "earlier run's end" in d.run_start_rule and d.run_start_kept is not None


def test_a_gone_launchers_pid_file_is_the_latest_launch():
    # Watcher started just after the run: yesterday's run (no outcome file: killed) left a failing report.
    pid_file = replace(GONE, launched_at=T0 - 200)
    s = snap(T0 + 10, scope(log_=log(mtime=T0 - 60, banner=True, summary="passed"), exit_=outcome("0", mtime=T0 - 59),
                            reports=[fixture_report("fail", mtime=T0 - 90000), fixture_report("pass", mtime=T0 - 70)]),
             pid_file, requested_at=T0)
    d = decide(s, LIMITS)
    assert d.run.state == "COMPLETED" and len(d.run.ignored) == 1 and "pid file" in d.run_start_rule


def test_an_old_pid_file_does_not_make_an_earlier_run_this_one():
    # Only yesterday's files, its pid file among them: the watcher waits for this run (rule 4 first).
    s = snap(T0 + 10, scope(log_=log(mtime=T0 - 90000, banner=True, summary="failed", failed=1, total=1),
                            exit_=outcome("1", mtime=T0 - 89999)), replace(GONE, launched_at=T0 - 93600),
             requested_at=T0)
    d = decide(s, LIMITS)
    assert d.run.state == "WAITING" and "earlier run's" in d.run.reason


def test_a_run_ended_longer_than_the_allowance_before_its_request_waits_even_after_an_earlier_end():
    # Yesterday's .exit, then a run that ended 3 hours before this watcher's request: not this run.
    s = snap(T0 + 10, scope(log_=log(mtime=T0 - 10800, banner=True, summary="passed"),
                            exit_=outcome("1", mtime=T0 - 90000)), requested_at=T0)
    d = decide(s, LIMITS)
    assert d.run.state == "WAITING" and not d.run.terminal
    assert "launch allowance" in d.run_start_rule and len(d.run.ignored) == 2


def test_a_group_only_an_earlier_run_left_is_reported_as_a_leftover():
    s = cat(T0 + 100, scope(exit_=outcome("1", T0 - 90000)),
            [group("legacy", "1", T0 - 90010), group("linux", None, T0 + 99)],
            Liveness(True, 4242, T0 - 10, T0 + 100, "process scan"))
    d = decide(s, LIMITS)
    assert [g.group for g in d.groups] == ["linux"] and d.groups[0].position == 1
    assert d.leftover_groups == ("legacy",)


def test_a_finished_log_that_grows_again_is_a_new_run_appending(tmp_path):
    layout = RunLayout("B", tmp_path / "log", tmp_path / "reports")
    layout.log_dir.mkdir()
    path = layout.run().log
    path.write_text("  (Run Finished)\n    ✖  1 of 1 failed (100%)   00:03   3   2   1   -   -\n", encoding="utf-8")
    old = path.stat().st_mtime - 3600
    os.utime(path, (old, old))
    reader = EvidenceReader(layout, categorized=False)
    first = reader.snapshot().parent.log
    assert first.finished_banner and first.summary == "failed" and first.restarted_at is None
    with path.open("a", encoding="utf-8") as fh:
        fh.write("  (Run Starting)\n  Running:  a.cy.js\n")
    again = reader.snapshot().parent.log
    assert not again.finished_banner and again.summary is None and again.restarted_at is not None
