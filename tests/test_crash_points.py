"""Crash points: SIGKILL the watcher between deciding a terminal state and recording its delivery,
restart it as systemd would, and check that no post is ever made twice (issue 4, item 1).

The points are made reachable deterministically by atvm_dev/atvm_run_watcher_crashpoint.py, which
arms delivery.checkpoint (ATVM_TEST_PAUSE_AT / ATVM_TEST_PAUSE_FILE: the watcher writes the flag file
and waits there);
"in flight" is reached for real: the watcher is let go at the intent record and killed once the
loopback receiver holds its request, which the receiver is told to answer slowly or never.

Documented outcome per point (RELIABILITY.md), at-most-once delivery (the default):
  before-intent        state recorded, no intent yet   -> restart sends it: posted once
  intent-written       intent durable, nothing sent    -> delivery-uncertain, no post, exit 5
  in-flight-unread     request sent, server never acts -> delivery-uncertain, no post, exit 5
  in-flight-processed  request sent, server posts late -> delivery-uncertain, one post, exit 5
  in-flight-answered   server posted, answer delayed   -> delivery-uncertain, one post, exit 5
  response-received    200 ok read, marker not durable -> delivery-uncertain, one post, exit 5
  marker-written       marker durable, record not yet  -> posted once, exit 0
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest
from conftest import HOOK_TOKEN, WATCHER, World, world_env
from reliability_helpers import assert_no_token, finish, finished, status, token_leaks, wait_for, watch

from atvm_dev.receiver import Fault, MattermostDouble
from atvm_watcher.commands.status import build_status
from atvm_watcher.statedir import BuildDir

SEED = int(os.environ.get("ATVM_CRASH_SEED", "20261126"))
TRIALS = int(os.environ.get("ATVM_CRASH_TRIALS", "100"))
WORKERS = 6  # the watchers mostly sleep in polls: more workers than cores is fine

HOOK_POINTS = ("before-intent", "intent-written", "response-received", "marker-written")
IN_FLIGHT = {  # let go at the intent record, killed once the receiver holds the request
    "in-flight-unread": (Fault.hang_before_post, False),
    "in-flight-processed": (lambda: Fault.delay(0.3), True),  # post created after the kill
    "in-flight-answered": (lambda: Fault.post_then_delay(10.0), True),
}
POINTS = HOOK_POINTS + tuple(IN_FLIGHT)
# point -> (does the server end up with a post, the scope's settled delivery after a restart)
OUTCOME = {
    "before-intent": (False, "unsent"),
    "intent-written": (False, "uncertain"),
    "in-flight-unread": (False, "uncertain"),
    "in-flight-processed": (True, "uncertain"),
    "in-flight-answered": (True, "uncertain"),
    "response-received": (True, "uncertain"),
    "marker-written": (True, "posted"),
}
SHOWN = {"posted": "posted", "uncertain": "DELIVERY-UNCERTAIN"}
TRIAL_ENV = {"ATVM_POLL_SECONDS": "0.05", "ATVM_POST_TIMEOUT_SECONDS": "20"}


@pytest.fixture(scope="module", autouse=True)
def compiled_once(tmp_path_factory):
    """Hundreds of watcher starts: let them share compiled bytecode (kept out of the checkout)."""
    TRIAL_ENV.update(PYTHONDONTWRITEBYTECODE="", PYTHONPYCACHEPREFIX=str(tmp_path_factory.mktemp("pycache")))
    yield


def scope_of_post(post: dict) -> str:
    """The sub-run a post is about ('' for a plain run), read from its Sub-run field."""
    for attachment in post.get("attachments") or []:
        for f in attachment.get("fields") or []:
            if f.get("title") == "Sub-run":
                return re.sub(r"`([^`]*)`.*", r"\1", f.get("value", ""))
    return ""


def posts_by_scope(receiver: MattermostDouble) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for post in receiver.posts:
        counts[scope_of_post(post)] = counts.get(scope_of_post(post), 0) + 1
    return counts


@dataclass
class Trial:
    """One randomised scenario: a finished run, crashes at chosen points, restarts, then checks."""

    number: int
    world: World
    categorized: bool
    crashes: List[str]
    rng: random.Random
    build: str = ""
    scopes: Dict[str, str] = field(default_factory=dict)  # scope -> unsent | uncertain | posted
    posts: Dict[str, int] = field(default_factory=dict)  # scope -> posts the model expects
    story: List[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.build = f"crash-{self.number:03d}"
        groups = (("linux", self.rng.random() < 0.7), ("windows", self.rng.random() < 0.5))
        names = [g for g, _ in groups] if self.categorized else [""]
        self.scopes = {s: "unsent" for s in names}
        self.posts = {s: 0 for s in names}
        finished(self.world, self.build, self.rng.random() < 0.6, groups if self.categorized else ())

    @property
    def flag(self) -> Path:
        return self.world.root / "paused.flag"

    def args(self) -> Tuple[str, ...]:
        return ("--build-name", self.build) + (("--categorize",) if self.categorized else ())

    def scope_dir(self, scope: str) -> Path:
        base = self.world.build_dir(self.build)
        return base / "subruns" / scope if scope else base

    def crash_once(self, point: str) -> None:
        unsent = [s for s, st in self.scopes.items() if st == "unsent"]
        nth = self.rng.randint(1, len(unsent))
        hook = point if point in HOOK_POINTS else "intent-written"
        env = {**TRIAL_ENV, "ATVM_TEST_PAUSE_AT": f"{hook}@{nth}", "ATVM_TEST_PAUSE_FILE": str(self.flag)}
        proc = self.world.start_watcher(*self.args(), env=env)
        wait_for(lambda: self.flag.exists() or proc.poll() is not None, what=f"pause at {hook}@{nth}")
        assert proc.poll() is None, f"watcher exited ({proc.returncode}) before reaching {hook}@{nth}"
        wait_for(lambda: self.flag.read_text().endswith("\n"), what="the flag file's content")
        scope = self._paused_scope()
        if point in IN_FLIGHT:
            self._into_flight(point)
        proc.send_signal(signal.SIGKILL)
        finish(proc)
        self.flag.unlink(missing_ok=True)
        self._settle_others(scope)
        made_post, settled = OUTCOME[point]
        self.scopes[scope] = settled
        self.posts[scope] += int(made_post)
        self.story.append(f"kill at {point}@{nth} ({scope or 'run'})")

    def _paused_scope(self) -> str:
        path = Path(self.flag.read_text().split(" ", 1)[1].strip())
        return path.name if path.parent.name == "subruns" else ""

    def _into_flight(self, point: str) -> None:
        make_fault, posts = IN_FLIGHT[point]
        before_requests, before_posts = len(self.world.receiver.requests), len(self.world.receiver.posts)
        self.world.receiver.queue(make_fault())
        self.flag.unlink()
        wait_for(lambda: len(self.world.receiver.requests) > before_requests, what="the request in flight")
        if point == "in-flight-answered":
            wait_for(lambda: len(self.world.receiver.posts) > before_posts, what="the post before the answer")

    def _settle_others(self, paused: str) -> None:
        """Scopes delivered earlier by the same process (the pause was at the n-th delivery)."""
        for scope, st in self.scopes.items():
            if scope != paused and st == "unsent" and (self.scope_dir(scope) / "posted.marker").exists():
                self.scopes[scope], self.posts[scope] = "posted", self.posts[scope] + 1

    def run(self) -> Optional[str]:
        for point in self.crashes:
            if "unsent" not in self.scopes.values():
                break
            self.crash_once(point)
        for scope, st in self.scopes.items():
            if st == "unsent":
                self.scopes[scope], self.posts[scope] = "posted", self.posts[scope] + 1
        code, _, err = watch(self.world, *self.args()[1:], env=TRIAL_ENV)
        return self.check(code, err)

    def check(self, code: int, err: str) -> Optional[str]:
        expected_code = 5 if "uncertain" in self.scopes.values() else 0
        total = sum(self.posts.values())
        self.world.receiver.wait_for_posts(total, timeout=10)
        got = posts_by_scope(self.world.receiver)
        problems = []
        if any(n > 1 for n in got.values()):
            problems.append(f"DUPLICATE POST: {got}")
        if got != {s: n for s, n in self.posts.items() if n}:
            problems.append(f"posts {got}, expected {self.posts}")
        if code != expected_code:
            problems.append(f"exit {code}, expected {expected_code}: {err[-600:]}")
        problems += self._check_status()
        if self.number % 3 == 0:  # an operator restarts it (a third of the trials: each start costs CPU)
            again, _, _ = watch(self.world, *self.args()[1:], env=TRIAL_ENV)
            if again != 0 or posts_by_scope(self.world.receiver) != got:  # a finished build is final
                problems.append(f"a further restart exited {again} / posted {posts_by_scope(self.world.receiver)}")
        if problems:
            return f"trial {self.number} ({'categorized' if self.categorized else 'plain'}; " \
                   f"{', '.join(self.story)}): " + "; ".join(problems)
        return None

    def _check_status(self) -> List[str]:
        shown = build_status(BuildDir.of(self.world.state_root, self.build))  # what `status --json` prints
        if self.categorized:
            actual = {s["group"]: s["delivery"] for s in shown["subruns"]}
        else:
            actual = {"": shown["delivery"]}
        expected = {s: SHOWN[st] for s, st in self.scopes.items()}
        return [] if actual == expected else [f"status shows {actual}, expected {expected}"]


class SlowReceiver(MattermostDouble):
    """Takes a while before it creates a post and answers: the issue's slow loopback receiver."""

    def __init__(self, delay: float) -> None:
        super().__init__(hook_id=HOOK_TOKEN)
        self.delay = delay

    def process(self, *args, **kwargs):
        time.sleep(self.delay)
        return super().process(*args, **kwargs)


def _run_trial(root: Path, number: int, rng: random.Random) -> Optional[str]:
    categorized = rng.random() < 0.5
    crashes = [rng.choice(POINTS) for _ in range(rng.randint(1, 3))]
    with SlowReceiver(rng.uniform(0.02, 0.15)) as receiver:
        world = World(root, receiver, world_env(root, receiver.url))
        try:
            return Trial(number, world, categorized, crashes, rng).run()
        except AssertionError as exc:
            return f"trial {number}: {exc}"
        finally:
            world.cleanup()


def test_randomised_crash_points_never_post_twice(tmp_path):
    master = random.Random(SEED)
    seeds = [master.randrange(2**32) for _ in range(TRIALS)]
    with ThreadPoolExecutor(WORKERS) as pool:
        results = list(pool.map(lambda i: _run_trial(tmp_path / f"t{i:03d}", i, random.Random(seeds[i])),
                                range(TRIALS)))
    failures = [r for r in results if r]
    assert not failures, f"seed {SEED}: {len(failures)} of {TRIALS} trials failed:\n" + "\n".join(failures[:10])
    assert token_leaks(tmp_path) == []


# --- each point once, spelled out ---------------------------------------------------------------


def _crash_at(world: World, build: str, point: str, flag: Path, *args: str) -> None:
    env = {"ATVM_TEST_PAUSE_AT": point, "ATVM_TEST_PAUSE_FILE": str(flag)}
    proc = world.start_watcher("--build-name", build, *args, env=env)
    wait_for(lambda: flag.exists() or proc.poll() is not None, what=f"pause at {point}")
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGKILL)
    finish(proc)
    flag.unlink()


@pytest.mark.parametrize("point", HOOK_POINTS)
def test_each_crash_point_then_restart(world, tmp_path, point):
    finished(world, "one-point")
    _crash_at(world, "one-point", point, tmp_path / "flag")
    made_post, settled = OUTCOME[point]
    assert len(world.receiver.posts) == int(made_post)
    code, _, err = watch(world, "one-point")
    shown = status(world, "one-point")
    if settled == "unsent":
        assert (code, len(world.receiver.posts), shown["delivery"]) == (0, 1, "posted"), err
    elif settled == "uncertain":
        assert (code, shown["delivery"]) == (5, "DELIVERY-UNCERTAIN"), err
        assert len(world.receiver.posts) == int(made_post)
        assert "uncertain" in err and "at-least-once" in err  # says what, and how to choose otherwise
    else:
        assert (code, len(world.receiver.posts), shown["delivery"]) == (0, 1, "posted"), err
    assert token_leaks(tmp_path) == []


def test_kill_mid_state_write_leaves_old_or_new_file(world, tmp_path):
    """A kill during the atomic write leaves at most a stray temp file, which nothing reads."""
    finished(world, "mid-write")
    _crash_at(world, "mid-write", "intent-written", tmp_path / "flag")
    run = world.build_dir("mid-write")
    (run / ".delivery.json.99999.tmp").write_text('{"phase": "pos')  # what a kill mid-write leaves
    code, _, _ = watch(world, "mid-write")
    assert code == 5 and world.receiver.posts == []
    assert status(world, "mid-write")["delivery"] == "DELIVERY-UNCERTAIN"


# --- choosing at-least-once ----------------------------------------------------------------------


def test_at_least_once_resends_after_an_intent_that_never_left(world, tmp_path):
    finished(world, "alo-1")
    _crash_at(world, "alo-1", "intent-written", tmp_path / "flag")
    code, _, err = watch(world, "alo-1", "--at-least-once")
    assert code == 0 and len(world.receiver.posts) == 1, err


def test_at_least_once_accepts_the_duplicate_it_was_chosen_for(world, tmp_path):
    finished(world, "alo-2")
    _crash_at(world, "alo-2", "response-received", tmp_path / "flag")
    assert len(world.receiver.posts) == 1
    code, _, err = watch(world, "alo-2", env={"ATVM_DELIVERY": "at-least-once"})
    assert code == 0, err
    assert len(world.receiver.posts) == 2  # the documented price of at-least-once
    assert status(world, "alo-2")["delivery"] == "posted"


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_mid_delivery_finishes_the_post_cleanly(world, tmp_path, sig):
    """A hang-up (a closed terminal, systemctl kill -s HUP) is a clean stop, not a kill: the request
    on the wire is finished and recorded, so no restart ever reports it as uncertain."""
    finished(world, "hup")
    flag = tmp_path / "flag"
    proc = world.start_watcher("--build-name", "hup",
                               env={"ATVM_TEST_PAUSE_AT": "intent-written", "ATVM_TEST_PAUSE_FILE": str(flag)})
    wait_for(lambda: flag.exists() or proc.poll() is not None, what="pause at intent-written")
    proc.send_signal(sig)
    time.sleep(0.1)
    flag.unlink()
    code, _, err = finish(proc)
    assert code == 0, err
    assert len(world.receiver.posts) == 1 and status(world, "hup")["delivery"] == "posted"
    code, _, err = watch(world, "hup")
    assert code == 0 and "uncertain" not in err and len(world.receiver.posts) == 1


def test_the_hook_is_inert_without_its_flag_file(world):
    finished(world, "inert")
    code, _, err = watch(world, "inert", env={"ATVM_TEST_PAUSE_AT": "intent-written"})
    assert code == 0 and len(world.receiver.posts) == 1, err


def test_the_installed_cli_ignores_the_crash_point_variables(world, tmp_path):
    """Only the development wrapper arms a crash point: atvm_run_watcher.py never pauses."""
    finished(world, "plain-cli")
    flag = tmp_path / "flag"
    armed = {**world.env, "ATVM_TEST_PAUSE_AT": "intent-written", "ATVM_TEST_PAUSE_FILE": str(flag)}
    result = subprocess.run([sys.executable, str(WATCHER), "watch", "--build-name", "plain-cli"], capture_output=True,
                            text=True, timeout=30, stdin=subprocess.DEVNULL, env=armed)
    assert result.returncode == 0 and len(world.receiver.posts) == 1, result.stderr
    assert not flag.exists()


def test_no_token_in_a_killed_watchers_output(world, tmp_path):
    finished(world, "leak")
    flag = tmp_path / "flag"
    proc = world.start_watcher("--build-name", "leak",
                               env={"ATVM_TEST_PAUSE_AT": "response-received", "ATVM_TEST_PAUSE_FILE": str(flag)})
    wait_for(flag.exists, what="pause")
    proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=10)
    assert_no_token(out, err)


def test_uncertainty_found_by_a_killed_restart_still_sets_the_final_exit_code(world, tmp_path):
    finished(world, "lost-5", groups=(("linux", True), ("windows", True)))
    flag = tmp_path / "flag"
    _crash_at(world, "lost-5", "response-received", flag, "--categorize")  # linux: posted, not recorded
    _crash_at(world, "lost-5", "before-intent", flag, "--categorize")  # finds linux uncertain; dies before windows
    code, _, err = watch(world, "lost-5", "--categorize")
    assert len(world.receiver.posts) == 2
    subruns = {s["group"]: s["delivery"] for s in status(world, "lost-5")["subruns"]}
    assert subruns == {"linux": "DELIVERY-UNCERTAIN", "windows": "posted"}
    assert code == 5, err


def test_a_restart_that_sends_an_owed_post_still_reports_a_post_rejected_before(world):
    """linux rejected (400), windows not sent (429 each time): exit 75; the restart posts windows and
    still exits 4, so the unit ends failed and the rejected post is not hidden behind a success."""
    finished(world, "mixed", groups=(("linux", True), ("windows", False)))
    world.receiver.queue(Fault.error(400, "web.incoming_webhook.invalid.app_error"),
                         *[Fault.rate_limited(retry_after=0)] * 3)
    code, _, err = watch(world, "mixed", "--categorize")
    assert code == 75, err
    code, _, err = watch(world, "mixed", "--categorize")
    assert code == 4, err
    assert len(world.receiver.posts) == 1
    shown = status(world, "mixed")
    assert {s["group"]: s["delivery"] for s in shown["subruns"]} == {"linux": "rejected", "windows": "posted"}
