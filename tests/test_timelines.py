"""Reruns and late starts: a watcher decides on this run's evidence, never an earlier run's, whenever it starts.

``test_generated_timelines`` plays random but plausible timelines (tests/timelines.py) with real
watchers, real launchers and real files, several at once (the watchers mostly sleep), and checks each
against the rules. Reproducible: the seed is fixed unless ATVM_TIMELINE_SEED is set, and
ATVM_TIMELINE_TRIALS sets how many are played. The named tests below pin each known class of mistake.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from timelines import Played, Player, Timeline, check, generate

SEED = int(os.environ.get("ATVM_TIMELINE_SEED", "1817"))
TRIALS = int(os.environ.get("ATVM_TIMELINE_TRIALS", "36"))
WORKERS = 6


def _play(tmp_path: Path, receiver, tl: Timeline) -> Played:
    return Player(tmp_path, receiver.url).play(tl, receiver)


def _assert_obeys(p: Played) -> None:
    problems = check(p)
    assert not problems, f"{p.timeline.describe()}\n" + "\n".join(problems) + f"\n--- watcher log ---\n{p.err[-4000:]}"


def test_generated_timelines(tmp_path, receiver):
    timelines = generate(SEED, TRIALS)
    player = Player(tmp_path, receiver.url)

    def one(tl: Timeline):
        try:
            return tl, check(player.play(tl, receiver)), ""
        except Exception as exc:  # a trial that could not be played is a failure too, with its timeline
            return tl, [f"{type(exc).__name__}: {exc}"], ""

    with ThreadPoolExecutor(WORKERS) as pool:
        results = list(pool.map(one, timelines))
    failed = [(tl, problems) for tl, problems, _ in results if problems]
    limited = sum(1 for tl in timelines if tl.shares_an_earlier_log)
    ambiguous = sum(1 for tl in timelines if not tl.decidable()) - limited
    report = "\n".join(f"{tl.describe()}\n    " + "\n    ".join(problems) for tl, problems in failed)
    print(f"seed {SEED}: {TRIALS} timelines; {ambiguous} ambiguous by the rules, {limited} appended to an earlier "
          f"run's finished log (the never-rules only); {len(failed)} broke a rule")
    assert not failed, (f"seed {SEED} ({TRIALS} timelines, {ambiguous} ambiguous by the rules, {limited} appending "
                        f"to an earlier run's log): {len(failed)} broke a rule (ATVM_TIMELINE_SEED={SEED} "
                        f"reproduces):\n{report}")


def _cat(name: str, groups, **kw) -> Timeline:
    return Timeline(name=name, categorized=True, groups=tuple(groups), **kw)


def _plain(name: str, passes: bool, **kw) -> Timeline:
    return Timeline(name=name, categorized=False, groups=(("", passes),), **kw)


def test_watcher_first_plain_rerun_posts_todays_completed_never_yesterdays_failed(tmp_path, receiver):
    """1 (plain). Yesterday's FAILED log, exit file and reports are on disk; the watcher starts first; no
    launcher is visible and today's launcher appends to the same log: yesterday's exit file is where
    today's run began (rule 3)."""
    tl = _plain("first-plain", True, earlier=(("", False),), earlier_renamed=True, order="before",
                visible="hidden", log_mode="append")
    p = _play(tmp_path, receiver, tl)
    _assert_obeys(p)
    (post,) = p.posts
    assert "COMPLETED" in post["text"] and "Failed tests" not in json.dumps(post)


def test_watcher_first_categorized_rerun_never_posts_yesterdays_groups(tmp_path, receiver):
    """1 (categorized). Yesterday's failed linux and legacy groups are on disk: today's linux and windows
    are posted, numbered 1 and 2; yesterday's legacy group is never posted nor counted."""
    tl = _cat("first-cat", [("linux", True), ("windows", True)], earlier=(("linux", False), ("legacy", False)),
              order="before", visible="hidden", log_mode="append", outcome="status")
    p = _play(tmp_path, receiver, tl)
    _assert_obeys(p)
    assert [post["text"].split("sub-run ")[1] for post in p.posts] == ["linux (1)", "windows (2)"]
    assert all("COMPLETED" in post["text"] for post in p.posts)
    assert p.state["groups"] == ["linux", "windows"] and p.state["state"] == "COMPLETED"


def test_late_watcher_keeps_the_runs_own_older_files(tmp_path, receiver):
    """2. The watcher starts hours into the run, no launcher visible: the first group, which failed and ran
    far longer than ATVM_HUNG_AFTER_SECONDS (its files hours old), is still posted as FAILED, #1."""
    tl = _cat("late-cat", [("linux", False), ("windows", True)], order="late-running", visible="hidden")
    p = _play(tmp_path, receiver, tl)
    _assert_obeys(p)
    assert [post["text"].split("sub-run ")[1] for post in p.posts] == ["linux (1)", "windows (2)"]
    assert "FAILED" in p.posts[0]["text"] and p.state["state"] == "FAILED"


def test_late_watcher_early_failing_report_fails_the_run(tmp_path, receiver):
    """2 (plain). Started after a failing run ended, within the launch allowance, no launcher visible: the
    failing report written first still makes the run FAILED."""
    tl = _plain("late-plain", False, order="after-finish", visible="hidden", outcome="none")
    p = _play(tmp_path, receiver, tl)
    _assert_obeys(p)
    (post,) = p.posts
    assert "FAILED" in post["text"]


def test_an_earlier_runs_group_folder_is_never_a_subrun(tmp_path, receiver):
    """3. Yesterday's bsd and legacy groups are on disk; today runs windows then linux: positions count
    only today's groups, and state.json lists only them."""
    tl = _cat("groups-cat", [("windows", False), ("linux", True)], earlier=(("bsd", False), ("legacy", False)),
              order="after-seconds", visible="argv")
    p = _play(tmp_path, receiver, tl)
    _assert_obeys(p)
    assert [post["text"].split("sub-run ")[1] for post in p.posts] == ["windows (1)", "linux (2)"]
    assert p.state["groups"] == ["windows", "linux"]
    assert not list((tmp_path / tl.name / "state" / f"e2e-{tl.name}" / "subruns").glob("legacy"))


def test_categorized_parent_status_wins(tmp_path, receiver):
    """4. The launcher's .status for the parent says COMPLETED although a group failed: the group's FAILED
    is posted, and state.json records the parent as the status file says, never FAILED."""
    tl = _cat("status-cat", [("linux", False), ("windows", True)], order="after-finish", visible="argv",
              outcome="none")
    player = Player(tmp_path, receiver.url)
    root = tmp_path / tl.name
    status = root / "log" / f"e2e-{tl.name}.status"
    real_run = player._run

    def run_then_status(tl_, env, build, layout, procs, played, receiver_):
        # The launcher's own word for the parent, written after it ran and before the watcher starts.
        launcher = player._launcher(tl_, env, build)
        launcher.wait(60)
        status.write_text("COMPLETED\n", encoding="utf-8")
        player._launcher = lambda *a: launcher  # already ran
        real_run(replace(tl_, order="after-finish"), env, build, layout, procs, played, receiver_)

    player._run = run_then_status
    p = player.play(tl, receiver)
    assert [post["text"].split("sub-run ")[1] for post in p.posts] == ["linux (1)", "windows (2)"]
    assert "FAILED" in p.posts[0]["text"] and "COMPLETED" in p.posts[1]["text"]
    assert (p.state["state"], p.state["rule"]) == ("COMPLETED", "status-file"), p.state


def test_run_finished_hours_before_its_watcher_waits_and_inspect_says_why(tmp_path, receiver):
    """Truly ambiguous: the run ended three hours before its watcher started (longer than the launch
    allowance) and no launcher or pid file was seen. The watcher posts nothing: it waits for this run,
    inspect says so, and the start timeout ends it UNKNOWN."""
    tl = _plain("hours-plain", True, order="after-finish-hours", visible="hidden")
    p = _play(tmp_path, receiver, tl)
    _assert_obeys(p)
    assert p.posts == [] and p.state["state"] == "UNKNOWN"
    assert "an earlier run's" in p.inspect["decision"]["reason"]
    assert any("older than this run's start" in line for line in p.inspect["ignored"])


def test_restarted_watcher_keeps_telling_the_runs_apart(tmp_path, receiver):
    """A watcher killed mid-run (SIGKILL) and started again: the second one neither loses this run's
    evidence nor takes yesterday's, and the run is posted once."""
    tl = _plain("restart-plain", True, earlier=(("", False),), earlier_outcome="exit", earlier_renamed=True,
                order="before", visible="hidden", log_mode="truncate", restart=True)
    p = _play(tmp_path, receiver, tl)
    _assert_obeys(p)
    assert len(p.posts) == 1 and "COMPLETED" in p.posts[0]["text"]


def test_cancel_mid_run_never_posts_after_it(tmp_path, receiver):
    tl = _cat("cancel-cat", [("linux", True), ("windows", True), ("bsd", True)], order="before", visible="argv",
              cancel=True)
    p = _play(tmp_path, receiver, tl)
    _assert_obeys(p)
    assert p.state["state"] == "CANCELLED"
