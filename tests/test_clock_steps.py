"""A wall clock that steps both ways never loses a post nor invents one: tested for real, with libfaketime.

A real watcher and a real launcher (atvm_dev/simulate.py) run under libfaketime: their wall clock
(``time.time``) is real time plus the offset read from one file on every call
(``FAKETIME_TIMESTAMP_FILE`` with ``FAKETIME_NO_CACHE=1``), so a test steps it mid-run by rewriting
that file, as chrony's makestep or an operator's ``date -s`` would. The monotonic clock is left alone
(``FAKETIME_DONT_FAKE_MONOTONIC=1``), as a real step leaves CLOCK_MONOTONIC alone. libfaketime would
also shift what stat() reports; ``NO_FAKE_STAT=1`` turns that off, and the launcher stamps its files'
mtimes from its own faked clock (``--stamp-mtimes``) the way the kernel would after a real step.

Every scenario failed before the watcher measured elapsed time on the monotonic clock (each docstring
says how); each asserts that failure mode is gone. Without libfaketime the tests skip loudly; under
CI (env CI set) they fail instead, so CI can never pass them by skipping.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import pytest
from reliability_helpers import finish, finished, wait_for

from atvm_dev.receiver import Fault

LIB_CANDIDATES = ("/usr/lib/*/faketime/libfaketime.so.1", "/usr/lib/faketime/libfaketime.so.1",
                  "/usr/local/lib/faketime/libfaketime.so.1")
STEP = ("--stamp-mtimes", "--step-seconds")


def libfaketime() -> str:
    for pattern in LIB_CANDIDATES:
        for path in sorted(glob.glob(pattern)):
            return path
    return ""


class FakeClock:
    """The offset every process started with ``env`` adds to its wall clock; ``set`` steps it at once."""

    def __init__(self, folder: Path, lib: str):
        self.file = folder / "faketime.rc"
        self.lib = lib
        self.offset = 0.0
        self.set(0)

    def set(self, offset: float) -> None:
        tmp = self.file.with_suffix(".tmp")
        tmp.write_text(f"{offset:+.0f}\n", encoding="ascii")
        os.replace(tmp, self.file)  # a reader never sees a half-written file
        self.offset = offset

    def step(self, seconds: float) -> None:
        self.set(self.offset + seconds)

    def env(self) -> Dict[str, str]:
        return {"LD_PRELOAD": self.lib, "FAKETIME_TIMESTAMP_FILE": str(self.file), "FAKETIME_NO_CACHE": "1",
                "FAKETIME_DONT_FAKE_MONOTONIC": "1", "NO_FAKE_STAT": "1"}

    def now(self) -> float:
        return time.time() + self.offset


def _cannot_run(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"clock-step test cannot run under CI: {reason}", pytrace=False)
    pytest.skip(f"CLOCK-STEP TESTS NOT RUN (a stepping wall clock is untested): {reason}; "
                "install Debian's faketime package (tools/install-test-deps.sh does)")


@pytest.fixture
def clock(tmp_path: Path) -> FakeClock:
    lib = libfaketime()
    if not lib:
        _cannot_run("libfaketime.so.1 not found")
    fake = FakeClock(tmp_path, lib)
    fake.set(-3600)
    probe = subprocess.run([sys.executable, "-c", "import time; print(time.time())"], env={**os.environ, **fake.env()},
                           capture_output=True, text=True, timeout=30)
    seen = float(probe.stdout.strip() or "nan") - time.time()
    if not -3700 < seen < -3500:  # the preload must really fake the clock, or every test here proves nothing
        _cannot_run(f"libfaketime ({lib}) did not move the clock (offset seen {seen}; {probe.stderr.strip()[:200]})")
    fake.set(0)
    return fake


def _events(world, build: str) -> List[Dict]:
    path = world.build_dir(build) / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _post_fields(post: Dict) -> Dict[str, str]:
    return {f["title"]: f["value"] for f in post["attachments"][0]["fields"]}


def _reports(world, build: str) -> List[Path]:
    return sorted(world.layout(build).run().reports.glob("*.json"))


def _one_post(world, build: str, code: int, err: str, state: str = "COMPLETED", tests: str = "9 passed") -> Dict:
    assert code == 0, err
    posts = world.receiver.posts
    assert len(posts) == 1, [p["text"] for p in posts]
    assert state in posts[0]["text"] and build in posts[0]["text"]
    assert _post_fields(posts[0])["Tests"].startswith(tests)
    recorded = json.loads((world.build_dir(build) / "state.json").read_text())
    assert recorded["state"] == state and recorded["delivery"] == "posted"
    return posts[0]


def _short(post: Dict, limit: float = 30) -> None:
    """The run's duration is the few seconds it ran, never the clock's step."""
    shown = _post_fields(post)["Duration"]
    minutes, seconds = shown.split("m ")
    assert "h" not in shown and int(minutes) * 60 + int(seconds[:-1]) < limit, shown


def test_stepped_back_mid_run_posts_completed_once(world, clock):
    """Before: files written after a 40 s step back looked older than the launcher's start and were
    ignored as an earlier run's; the run ended TERMINATED and nothing was posted."""
    build = "e2e-step-back"
    watcher = world.start_watcher("--build-name", build, env=clock.env())
    world.wait_for_state(build)
    world.launch(build, *STEP, "0.4", env=clock.env())
    wait_for(lambda: len(_reports(world, build)) >= 1, what="the first report")
    clock.step(-40)
    code, _, err = finish(watcher)
    post = _one_post(world, build, code, err)
    _short(post)
    first, *_, last = [p.stat().st_mtime for p in _reports(world, build)]
    assert last < first - 30  # the step landed mid-run: the run's last report is "older" than its first
    assert "state TERMINATED" not in err and "earlier run" not in err


def test_stepped_forward_past_hung_after_is_not_hung(world, clock):
    """Before: a 60 s step forward made a run writing every half second look silent for 60 s: HUNG."""
    build = "e2e-step-forward"
    env = {**clock.env(), "ATVM_HUNG_AFTER_SECONDS": "30"}
    watcher = world.start_watcher("--build-name", build, env=env)
    world.wait_for_state(build)
    world.launch(build, *STEP, "0.5", env=clock.env())
    wait_for(lambda: len(_reports(world, build)) >= 1, what="the first report")
    clock.step(60)
    code, _, err = finish(watcher)
    post = _one_post(world, build, code, err)
    _short(post)
    first, *_, last = [p.stat().st_mtime for p in _reports(world, build)]
    assert last > first + 55  # the step landed mid-run
    assert not any(e.get("state") == "HUNG" for e in _events(world, build)) and "state HUNG" not in err


@pytest.mark.parametrize("watcher_first", [True, False], ids=["watcher-first", "watcher-after-the-run"])
def test_files_dated_hours_ahead_are_neither_lost_nor_invented(world, clock, watcher_first):
    """The launcher's clock is 3 h ahead of the watcher's from the start, and yesterday's failed run is on
    disk: today's run is posted once, COMPLETED with its own counts. Before: a file in the future was
    an eternity of progress or a negative age; a found one now counts as changed when first seen."""
    build = "e2e-future-mtimes"
    finished(world, build, passing=False)  # yesterday's FAILED run, ended an hour before this one began
    for path in world.layout(build).run().reports.glob("*.json"):
        path.rename(path.with_name("yesterday-" + path.name))  # a report today's run does not overwrite
    for path in [*world.layout(build).run().reports.glob("*"), world.layout(build).run().log,
                 world.layout(build).run().exit]:
        os.utime(path, (time.time() - 3600, time.time() - 3600))
    clock.set(3 * 3600)
    watcher = world.start_watcher("--build-name", build) if watcher_first else None
    if watcher:
        world.wait_for_state(build)
    # Today's launcher writes .status where yesterday's wrote .exit: that older .exit is where this run began.
    launcher = world.launch(build, "--pid-file", "--outcome-file", "status", *STEP, "0.2", env=clock.env())
    if not watcher:
        assert launcher.wait(30) == 0, launcher.stderr.read()
        watcher = world.start_watcher("--build-name", build)
    code, _, err = finish(watcher)
    post = _one_post(world, build, code, err)
    assert all(p.stat().st_mtime > time.time() + 3 * 3600 - 60 for p in _reports(world, build)
               if not p.name.startswith("yesterday-"))
    assert "Failed tests" not in json.dumps(post)  # yesterday's failure is not today's
    if watcher_first:
        _short(post)


@pytest.mark.parametrize("step", [3600, -3600], ids=["forward", "back"])
def test_step_during_retry_backoff_keeps_the_wait(world, clock, step):
    """A 429 asks for 2 s; the clock steps an hour during the wait: the retry comes about 2 s later,
    neither at once nor an hour later, and the run is posted once."""
    build = "e2e-step-backoff"
    finished(world, build)
    world.receiver.queue(Fault.rate_limited(retry_after=2, reset=None))
    watcher = world.start_watcher("--build-name", build, env=clock.env())
    assert world.receiver.wait_for_requests(1, 20)
    first = time.monotonic()
    time.sleep(0.3)
    clock.step(step)
    assert world.receiver.wait_for_requests(2, 20)
    waited = time.monotonic() - first
    assert 1.5 < waited < 4.0, waited
    code, _, err = finish(watcher)
    _one_post(world, build, code, err, tests="3 passed")


@pytest.mark.parametrize("step", [3600, -3600], ids=["forward", "back"])
def test_step_while_waiting_for_the_run_is_no_early_unknown(world, clock, step):
    """Before: an hour's step forward while no evidence was there yet made the 3 s start timeout expire
    at once: UNKNOWN, and the run that began a second later was never posted."""
    build = "e2e-step-waiting"
    watcher = world.start_watcher("--build-name", build, env={**clock.env(), "ATVM_START_TIMEOUT_SECONDS": "3"})
    world.wait_for_state(build)
    clock.step(step)
    time.sleep(1.2)
    state = json.loads((world.build_dir(build) / "state.json").read_text())
    assert watcher.poll() is None and state["state"] == "WAITING", state
    world.launch(build, *STEP, "0.1", env=clock.env())
    code, _, err = finish(watcher)
    _one_post(world, build, code, err)
    assert "state UNKNOWN" not in err


def test_step_forward_past_gone_grace_before_the_outcome_file(world, clock):
    """The launcher exits, the clock steps 2 min forward, and the wrapper writes the exit file half a second
    later. Before: the launcher looked gone for 2 min at once (grace 2 s): TERMINATED, nothing posted."""
    build = "e2e-step-gone"
    watcher = world.start_watcher("--build-name", build, env={**clock.env(), "ATVM_GONE_GRACE_SECONDS": "2"})
    world.wait_for_state(build)
    launcher = world.launch(build, "--outcome-file", "none", "--no-banner", *STEP, "0.1", env=clock.env())
    assert launcher.wait(30) == 0, launcher.stderr.read()
    clock.step(120)
    time.sleep(0.7)
    exit_file = world.layout(build).run().exit
    exit_file.write_text("0\n", encoding="utf-8")
    os.utime(exit_file, (clock.now(), clock.now()))  # the wrapper's clock, as the kernel would stamp it
    code, _, err = finish(watcher)
    _one_post(world, build, code, err)
    assert "state TERMINATED" not in err
