"""Random but plausible timelines of a rerun, played for real, and the rules they must obey.

A ``Timeline`` says what an earlier run of the same build left on disk (hours ago), how this run is
launched (atvm_dev/simulate.py, a real process), and when its watcher (the real CLI, a subprocess) is
started: before the launcher, with it, seconds after it, hours into the run (files back-dated), just
after the run finished, or hours after. It may kill the watcher mid-run and start it again, or cancel.
``play`` runs one; ``check`` compares what was posted with a timing-free statement of the rules:

- never: a second post for a scope, a post for an earlier run's group, a post after the cancel
  returned, an earlier run's counts or state in a post;
- must: this run's COMPLETED/FAILED once per scope, with this run's counts, sub-runs numbered from 1,
  wherever the rules in decide.py's comment can tell this run's files from an earlier run's;
- where they cannot (a run that finished longer than the launch allowance before its watcher, with no
  launcher seen): no post, and ``inspect`` says the watcher waits for this run.

Configurations that the documented rules leave ambiguous (see ``Timeline.decidable``) are still
played, and the "never" rules that do not depend on telling the runs apart are checked.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from conftest import SIMULATE, WATCHER, world_env
from reliability_helpers import finished_run

from atvm_watcher.layout import RunLayout

HOURS = 3600.0
GROUP_POOL = ("linux", "windows", "bsd", "legacy")
ORDERS = ("before", "with", "after-seconds", "late-running", "after-finish", "after-finish-hours")
SETTINGS = {"ATVM_POLL_SECONDS": "0.1", "ATVM_SETTLE_SECONDS": "0.3", "ATVM_GONE_GRACE_SECONDS": "1.5",
            "ATVM_START_TIMEOUT_SECONDS": "4", "ATVM_HUNG_AFTER_SECONDS": "30",
            "ATVM_LAUNCH_ALLOWANCE_SECONDS": "300"}
STEP = "0.15"
TESTS_PER_SCOPE = 9  # simulate.py: 3 specs of 3 tests; a failing scope fails the last test


@dataclass(frozen=True)
class Timeline:
    name: str
    categorized: bool
    groups: Tuple[Tuple[str, bool], ...]  # this run's scopes: (group, passes); plain: (("", passes),)
    earlier: Tuple[Tuple[str, bool], ...] = ()  # the earlier run's scopes (failing); () = nothing left over
    earlier_outcome: str = "exit"  # exit | status | none: what the earlier run's launcher wrote at its end
    earlier_renamed: bool = False  # its reports under names this run does not overwrite
    stale_pid: str = "none"  # none | dead | reused: a pid file the earlier run left
    order: str = "before"
    visible: str = "argv"  # argv | pid | hidden: how the watcher can find this run's launcher
    log_mode: str = "truncate"
    outcome: str = "exit"  # exit | status | none: what this run writes at its end
    restart: bool = False  # SIGKILL the watcher mid-run, then start another
    cancel: bool = False

    @property
    def hours_late(self) -> bool:
        return self.order == "after-finish-hours"

    @property
    def watched_live(self) -> bool:
        return self.order in ("before", "with", "after-seconds", "late-running")

    @property
    def shares_an_earlier_log(self) -> bool:
        """This run appends to a log in which the earlier run's (Run Finished) banner and summary are still
        the last ones, and the watcher did not see this run's first line arrive after that quiet end.
        LogTail keeps such a banner until a new one comes, so the log says "finished" from the start:
        a limit of the log parser (evidence.LogTail), not of telling the runs' files apart."""
        if self.log_mode != "append" or not self.earlier or (self.order == "before" and not self.restart):
            return False
        return bool({g for g, _ in self.groups} & {g for g, _ in self.earlier})

    def decidable(self, late: bool = False) -> bool:
        """Can the rules in decide.py's comment tell this run's files from the earlier run's here?

        ``late``: the run may have ended before the watcher's first look (a short run on a busy machine,
        or a watcher killed before it recorded a run start): it is then one started after the run."""
        if late:
            return replace(self, order="after-finish", restart=False).decidable()
        if self.shares_an_earlier_log:
            return False
        if not self.earlier:
            return True
        if self.visible in ("argv", "pid") and self.order in ("before", "with", "after-seconds"):
            return True  # rule 1: the launcher's start
        if self.earlier_outcome != "none":
            overwritten = self.outcome == self.earlier_outcome
            if self.watched_live or not overwritten:
                return True  # rule 3: the earlier run's end is older than this run's files
            if self.visible == "pid" and self.order == "after-finish":
                return True  # rule 5: this run's pid file
        if (self.order == "before" and self.log_mode != "append" and not self.restart
                and not self.extra_groups):
            return True  # this run rewrote each log while watched: what did not change since is older
        return False

    @property
    def extra_groups(self) -> Tuple[str, ...]:
        mine = {g for g, _ in self.groups}
        return tuple(g for g, _ in self.earlier if g not in mine)

    def describe(self) -> str:
        parts = [f"{'categorized ' + ','.join(g + (':pass' if ok else ':fail') for g, ok in self.groups)}"
                 if self.categorized else f"plain {'pass' if self.groups[0][1] else 'fail'}",
                 f"earlier={','.join(g or 'run' for g, _ in self.earlier) or 'none'}"
                 f"/{self.earlier_outcome}{'/renamed' if self.earlier_renamed else ''}/pid={self.stale_pid}",
                 f"order={self.order}", f"visible={self.visible}", f"log={self.log_mode}", f"outcome={self.outcome}"]
        parts += ["restart"] * self.restart + ["cancel"] * self.cancel
        return f"{self.name}: " + " ".join(parts)


def generate(seed: int, count: int) -> List[Timeline]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        categorized = rng.random() < 0.5
        if categorized:
            names = rng.sample(GROUP_POOL[:3], rng.randint(1, 3))
            groups = tuple((g, rng.random() < 0.7) for g in names)
        else:
            groups = (("", rng.random() < 0.7),)
        order = rng.choice(ORDERS)
        if order == "late-running" and not (categorized and len(groups) >= 2):
            order = "after-seconds"
        visible = "hidden" if order in ("late-running", "after-finish-hours") else rng.choice(("argv", "pid", "hidden"))
        earlier: Tuple[Tuple[str, bool], ...] = ()
        if rng.random() < 0.75:
            if categorized:
                earlier = tuple((g, False) for g in rng.sample(GROUP_POOL, rng.randint(1, 3)))
            else:
                earlier = (("", False),)
        live = order in ("before", "with", "after-seconds", "late-running")
        out.append(Timeline(
            name=f"tl{seed % 1000:03d}-{i:03d}", categorized=categorized, groups=groups, earlier=earlier,
            earlier_outcome=rng.choice(("exit", "status", "none")), earlier_renamed=rng.random() < 0.5,
            stale_pid=rng.choice(("none", "dead", "reused")) if earlier else "none", order=order, visible=visible,
            log_mode=rng.choice(("truncate", "replace", "append")),
            outcome=rng.choice(("exit", "status", "none")),
            restart=live and order != "late-running" and rng.random() < 0.25,
            cancel=live and rng.random() < 0.15))
    return out


# --- playing one ---------------------------------------------------------------------------------


@dataclass
class Played:
    timeline: Timeline
    posts: List[Dict]
    posts_at_cancel: Optional[int] = None
    state: Dict = field(default_factory=dict)
    inspect: Dict = field(default_factory=dict)
    err: str = ""
    codes: List[int] = field(default_factory=list)
    late: bool = False  # the watcher (or its restarted successor) may have first looked after the run ended


def _age(paths, seconds: float) -> None:
    t = time.time() - seconds
    for p in paths:
        os.utime(p, (t, t))


def leave_earlier_run(tl: Timeline, layout: RunLayout) -> None:
    """What an earlier, failed run of the build left: logs, reports, outcome files, 26 hours ago."""
    if not tl.earlier:
        return
    finished_run(layout, passing=False, groups=tuple((g, ok) for g, ok in tl.earlier if g) if tl.categorized else ())
    scopes = [layout.group(g) for g, _ in tl.earlier if g] or [layout.run()]
    parent = layout.run()
    for paths in scopes + ([parent] if tl.categorized else []):
        if tl.earlier_outcome == "status" and paths.exit.exists():
            paths.status.write_text("FAILED\n", encoding="utf-8")
        if tl.earlier_outcome != "exit":
            paths.exit.unlink(missing_ok=True)
        if tl.earlier_renamed and paths.reports.is_dir():
            for r in paths.reports.glob("*.json"):
                r.rename(r.with_name("earlier-" + r.name))
    files = [p for root in (layout.log_dir, layout.report_dir) for p in root.rglob("*")]
    _age(files + [layout.log_dir, layout.report_dir], 26 * HOURS)
    if tl.stale_pid != "none":
        if tl.stale_pid == "dead":
            gone = subprocess.Popen(["true"])
            gone.wait()
            pid = gone.pid
        else:
            pid = os.getpid()  # alive, and started long after the pid file was written: a reused pid
        layout.pid_file().write_text(f"{pid}\n", encoding="utf-8")
        _age([layout.pid_file()], 27 * HOURS)


class Player:
    def __init__(self, root: Path, webhook: str):
        self.root = root
        self.webhook = webhook

    def play(self, tl: Timeline, receiver) -> Played:
        root = self.root / tl.name
        env = {**world_env(root, self.webhook), **SETTINGS}
        build = f"e2e-{tl.name}"
        layout = RunLayout(build, Path(env["ATVM_LOG_DIR"]), Path(env["ATVM_REPORT_DIR"]))
        leave_earlier_run(tl, layout)
        procs: List[subprocess.Popen] = []
        played = Played(tl, [])
        try:
            self._run(tl, env, build, layout, procs, played, receiver)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                p.wait(10)
        played.posts = [p for p in receiver.posts if f"{build}" in p.get("text", "")]
        played.state = json.loads((Path(env["ATVM_WATCHER_STATE_ROOT"]) / build / "state.json").read_text())
        return played

    def _launcher(self, tl: Timeline, env, build: str) -> subprocess.Popen:
        args = [sys.executable, str(SIMULATE), "--log-dir", env["ATVM_LOG_DIR"], "--report-dir", env["ATVM_REPORT_DIR"],
                "--step-seconds", STEP, "--log-mode", tl.log_mode]
        if tl.categorized:
            for g, ok in tl.groups:
                args += ["--group", f"{g}:{'pass' if ok else 'fail'}"]
        else:
            args += ["--outcome", "pass" if tl.groups[0][1] else "fail"]
        args += ["--outcome-file", tl.outcome]
        if tl.order == "late-running":
            args += ["--backdate", str(2 * HOURS), "--backdate-groups", "1", "--backdate-stride", "300"]
        if tl.hours_late:
            args += ["--backdate", str(3 * HOURS), "--backdate-groups", str(len(tl.groups)), "--backdate-stride", "60"]
        launch_env = dict(env)
        if tl.visible == "argv":
            args += ["--build-name", build]
        else:
            launch_env["SIMULATE_BUILD_NAME"] = build
        if tl.visible == "pid":
            args.append("--pid-file")
        return subprocess.Popen(args, env=launch_env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)

    def _watcher(self, tl: Timeline, env, build: str) -> subprocess.Popen:
        args = [sys.executable, str(WATCHER), "watch", "--build-name", build]
        args += ["--categorize"] if tl.categorized else []
        return subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)

    def _cli(self, env, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(WATCHER), *args], env=env, capture_output=True, text=True,
                              timeout=60, stdin=subprocess.DEVNULL)

    def _run(self, tl, env, build, layout, procs, played, receiver) -> None:
        state_file = Path(env["ATVM_WATCHER_STATE_ROOT"]) / build / "state.json"
        watcher = launcher = None
        if tl.order == "before":
            watcher = self._watcher(tl, env, build)
            procs.append(watcher)
            _wait(lambda: state_file.exists(), 20, "the watcher's first state")
        launcher = self._launcher(tl, env, build)
        procs.append(launcher)
        if tl.order == "after-seconds":
            time.sleep(0.4)
        elif tl.order == "late-running":
            second = layout.group(tl.groups[1][0]).log
            _wait(second.exists, 20, "the second group's log")
        elif tl.order in ("after-finish", "after-finish-hours"):
            launcher.wait(60)
            if tl.hours_late and layout.pid_file().exists() and tl.stale_pid == "none":
                _age([layout.pid_file()], 3 * HOURS)
        if watcher is None:
            watcher = self._watcher(tl, env, build)
            procs.append(watcher)
            if tl.watched_live:
                _wait(lambda: state_file.exists(), 20, "the watcher's first state")
                # A short run on a busy machine may end before the watcher's first look: then it is one
                # started after the run finished, whatever the timeline meant.
                played.late = launcher.poll() is not None
        if tl.hours_late:
            _wait(lambda: state_file.exists(), 20, "the watcher's first state")
            time.sleep(0.5)
            played.inspect = json.loads(self._cli(env, "inspect", "--build-name", build, "--json").stdout or "{}")
        if tl.restart:
            time.sleep(0.5)
            if watcher.poll() is None:
                watcher.send_signal(signal.SIGKILL)
                watcher.wait(10)
                played.err += watcher.stderr.read() + "\n--- killed; restarted ---\n"
                recorded = json.loads(state_file.read_text()).get("run_start") if state_file.exists() else None
                watcher = self._watcher(tl, env, build)
                procs.append(watcher)
                played.late = played.late or recorded is None  # the next one may or may not see the launcher
        if tl.cancel:
            _wait(lambda: state_file.exists(), 20, "the watcher's first state")
            time.sleep(0.4)
            said = self._cli(env, "cancel", "--build-name", build).stdout
            if "cancelled build" in said:  # else the run had finished: there was nothing left to cancel
                played.posts_at_cancel = len([p for p in receiver.posts if build in p.get("text", "")])
        try:
            _, err = watcher.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            watcher.kill()
            _, err = watcher.communicate()
            err += "\n(watcher still running after 60 s: killed)"
        played.err += err
        played.codes.append(watcher.returncode)
        launcher.wait(60)


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


# --- the rules ----------------------------------------------------------------------------------


def expected_posts(tl: Timeline) -> Dict[str, Tuple[str, str, Optional[int]]]:
    """This run's posts: scope -> (state, tests line, position)."""
    out = {}
    for i, (g, ok) in enumerate(tl.groups, start=1):
        tests = f"{TESTS_PER_SCOPE} passed, 0 failed" if ok else f"{TESTS_PER_SCOPE - 1} passed, 1 failed"
        out[g] = ("COMPLETED" if ok else "FAILED", tests, i if tl.categorized else None)
    return out


def _scope_of(post: Dict, tl: Timeline) -> Tuple[str, Optional[int]]:
    text = post["text"]
    if not tl.categorized:
        return "", None
    sub = text.split("sub-run ", 1)[1] if "sub-run " in text else ""
    name, _, rest = sub.partition(" (")  # "linux (1 of 2)", "linux (1)"
    digits = rest.lstrip("#").split(" ")[0].split(")")[0]
    return name.strip(), int(digits) if digits.isdigit() else None


def check(p: Played) -> List[str]:
    """Every broken rule, in words (empty: the timeline obeyed them all)."""
    tl, problems = p.timeline, []
    decidable = tl.decidable(p.late)
    expected = expected_posts(tl)
    seen: Dict[str, int] = {}
    for post in p.posts:
        scope, position = _scope_of(post, tl)
        seen[scope] = seen.get(scope, 0) + 1
        fields = {f["title"]: f["value"] for f in post["attachments"][0]["fields"]}
        if not decidable:
            continue  # which files are this run's cannot be told: an earlier run's may be counted, or posted
        if scope not in expected:
            problems.append(f"a post for {scope or 'the run'!r}, which is not one of this run's scopes: {post['text']}")
            continue
        state, tests, pos = expected[scope]
        if state not in post["text"]:
            problems.append(f"{scope or 'run'}: posted {post['text']!r}, expected {state}")
        if not fields.get("Tests", "").startswith(tests):
            problems.append(f"{scope or 'run'}: tests {fields.get('Tests')!r}, expected {tests!r}")
        if position != pos:
            problems.append(f"{scope or 'run'}: position {position}, expected {pos}")
    problems += [f"{s or 'run'} posted {n} times" for s, n in seen.items() if n > 1]
    if p.posts_at_cancel is not None and len(p.posts) > p.posts_at_cancel:
        problems.append(f"{len(p.posts) - p.posts_at_cancel} post(s) after the cancel returned")
    if tl.hours_late:
        if p.posts:
            problems.append("posted a run that finished hours before its watcher, with nothing to tell it apart")
        decision = p.inspect.get("decision", {})
        if decision.get("state") != "WAITING" or "an earlier run's" not in decision.get("reason", ""):
            problems.append(f"inspect does not say why the watcher waits: {decision} {p.inspect.get('run_start')}")
    # The kill of a restart may land while a request is on the wire: at-most-once, that post is reported
    # uncertain (exit 5) and never resent, so it may be missing; the restarted watcher says so.
    interrupted = tl.restart and "stopped while its request was in flight" in p.err
    if not tl.hours_late and p.posts_at_cancel is None and decidable and not interrupted:
        missing = [s or "run" for s in expected if s not in seen]
        if missing:
            problems.append(f"not posted: {missing} (state.json: {p.state.get('state')} {p.state.get('rule')})")
    if any(c not in ((0, 5) if interrupted else (0,)) for c in p.codes):
        problems.append(f"watcher exit codes {p.codes}")
    return problems


def cleanup(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)
