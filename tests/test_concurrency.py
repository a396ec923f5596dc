"""Concurrency (issue 4, item 4): two watchers on one build, a cancel racing a post, a restart while
an older instance still holds the lock. Never two posts; never a post after the cancel marker.

The races are pinned with the crash-point hook (the watcher waits at a named point until the test
deletes the flag file), then repeated with random timing against a real simulated launcher.
"""

from __future__ import annotations

import random
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import pytest
from conftest import HOOK_TOKEN, World, world_env
from reliability_helpers import cli, finish, finished, no_token_left, read_json, status, wait_for, watch  # noqa: F401

from atvm_dev.receiver import Fault, MattermostDouble

pytestmark = pytest.mark.usefixtures("no_token_left")


def paused(world: World, build: str, point: str, flag: Path, *args: str) -> subprocess.Popen:
    env = {"ATVM_TEST_PAUSE_AT": point, "ATVM_TEST_PAUSE_FILE": str(flag)}
    proc = world.start_watcher("--build-name", build, *args, env=env)
    wait_for(lambda: flag.exists() or proc.poll() is not None, what=f"pause at {point}")
    assert proc.poll() is None, proc.communicate()
    return proc


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# --- two watchers ----------------------------------------------------------------------------------


def test_second_watcher_exits_6_and_touches_nothing(world, tmp_path):
    finished(world, "twice")
    first = paused(world, "twice", "intent-written", tmp_path / "flag")  # holds the lock, mid-delivery
    before = snapshot(world.build_dir("twice"))
    code, _, err = watch(world, "twice")
    assert code == 6 and "already watching" in err
    assert snapshot(world.build_dir("twice")) == before
    assert world.receiver.requests == []
    (tmp_path / "flag").unlink()
    code, _, err = finish(first)
    assert code == 0 and len(world.receiver.posts) == 1, err


def test_record_request_and_status_see_the_live_watcher(world, tmp_path):
    finished(world, "seen")
    first = paused(world, "seen", "before-intent", tmp_path / "flag")
    res = cli(world, "record-request", "--build-name", "seen")
    assert res.returncode == 6 and f"pid {first.pid}" in res.stdout
    assert status(world, "seen")["watcher"] == f"pid {first.pid}"
    (tmp_path / "flag").unlink()
    assert finish(first)[0] == 0


def test_watchers_started_together_post_once(world):
    """Five builds, two watchers each started at the same instant on a live run."""
    builds = [f"together-{i}" for i in range(5)]
    for b in builds:
        world.launch(b, "--outcome", "pass", "--step-seconds", "0.25")  # long enough to overlap for sure
    procs = {b: [world.start_watcher("--build-name", b) for _ in range(2)] for b in builds}
    for b, pair in procs.items():
        results = [finish(p) for p in pair]
        codes = sorted(code for code, _, _ in results)
        # On a loaded machine the second may start after the first finished: then it finds the build done.
        late = codes == [0, 0] and any("already finished" in err for _, _, err in results)
        assert codes == [0, 6] or late, (b, codes)
    per_build = [sum(b in p["text"] for p in world.receiver.posts) for b in builds]
    assert per_build == [1] * 5


def test_restart_while_the_old_instance_still_holds_the_lock(world, tmp_path):
    """systemd gave up on a stuck instance that is still alive: the new one must not post."""
    finished(world, "stuck")
    old = paused(world, "stuck", "response-received", tmp_path / "flag")  # the post exists already
    assert len(world.receiver.posts) == 1
    for _ in range(3):
        code, _, err = watch(world, "stuck")
        assert code == 6, err
    assert len(world.receiver.requests) == 1
    old.send_signal(signal.SIGKILL)
    finish(old)
    code, _, err = watch(world, "stuck")
    assert code == 5 and "uncertain" in err  # the lock is free; the interrupted attempt is not resent
    assert len(world.receiver.posts) == 1


# --- cancel racing a post ---------------------------------------------------------------------------


def test_cancel_before_the_intent_record_wins(world, tmp_path):
    finished(world, "cancel-early", groups=(("linux", True), ("windows", True)))
    proc = paused(world, "cancel-early", "before-intent", tmp_path / "flag", "--categorize")
    res = cli(world, "cancel", "--build-name", "cancel-early")
    assert res.returncode == 0 and "cancelled" in res.stdout
    (tmp_path / "flag").unlink()
    code, _, err = finish(proc)
    assert code == 0, err
    assert world.receiver.requests == []  # the marker was seen under the lock: nothing sent
    assert read_json(world.build_dir("cancel-early") / "state.json")["state"] == "CANCELLED"
    assert read_json(world.build_dir("cancel-early") / "subruns" / "windows" / "state.json")["state"] == "CANCELLED"


def test_cancel_during_the_request_waits_for_it_and_then_changes_nothing(world, tmp_path):
    """The post was already on the wire: cancel waits for the state lock, then finds the run finished."""
    finished(world, "cancel-late")
    proc = paused(world, "cancel-late", "intent-written", tmp_path / "flag")
    result = {}
    canceller = threading.Thread(target=lambda: result.update(res=cli(world, "cancel", "--build-name",
                                                                       "cancel-late")))
    canceller.start()
    time.sleep(0.3)
    assert canceller.is_alive()  # blocked on the lock the delivery holds
    (tmp_path / "flag").unlink()
    canceller.join(30)
    code, _, err = finish(proc)
    assert code == 0 and len(world.receiver.posts) == 1, err
    assert "already finished" in result["res"].stdout
    assert not (world.build_dir("cancel-late") / "cancelled.marker").exists()


def test_cancel_between_sub_runs_stops_the_rest(world, tmp_path):
    """linux is posted; windows is decided and recorded, then the cancel lands before its intent record."""
    finished(world, "cancel-mid", groups=(("linux", True), ("windows", False)))
    proc = paused(world, "cancel-mid", "before-intent@2", tmp_path / "flag", "--categorize")
    assert len(world.receiver.posts) == 1
    res = cli(world, "cancel", "--build-name", "cancel-mid")
    assert res.returncode == 0 and "cancelled build" in res.stdout
    (tmp_path / "flag").unlink()
    code, _, err = finish(proc)
    assert code == 0, err
    assert len(world.receiver.requests) == 1  # windows was never sent
    subruns = {s["group"]: (s["state"], s["delivery"]) for s in status(world, "cancel-mid")["subruns"]}
    assert subruns == {"linux": ("COMPLETED", "posted"), "windows": ("CANCELLED", "-")}
    assert read_json(world.build_dir("cancel-mid") / "state.json")["state"] == "CANCELLED"


def test_cancel_during_the_retry_back_off_wins(world):
    """Decided COMPLETED, first attempt rate-limited, waiting to retry: the cancel still wins."""
    finished(world, "cancel-backoff")
    world.receiver.queue(Fault.rate_limited(retry_after=3))
    proc = world.start_watcher("--build-name", "cancel-backoff")
    wait_for(lambda: len(world.receiver.requests) == 1, what="the rate-limited attempt")
    res = cli(world, "cancel", "--build-name", "cancel-backoff")
    assert res.returncode == 0 and "cancelled build" in res.stdout, res.stdout
    assert (world.build_dir("cancel-backoff") / "cancelled.marker").exists()
    code, _, err = finish(proc)
    assert code == 0, err
    assert world.receiver.posts == [] and len(world.receiver.requests) == 1
    assert read_json(world.build_dir("cancel-backoff") / "state.json")["state"] == "CANCELLED"
    assert status(world, "cancel-backoff")["delivery"] == "cancelled"  # not "not-sent": nothing is owed
    assert "finished: CANCELLED" in err


def test_cancel_of_a_post_left_owed_for_a_restart_wins(world):
    """Every attempt failed before the server acted (exit 75): the restart must not post after a cancel."""
    finished(world, "cancel-owed")
    world.receiver.queue(*[Fault.rate_limited(retry_after=0)] * 3)
    code, _, err = watch(world, "cancel-owed")
    assert code == 75, err
    res = cli(world, "cancel", "--build-name", "cancel-owed")
    assert "cancelled build" in res.stdout, res.stdout
    code, _, err = watch(world, "cancel-owed")
    assert code == 0, err
    assert world.receiver.posts == [] and len(world.receiver.requests) == 3


def test_cancel_after_the_post_says_so_and_changes_nothing(world):
    finished(world, "cancel-after")
    assert watch(world, "cancel-after")[0] == 0
    res = cli(world, "cancel", "--build-name", "cancel-after")
    assert "already finished (COMPLETED); posted: the run; nothing changed" in res.stdout, res.stdout
    assert not (world.build_dir("cancel-after") / "cancelled.marker").exists()


def _cancel_race(root: Path, seed: int) -> Optional[str]:
    rng = random.Random(seed)
    with MattermostDouble(hook_id=HOOK_TOKEN) as receiver:
        world = World(root, receiver, world_env(root, receiver.url))
        try:
            build = f"race-{seed}"
            world.launch(build, "--group", "linux:pass", "--group", "windows:fail", "--step-seconds", "0.04")
            proc = world.start_watcher("--build-name", build, "--categorize", env={"ATVM_POLL_SECONDS": "0.02"})
            time.sleep(rng.uniform(0.0, 1.0))
            res = world.cli("cancel", "--build-name", build)
            marker = (world.build_dir(build) / "cancelled.marker").exists()
            posts_at_cancel = len(receiver.posts)
            code, _, err = finish(proc)
            problems = []
            if res.returncode != 0 or code != 0:
                problems.append(f"cancel exit {res.returncode}, watcher exit {code}: {err[-300:]}")
            if marker and len(receiver.posts) != posts_at_cancel:
                problems.append(f"{len(receiver.posts) - posts_at_cancel} post(s) after the cancel marker")
            groups = [("sub-run linux" in p["text"], "sub-run windows" in p["text"]) for p in receiver.posts]
            if len(groups) != len(set(groups)):
                problems.append(f"duplicate post: {[p['text'] for p in receiver.posts]}")
            return f"race {seed}: " + "; ".join(problems) if problems else None
        finally:
            world.cleanup()


def test_cancel_at_random_moments_never_posts_after_the_marker(tmp_path):
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda s: _cancel_race(tmp_path / f"r{s}", s), range(12)))
    assert [r for r in results if r] == []
