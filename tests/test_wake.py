"""Waking on change (wake.py): inotify watches, the launcher's pidfd, deadlines, and the polling fallback.

The kernel queues an inotify event before the system call that caused it returns, so what a change
raises is read here at once, without waiting: these tests hold no timing assumption. The last test runs
the same scenarios with file events and with ATVM_WAKE=poll and finds the same states and posts.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from atvm_watcher import wake
from atvm_watcher.evidence import EvidenceReader
from atvm_watcher.layout import RunLayout
from atvm_watcher.stop import StopRequest
from atvm_watcher.vocab import Liveness, LogFacts, OutcomeFile, ScopeEvidence, Snapshot
from atvm_watcher.wake import Targets, Waiter, Watches

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify and pidfd are Linux's")


@pytest.fixture
def watches():
    w = Watches(wake.Inotify())
    yield w
    w.inotify.close()


def changed(w: Watches) -> bool:
    return w.relevant(w.inotify.read())


def test_a_write_to_the_log_wakes_and_another_runs_file_in_the_same_folder_does_not(tmp_path, watches):
    log, other = tmp_path / "B.log", tmp_path / "C.log"
    log.write_text("start\n")
    other.write_text("start\n")
    watches.arm(Targets(files=(str(log), str(tmp_path / "B.exit"))))
    with other.open("a") as fh:
        fh.write("another run's line\n")
    (tmp_path / "C.exit").write_text("0\n")
    assert not changed(watches)
    with log.open("a") as fh:
        fh.write("(Run Finished)\n")
    assert changed(watches)
    (tmp_path / "B.exit").write_text("0\n")  # an outcome file appearing, seen through its folder
    assert changed(watches)


def test_a_folder_that_appears_later_is_watched_through_its_parent_then_itself(tmp_path, watches):
    reports = tmp_path / "reports" / "B"
    targets = Targets(trees=(str(reports),))
    assert watches.arm(targets)
    (tmp_path / "reports").mkdir()
    assert changed(watches)
    assert watches.arm(targets)  # a new watch: the parent now, for the name "B"
    reports.mkdir()
    assert changed(watches)
    assert watches.arm(targets)  # a new watch: the caller looks again at once (what came before raised nothing)
    (reports / "mochawesome.json").write_text("{")
    assert changed(watches)
    assert not watches.arm(targets)  # a file, not a folder: nothing new to watch, still relevant above


def test_a_rotated_log_is_watched_anew_and_the_old_file_no_more(tmp_path, watches):
    log = tmp_path / "B.log"
    log.write_text("old run\n")
    targets = Targets(files=(str(log),))
    watches.arm(targets)
    log.rename(tmp_path / "B.log.1")
    log.write_text("new run\n")
    assert changed(watches)
    assert watches.arm(targets)  # another inode at the same path
    with (tmp_path / "B.log.1").open("a") as fh:
        fh.write("late line of the old file\n")
    assert not changed(watches)
    with log.open("a") as fh:
        fh.write("(Run Starting)\n")
    assert changed(watches)


def test_a_deleted_folder_is_rearmed_when_it_comes_back(tmp_path, watches):
    reports = tmp_path / "B"
    reports.mkdir()
    targets = Targets(trees=(str(reports),))
    watches.arm(targets)
    reports.rmdir()
    assert changed(watches)
    watches.arm(targets)
    reports.mkdir()
    assert changed(watches)
    assert watches.arm(targets)
    (reports / "junit.xml").write_text("<testsuite/>")
    assert changed(watches)


def test_lost_events_ask_for_a_look_at_everything(tmp_path):
    waiter = Waiter(StopRequest(), 1.0)
    try:
        assert waiter.on_events
        assert waiter.watches.relevant([(-1, wake.IN_Q_OVERFLOW, "")])
        assert waiter.lost_events()
        assert not waiter.looked(Targets()) and not waiter.lost_events()
    finally:
        waiter.close()


def test_events_name_the_report_files_written_in_place_for_the_next_look(tmp_path):
    reports = tmp_path / "reports" / "B"
    (reports / "deep").mkdir(parents=True)
    old = reports / "deep" / "a.json"
    old.write_text("{}")
    waiter = Waiter(StopRequest(), 1.0)
    try:
        waiter.looked(Targets(trees=(str(reports), str(reports / "deep"))))
        assert waiter.reports_touched() == ()
        with old.open("a") as fh:  # rewritten in place: its folder's mtime does not change
            fh.write(" ")
        assert waiter.watches.relevant(waiter.watches.inotify.read())
        assert waiter.reports_touched() == (str(old),)
        assert waiter.reports_touched() == ()  # handed over once
    finally:
        waiter.close()


def test_too_many_named_reports_ask_for_a_look_at_everything():
    waiter = Waiter(StopRequest(), 1.0)
    try:
        waiter.watches.tree_paths = {7: "/r"}
        waiter.watches.names = {7: None}
        events = [(7, wake.IN_MODIFY, f"r{i}.json") for i in range(wake.TOUCHED_MOST + 1)]
        assert waiter.watches.relevant(events)
        assert waiter.lost_events()
        assert waiter.reports_touched() == () and not waiter.lost_events()
    finally:
        waiter.close()


class RefusingInotify:
    fd = -1

    def add(self, path, mask):
        raise OSError(errno.ENOSPC, "inotify_add_watch: No space left on device")

    def close(self):
        pass


def test_the_watch_limit_falls_back_to_polling(tmp_path):
    waiter = Waiter(StopRequest(), 0.5)
    waiter.close()
    waiter.watches = Watches(RefusingInotify())
    assert waiter.looked(Targets(files=(str(tmp_path / "B.log"),)))  # look again at once, then poll
    assert not waiter.on_events and "No space left" in waiter.describe() and "polling every 0.5s" in waiter.describe()


def test_poll_mode_uses_no_inotify():
    waiter = Waiter(StopRequest(), 1.0, mode="poll")
    assert not waiter.on_events and "ATVM_WAKE=poll" in waiter.describe()
    assert not waiter.looked(Targets(files=("/nonexistent/B.log",)))


class SpyStop(StopRequest):
    """A StopRequest that remembers which descriptors each wait found ready."""

    def __init__(self) -> None:
        super().__init__()
        self.ready: List[List[int]] = []

    def wait(self, seconds, fds=()):
        got = super().wait(seconds, fds)
        self.ready.append(got)
        return got


def test_the_waiter_wakes_on_a_change_not_on_its_timeout(tmp_path):
    log = tmp_path / "B.log"
    log.write_text("")
    stop = SpyStop()
    waiter = Waiter(stop, 1.0)
    try:
        waiter.looked(Targets(files=(str(log),)))
        with log.open("a") as fh:
            fh.write("line\n")
        assert waiter.wait(300)
        assert stop.ready[0] == [waiter.watches.inotify.fd]
    finally:
        waiter.close()


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="no pidfd (Python 3.9 on Linux 5.3 or newer)")
def test_the_waiter_wakes_when_the_launcher_exits(tmp_path):
    launcher = subprocess.Popen(["sleep", "300"])
    stop = SpyStop()
    now = [100.0]
    waiter = Waiter(stop, 1.0, clock=lambda: now[0])
    try:
        waiter.looked(Targets())
        waiter.follow(launcher.pid, lambda: launcher.poll() is None)
        pidfd = waiter.pidfd
        assert pidfd >= 0 and not waiter.launcher_polled
        launcher.send_signal(signal.SIGKILL)
        launcher.wait()
        now[0] = 160.0
        assert waiter.wait(300)
        assert stop.ready[0] == [pidfd]
        assert waiter.pid is None and waiter.seen_alive == (launcher.pid, 160.0)  # alive until it ended
    finally:
        waiter.close()


def test_a_launcher_not_verified_after_the_open_is_not_followed_by_pidfd(tmp_path):
    sleeper = subprocess.Popen(["sleep", "300"])
    waiter = Waiter(StopRequest(), 1.0)
    try:
        waiter.follow(sleeper.pid, lambda: False)  # the pid was reused: not our launcher
        assert waiter.pidfd < 0 and waiter.launcher_polled
    finally:
        waiter.close()
        sleeper.kill()
        sleeper.wait()


def test_the_reader_keeps_the_launcher_alive_until_the_waiter_saw_it_end(tmp_path):
    layout = RunLayout("B", tmp_path / "log", tmp_path / "reports")
    (tmp_path / "log").mkdir()
    sleeper = subprocess.Popen(["sleep", "300"])
    layout.pid_file().write_text(f"{sleeper.pid}\n")
    clock = type("C", (), {"mono": staticmethod(lambda: 50.0), "wall": staticmethod(time.time)})()
    reader = EvidenceReader(layout, False, clock)
    assert reader.snapshot().launcher.alive
    sleeper.kill()
    sleeper.wait()
    reader.launcher_alive_until(sleeper.pid, 80.0)
    gone = reader.snapshot().launcher
    assert not gone.alive and gone.last_seen_alive == 80.0
    reader.launcher_alive_until(sleeper.pid + 1, 90.0)  # another process: ignored
    assert reader.snapshot().launcher.last_seen_alive == 80.0


def test_a_log_line_the_decision_does_not_read_needs_no_look(tmp_path):
    layout = RunLayout("B", tmp_path / "log", tmp_path / "reports")
    log = layout.run().log
    log.parent.mkdir()
    log.write_text("  (Run Starting)\n")
    reader = EvidenceReader(layout, False)
    reader.snapshot()
    waiter = Waiter(StopRequest(), 1.0)
    try:
        waiter.looked(Targets(*reader.watch_targets()))
        with log.open("a") as fh:
            fh.write("  Running:  a.cy.js  (1 of 3)\n")
        assert waiter.wait(300) and waiter.logs_only
        assert reader.log_news()  # the first change the watcher sees makes the log this run's: a look
        reader.snapshot()
        with log.open("a") as fh:
            fh.write("    ✓ discovers the source VM (1532ms)\n")
        assert waiter.wait(300) and waiter.logs_only
        assert not reader.log_news()  # read, and nothing the decision reads changed: no look
        with log.open("a") as fh:
            fh.write("  (Run Finished)\n")
        assert waiter.wait(300) and waiter.logs_only
        assert reader.log_news()
        layout.run().exit.write_text("0\n")
        assert waiter.wait(300) and not waiter.logs_only  # an outcome file: always a look
    finally:
        waiter.close()


def test_report_writes_are_gathered_into_one_look_and_an_outcome_file_is_not_kept_waiting(tmp_path):
    reports, outcome = tmp_path / "reports", tmp_path / "B.exit"
    reports.mkdir()
    stop = SpyStop()
    waiter = Waiter(stop, 1.0)
    try:
        waiter.looked(Targets(files=(str(outcome),), trees=(str(reports),)))
        (reports / "mochawesome.json").write_text("{")
        assert waiter.wait(300) and not waiter.logs_only
        assert len(stop.ready) >= 2 and stop.ready[-1] == []  # woken, then gathered until the short window ended
        stop.ready.clear()
        (reports / "mochawesome_001.json").write_text("{")
        outcome.write_text("0\n")
        assert waiter.wait(300)
        assert stop.ready[-1] == [waiter.watches.inotify.fd]  # the outcome file ended the gathering
    finally:
        waiter.close()


def test_watch_targets_name_the_runs_files_and_report_folders(tmp_path):
    layout = RunLayout("B", tmp_path / "log", tmp_path / "reports")
    (tmp_path / "reports" / "B" / "sub").mkdir(parents=True)
    reader = EvidenceReader(layout, False)
    reader.snapshot()
    files, trees, folders, logs = reader.watch_targets()
    assert set(files) == {str(tmp_path / "log" / f"B.{x}") for x in ("pid", "log", "status", "exit")}
    assert logs == (str(tmp_path / "log" / "B.log"),)
    assert set(trees) == {str(tmp_path / "reports" / "B"), str(tmp_path / "reports" / "B" / "sub")}
    assert folders == ()
    cat = EvidenceReader(layout, True)
    assert str(tmp_path / "log" / "B") in cat.watch_targets()[2]


# --- deadlines ---------------------------------------------------------------------------------------


def snap(alive: bool, log_at: float, now: float, last_seen: float = None, started: float = 0.0) -> Snapshot:
    log = LogFacts("B.log", 10, 1.0, changed_at=log_at)
    exit_ = OutcomeFile("B.exit", 1.0, "", changed_at=log_at)
    return Snapshot("B", False, now, started, Liveness(alive, 1, None, last_seen, "pid file"),
                    ScopeEvidence(None, log, (), None, exit_), wall_at=now)


def test_the_next_deadline_is_the_nearest_limit_after_a_time_the_rules_measure_from():
    spans = (2.0, 60.0, 3600.0, 1800.0)
    assert wake.next_deadline(snap(True, log_at=100.0, now=101.0), spans) == 102.0  # settle after the log's change
    assert wake.next_deadline(snap(True, log_at=100.0, now=103.0), spans) == 160.0
    # launcher gone: the grace runs from when it was last seen alive
    assert wake.next_deadline(snap(False, log_at=10.0, now=103.0, last_seen=90.0), spans) == 150.0
    # alive: when it was last seen (now) is no deadline, else it would wake every settle time
    assert wake.next_deadline(snap(True, log_at=10.0, now=4000.0, last_seen=4000.0), spans) is None
    assert wake.timeout_until(None, 5.0) == wake.SAFETY_SECONDS
    assert wake.timeout_until(5.5, 5.0) == pytest.approx(0.5 + wake.DEADLINE_MARGIN)
    assert wake.timeout_until(500.0, 5.0) == wake.SAFETY_SECONDS


# --- the same decisions with events and with polling ------------------------------------------------

SCENARIOS: Dict[str, Tuple[Tuple[str, ...], Tuple[str, ...], Dict[str, str]]] = {
    # name: (launcher arguments, watcher arguments, settings)
    "completed": (("--outcome", "pass", "--step-seconds", "0.05"), (), {}),
    "failed-status-file": (("--outcome", "fail", "--outcome-file", "status", "--step-seconds", "0.05"), (), {}),
    "categorized": (("--group", "linux:pass", "--group", "windows:fail", "--step-seconds", "0.05"),
                    ("--categorize",), {}),
    "killed": (("--die", "--step-seconds", "0.05"), (), {}),
    "hung": (("--hang",), (), {"ATVM_HUNG_AFTER_SECONDS": "1"}),
    "never-started": ((), (), {"ATVM_START_TIMEOUT_SECONDS": "0.5"}),
    "pid-file-no-outcome": (("--pid-file", "--outcome-file", "none", "--outcome", "fail", "--step-seconds", "0.05"),
                            (), {}),
}



@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_polling_decides_as_file_events_do(world, name):
    launcher_args, watcher_args, env = SCENARIOS[name]
    events = world.outcome(f"wake-{name}-events", launcher_args, watcher_args, env, timeout=60)
    polled = world.outcome(f"wake-{name}-poll", launcher_args, watcher_args, {**env, "ATVM_WAKE": "poll"},
                           timeout=60)
    assert "waiting on file events (inotify)" in events[3]
    assert "polling every" in polled[3] and "ATVM_WAKE=poll" in polled[3]
    assert events[:3] == polled[:3], (events[3], polled[3])
    assert events[0] == 0 and events[1]


def test_stop_request_wait_returns_the_ready_descriptors(tmp_path):
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, b"x")
        assert StopRequest().wait(300, [read_end]) == [read_end]
    finally:
        os.close(read_end)
        os.close(write_end)


def test_every_runtime_wait_goes_through_the_stop_request():
    """No bare time.sleep in the watch loop: a stop must end any wait within milliseconds."""
    source = Path(wake.__file__).read_text() + (Path(wake.__file__).parent / "commands" / "watch.py").read_text()
    assert "time.sleep" not in source
