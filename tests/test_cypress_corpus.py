"""Every case of the Cypress corpus (tests/fixtures/cypress), replayed by a real launcher process
(atvm_dev/replay.py, writing the log in pieces) against the real watcher and a loopback Mattermost.

Four variants, each with what it gives the watcher to go on:

- ``exit``: the case's exit code in ``.exit`` right after the last line. The state is the manifest's.
- ``late-exit``: ``.exit`` written after a pause longer than the settle time (a recorded run uploading
  to Cypress Cloud, a slow shutdown). The same state as ``exit``: the closing line decides as soon as it
  is printed, and a run without one waits for the exit code.
- ``log-alone``: no outcome file; the launcher exiting is what ends the run. The manifest's state,
  except where the log cannot tell: ``quiet-passed`` prints no verdict of its own and, with no exit
  code, cannot be told from a killed run, so it is TERMINATED (never posted, never COMPLETED without
  a pass line). The killed cases (no summary) are TERMINATED, as the manifest says.
- ``wrapper``: the log goes through the launch wrapper (atvm-run.sh), which records the real exit
  status, or TERMINATED for the cases that were killed by a signal. The manifest's state.

Whatever the variant: COMPLETED only where Cypress said all specs passed or exited 0 with nothing
contradicting it; every run with failed tests posted; CANCELLED and TERMINATED never posted; exactly
one post per posted run. The cases of a variant run side by side, so the whole replay takes seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
from conftest import REPO

CORPUS = REPO / "tests" / "fixtures" / "cypress"
MANIFEST: List[dict] = json.loads((CORPUS / "manifest.json").read_text())
REPLAY = REPO / "atvm_dev" / "replay.py"
ATVM_RUN = REPO / "atvm-run.sh"
VARIANTS = ("exit", "late-exit", "log-alone", "wrapper")
DIFFERS: Dict[Tuple[str, str], str] = {("log-alone", "quiet-passed"): "TERMINATED"}
PASSED = {"all-passed", "retries-flaky-pass", "quiet-passed"}  # Cypress said so, or exited 0 uncontradicted
WITH_FAILED_TESTS = {"some-failed", "failing-hook", "retries-then-fail", "renderer-crash", "quiet-failed",
                     "failed-130", "failed-256", "some-failed-ci", "some-failed-ci-ansi"}
PARALLEL = 10


def expected(variant: str, case: dict) -> str:
    return DIFFERS.get((variant, case["case"]), case["expected_state"])


def build_of(variant: str, case: dict) -> str:
    return f"corpus-{variant}-{case['case']}"


def replay(world, variant: str, case: dict) -> Tuple[str, str, int, str]:
    """(state, rule, watcher exit code, watcher stderr) of one case."""
    build = build_of(variant, case)
    args = ["--build-name", build, "--case", case["case"], "--late", "1.0"]
    if variant == "wrapper":
        cmd = [str(ATVM_RUN), "--build-name", build, "--no-echo", "--", sys.executable, str(REPLAY), *args,
               "--outcome", "stdout"]
    else:
        cmd = [sys.executable, str(REPLAY), *args, "--outcome", {"log-alone": "none"}.get(variant, variant)]
    launcher = subprocess.Popen(cmd, env=world.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL)
    world.procs.append(launcher)
    pid_file = world.layout(build).pid_file()
    deadline = time.monotonic() + 30
    while not pid_file.exists() and launcher.poll() is None:  # the launcher is there before its watcher
        assert time.monotonic() < deadline
        time.sleep(0.02)
    watcher = world.start_watcher("--build-name", build)
    _, err = watcher.communicate(timeout=90)
    launcher.wait(timeout=30)
    state = json.loads((world.build_dir(build) / "state.json").read_text())
    return state["state"], state.get("rule", ""), watcher.returncode, err


def posts_for(world, build: str) -> List[dict]:
    def names(post):
        return [f["value"] for a in post.get("attachments", []) for f in a.get("fields", []) if f["title"] == "Build"]

    return [p for p in world.receiver.posts if f"`{build}`" in names(p)]


@pytest.mark.parametrize("variant", VARIANTS)
def test_corpus_replayed_against_the_real_watcher(world, variant):
    world.env.update({"ATVM_START_TIMEOUT_SECONDS": "60", "ATVM_SETTLE_SECONDS": "0.3",
                      "ATVM_GONE_GRACE_SECONDS": "1"})
    with ThreadPoolExecutor(PARALLEL) as pool:
        results = dict(zip((c["case"] for c in MANIFEST), pool.map(lambda c: replay(world, variant, c), MANIFEST)))
    wrong = []
    for case in MANIFEST:
        name = case["case"]
        state, rule, code, err = results[name]
        posts = posts_for(world, build_of(variant, case))
        if code != 0 or "Traceback" in err:
            wrong.append(f"{name}: watcher exit {code}: {err[-400:]}")
        if state != expected(variant, case):
            wrong.append(f"{name}: {state} (rule {rule}), expected {expected(variant, case)}")
        if state == "COMPLETED" and name not in PASSED:
            wrong.append(f"{name}: COMPLETED without a pass")
        if name in WITH_FAILED_TESTS and not (state == "FAILED" and len(posts) == 1):
            wrong.append(f"{name}: failed tests, but {state} with {len(posts)} post(s)")
        if len(posts) != (1 if state in ("COMPLETED", "FAILED") else 0):
            wrong.append(f"{name}: {state} with {len(posts)} post(s)")
        if posts and state not in posts[0]["text"]:
            wrong.append(f"{name}: posted {posts[0]['text']!r} for {state}")
    assert not wrong, "\n".join(wrong)


def test_the_expectations_cover_the_whole_corpus():
    names = {c["case"] for c in MANIFEST}
    assert PASSED <= names and WITH_FAILED_TESTS <= names and {case for _, case in DIFFERS} <= names
    assert {c["case"] for c in MANIFEST if c["expected_state"] == "COMPLETED"} == PASSED
    assert all(c["expected_state"] == "FAILED" for c in MANIFEST if c["case"] in WITH_FAILED_TESTS)


def test_replay_writes_where_the_layout_says(world, tmp_path):
    world.env["ATVM_LOG_FILE"] = "{log_dir}/elsewhere/{build}.txt"
    done = subprocess.run([sys.executable, str(REPLAY), "--build-name", "b", "--case", "all-passed", "--pause", "0"],
                          env=world.env, capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert (world.log_dir / "elsewhere" / "b.txt").read_bytes() == (CORPUS / "all-passed.log").read_bytes()
    assert Path(world.log_dir / "b.exit").read_text() == "0\n"


# --- launchers that do more than one Cypress run, through the wrapper ----------------------------------


def _wrapped(world, build: str, script: str, *watch_args: str):
    """``script`` (bash) run through atvm-run.sh as the launcher, its watcher started once the run is."""
    world.env.update({"ATVM_SETTLE_SECONDS": "0.3", "ATVM_GONE_GRACE_SECONDS": "1"})
    launcher = subprocess.Popen([str(ATVM_RUN), "--build-name", build, "--no-echo", "--", "bash", "-c", script],
                                env=world.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                stdin=subprocess.DEVNULL)
    world.procs.append(launcher)
    deadline = time.monotonic() + 30
    while not world.layout(build).pid_file().exists():
        assert time.monotonic() < deadline and launcher.poll() is None
        time.sleep(0.02)
    watcher = world.start_watcher("--build-name", build, *watch_args)
    _, err = watcher.communicate(timeout=90)
    assert watcher.returncode == 0, err
    assert launcher.wait(timeout=30) is not None
    return json.loads((world.build_dir(build) / "state.json").read_text()), posts_for(world, build)


def _replay(case: str, *extra: str) -> str:
    return f"{sys.executable} {REPLAY} --build-name x --case {case} --outcome stdout --pause 0.05 {' '.join(extra)}"


def test_two_cypress_runs_in_one_wrapped_command_are_decided_by_its_exit_status(world):
    """A pass, then a failing run into the same log: nothing is posted before the command ends."""
    state, posts = _wrapped(world, "e2e-two-runs", f"{_replay('all-passed')}; sleep 2; {_replay('some-failed')}")
    assert (state["state"], state["rule"]) == ("FAILED", "exit-code")
    assert len(posts) == 1 and "FAILED" in posts[0]["text"]


def test_a_categorized_run_wrapped_at_both_levels_posts_every_group(world):
    """INSTALL's categorized launch: group wrappers echo into the outer wrapper's log (the parent's)."""
    build = "e2e-cat-echo"
    groups = "; ".join(f"{ATVM_RUN} --build-name {build} --group {g} -- {_replay(c)}"
                       for g, c in (("linux", "all-passed"), ("windows", "some-failed")))
    state, posts = _wrapped(world, build, f"sleep 0.5; {groups}", "--categorize")
    assert (state["state"], state["rule"]) == ("FAILED", "exit-code")
    assert b"All specs passed!" in world.layout(build).run().log.read_bytes()  # the echo reached the parent log
    assert [("COMPLETED" in p["text"], "linux" in p["text"]) for p in posts] == [(True, True), (False, False)]
    assert "FAILED" in posts[1]["text"] and "windows" in posts[1]["text"]


# --- a layout of the operator's own, set through the templates, watched end to end -----------------

CUSTOM_LAYOUT = {
    "ATVM_LOG_FILE": "{log_dir}/runs/{build}/cypress.log",
    "ATVM_STATUS_FILE": "{log_dir}/runs/{build}/outcome",
    "ATVM_EXIT_FILE": "{log_dir}/runs/{build}/exit-code",
    "ATVM_PID_FILE": "{log_dir}/runs/{build}/launcher.pid",
    "ATVM_REPORT_FOLDER": "{report_dir}/mochawesome/{build}",
    "ATVM_GROUP_LOG_FILE": "{log_dir}/runs/{build}/{group}/cypress.log",
    "ATVM_GROUP_STATUS_FILE": "{log_dir}/runs/{build}/{group}/outcome",
    "ATVM_GROUP_EXIT_FILE": "{log_dir}/runs/{build}/{group}/exit-code",
    "ATVM_GROUP_REPORT_FOLDER": "{report_dir}/mochawesome-groups/{build}/{group}",
}


@pytest.mark.parametrize("case,state", [("all-passed", "COMPLETED"), ("failed-256", "FAILED"),
                                        ("killed-sigterm", "TERMINATED")])
def test_a_custom_layout_through_the_wrapper(world, case, state):
    world.env.update(CUSTOM_LAYOUT)
    result = replay(world, "wrapper", next(c for c in MANIFEST if c["case"] == case))
    assert result[0] == state, result
    folder = world.log_dir / "runs" / build_of("wrapper", {"case": case})
    assert (folder / "cypress.log").read_bytes() == (CORPUS / f"{case}.log").read_bytes()
    assert not list(world.log_dir.glob("*.log")) and not list(world.log_dir.glob("*.exit"))
    assert len(posts_for(world, build_of("wrapper", {"case": case}))) == (state != "TERMINATED")


def test_a_custom_layout_categorized_run_posts_once_per_group(world):
    world.env.update(CUSTOM_LAYOUT)
    build = "e2e-custom-cat"
    world.launch(build, "--group", "linux:pass", "--group", "windows:fail", "--step-seconds", "0.05", "--pid-file")
    proc = world.start_watcher("--build-name", build, "--categorize")
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err
    assert sorted(p.name for p in (world.log_dir / "runs" / build).iterdir()) == [
        "exit-code", "launcher.pid", "linux", "windows"]
    assert (world.report_dir / "mochawesome-groups" / build / "windows").is_dir()
    posts = posts_for(world, build)
    assert [("COMPLETED" in p["text"], "linux" in p["text"]) for p in posts] == [(True, True), (False, False)]
    assert "FAILED" in posts[1]["text"] and "windows" in posts[1]["text"]
    parent = json.loads((world.build_dir(build) / "state.json").read_text())
    assert parent["state"] == "FAILED" and parent["groups"] == ["linux", "windows"]
