"""A simulated ATVM launcher: a real process that leaves a run's evidence in the layout (layout.py, settings).

Used by ``demo``, the end-to-end tests and the benchmark. It writes a Cypress-style console log
and mochawesome-format reports spec by spec, then the outcome files, then exits; options make it
hang, die without a trace, or skip the outcome files, so every state can be reached from files.

    python3 atvm_dev/simulate.py --build-name B --log-dir D --report-dir R \
        [--group linux:pass --group windows:fail] [--outcome pass|fail] [--step-seconds 1]

Options for the tests of time and run identity (tests/test_clock_steps.py, tests/test_timelines.py):
``--stamp-mtimes`` sets every file's mtime from the launcher's own clock (under libfaketime the kernel
would stamp the real time), ``--backdate`` stamps the first groups as written hours ago, ``--log-mode``
says whether a run rewrites or appends to a log an earlier run left, and a build name taken from the
environment (``SIMULATE_BUILD_NAME``) keeps it out of argv, so no process scan finds the launcher.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import List, Optional, Tuple

if not __package__:  # run as a script (demo, tests, benchmark): the checkout's packages come from its root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from atvm_watcher.layout import RunLayout, ScopePaths  # noqa: E402
from atvm_watcher.settings import load  # noqa: E402

SPECS_PER_RUN = 3
BAR = "=" * 100
BUILD_ENV = "SIMULATE_BUILD_NAME"


def sleep(seconds: float) -> None:
    """time.sleep, but not through clock_nanosleep: from Python 3.11 that call fails (EINVAL) under
    libfaketime when its monotonic clock is left alone, as tests/test_clock_steps.py runs it."""
    if seconds > 0:
        select.select([], [], [], seconds)


class Stamper:
    """Sets the mtime of what was just written from this process's own clock (``--stamp-mtimes``).

    The kernel stamps files with the real time, so a launcher under libfaketime must do it itself to
    look like one on a controller whose clock stepped. While ``backdate`` is on, the writes are stamped
    as made ``backdate`` seconds ago, ``stride`` seconds apart: a phase of the run that ended long ago.
    """

    def __init__(self, enabled: bool = False, backdate: float = 0.0, stride: float = 60.0):
        self.enabled = enabled or backdate > 0
        self.backdate, self.stride = backdate, stride
        self.past = backdate > 0
        self.writes = 0

    def __call__(self, *paths: Path) -> None:
        if not self.enabled:
            return
        t = time.time()
        if self.past:
            t = t - self.backdate + self.writes * self.stride
            self.writes += 1
        for path in paths:
            for p in (path, path.parent):
                try:
                    os.utime(p, (t, t))
                except OSError:
                    pass


NO_STAMP = Stamper()


def _test(title: str, parent: str, failed: bool) -> dict:
    return {
        "title": title,
        "fullTitle": f"{parent} {title}",
        "timedOut": False,
        "duration": 120,
        "state": "failed" if failed else "passed",
        "speed": "fast",
        "pass": not failed,
        "fail": failed,
        "pending": False,
        "context": None,
        "code": "cy.visit('/')",
        "err": {"message": "AssertionError: expected 'Migrated' to equal 'Ready'", "estack": "", "diff": None}
        if failed
        else {},
        "uuid": str(uuid.uuid4()),
        "parentUUID": None,
        "isHook": False,
        "skipped": False,
    }


def mochawesome_report(spec: str, suite_title: str, titles: List[str], fail_last: bool) -> dict:
    """One spec's report, shaped like mochawesome's JSON output (stats, results, meta)."""
    tests = [_test(t, suite_title, fail_last and i == len(titles) - 1) for i, t in enumerate(titles)]
    failures = sum(1 for t in tests if t["fail"])
    suite = {
        "uuid": str(uuid.uuid4()),
        "title": suite_title,
        "fullFile": "",
        "file": "",
        "beforeHooks": [],
        "afterHooks": [],
        "tests": tests,
        "suites": [],
        "passes": [t["uuid"] for t in tests if t["pass"]],
        "failures": [t["uuid"] for t in tests if t["fail"]],
        "pending": [],
        "skipped": [],
        "duration": 120 * len(tests),
        "root": False,
        "rootEmpty": False,
        "_timeout": 2000,
    }
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    return {
        "stats": {
            "suites": 1,
            "tests": len(tests),
            "passes": len(tests) - failures,
            "pending": 0,
            "failures": failures,
            "start": now,
            "end": now,
            "duration": 120 * len(tests),
            "testsRegistered": len(tests),
            "passPercent": round(100.0 * (len(tests) - failures) / len(tests), 2),
            "pendingPercent": 0,
            "other": 0,
            "hasOther": False,
            "skipped": 0,
            "hasSkipped": False,
        },
        "results": [
            {
                "uuid": str(uuid.uuid4()),
                "title": "",
                "fullFile": f"cypress/e2e/{spec}",
                "file": f"cypress/e2e/{spec}",
                "beforeHooks": [],
                "afterHooks": [],
                "tests": [],
                "suites": [suite],
                "passes": [],
                "failures": [],
                "pending": [],
                "skipped": [],
                "duration": 0,
                "root": True,
                "rootEmpty": True,
                "_timeout": 2000,
            }
        ],
        "meta": {"mocha": {"version": "7.0.1"}, "mochawesome": {"version": "7.1.3"}, "marge": {"version": "6.2.0"}},
    }


class Run:
    """One (sub-)run's files: its log, its report folder, its outcome files."""

    def __init__(self, paths: ScopePaths, stamp: Stamper = NO_STAMP):
        self.log, self.reports, self.exit_file, self.status_file = paths.log, paths.reports, paths.exit, paths.status
        self.stamp = stamp

    def say(self, text: str) -> None:
        with self.log.open("a", encoding="utf-8") as fh:
            fh.write(text + "\n")
        self.stamp(self.log)

    def start_log(self, mode: str) -> None:
        """Begin this run's log: ``truncate`` it, ``replace`` it (a new file renamed over it), or ``append``."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        if mode == "truncate":
            self.log.write_text("", encoding="utf-8")
        elif mode == "replace":
            fresh = self.log.with_name(self.log.name + ".new")
            fresh.write_text("", encoding="utf-8")
            os.replace(fresh, self.log)
        else:
            self.log.touch()
        self.stamp(self.log)

    def write_outcome(self, path: Path, text: str) -> None:
        path.write_text(text, encoding="utf-8")
        self.stamp(path)

    def write_report(self, index: int, report: dict) -> None:
        # Written in place in two pieces, as a reporter does: a poll may see half a file.
        self.reports.mkdir(parents=True, exist_ok=True)
        name = "mochawesome.json" if index == 0 else f"mochawesome_{index:03d}.json"
        data = json.dumps(report, indent=2).encode("utf-8")
        with (self.reports / name).open("wb") as fh:
            fh.write(data[: len(data) // 2])
            fh.flush()
            fh.write(data[len(data) // 2 :])
        self.stamp(self.reports / name)


def run_specs(run: Run, label: str, passing: bool, step: float, banner: bool = True,
              flaky: bool = False) -> Tuple[int, int]:
    """Play SPECS_PER_RUN specs; the last spec has one failing test when not passing. ``flaky``: the
    second test of the first spec fails its first attempt and passes on the retry (Cypress's retries)."""
    run.log.parent.mkdir(parents=True, exist_ok=True)
    step = 0.0 if run.stamp.past else step  # a phase that ended long ago is written at once
    if banner:
        run.say(f"\n{BAR}\n\n  (Run Starting)\n\n  Group: {label}\n  Specs: {SPECS_PER_RUN} found\n")
    total = failed = 0
    for n in range(SPECS_PER_RUN):
        spec = f"{label}-migration-{n + 1}.cy.js"
        titles = ["discovers the source VM", "replicates the disks", "cuts over and boots the target"]
        fail_here = not passing and n == SPECS_PER_RUN - 1
        run.say(f"{'─' * 100}\n  Running:  {spec}  ({n + 1} of {SPECS_PER_RUN})\n")
        sleep(step)
        for i, title in enumerate(titles):
            bad = fail_here and i == len(titles) - 1
            if flaky and n == 0 and i == 1:
                run.say(f"    (Attempt 1 of 3) {title}")
            run.say(f"    {'1) ' if bad else '✓ '}{title}")
        run.write_report(n, mochawesome_report(spec, f"{label} migration {n + 1}", titles, fail_here))
        total += len(titles)
        failed += 1 if fail_here else 0
        sleep(step)
    if not banner:  # Cypress's console output went elsewhere: only an outcome file says the run ended
        return total, failed
    run.say(f"\n{BAR}\n\n  (Run Finished)\n")
    if failed:
        run.say(f"    ✖  {failed} of {SPECS_PER_RUN} failed ({100 * failed // SPECS_PER_RUN}%)   00:{SPECS_PER_RUN:02d}"
                f"   {total}   {total - failed}   {failed}   -   -")
    else:
        run.say(f"    ✔  All specs passed!   00:{SPECS_PER_RUN:02d}   {total}   {total}   -   -   -")
    return total, failed


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Simulated ATVM launcher writing a run's evidence.")
    p.add_argument("--build-name", default=os.environ.get(BUILD_ENV),
                   help=f"required; else ${BUILD_ENV}, which keeps it out of argv (no process scan finds it)")
    p.add_argument("--log-dir", required=True, type=Path)
    p.add_argument("--report-dir", required=True, type=Path)
    p.add_argument("--group", action="append", default=[], metavar="NAME:pass|fail",
                   help="a categorized sub-run, in order (repeat); none: one plain run")
    p.add_argument("--outcome", choices=["pass", "fail"], default="pass", help="plain run's outcome")
    p.add_argument("--step-seconds", type=float, default=1.0)
    p.add_argument("--start-delay", type=float, default=0.0, help="seconds alive before any file appears")
    p.add_argument("--pid-file", action="store_true", help="write the pid file (RunLayout.pid_file)")
    p.add_argument("--outcome-file", choices=["exit", "status", "none"], default="exit")
    p.add_argument("--hang", action="store_true", help="stop writing half-way and stay alive")
    p.add_argument("--die", action="store_true", help="SIGKILL itself half-way (no outcome files)")
    p.add_argument("--stamp-mtimes", action="store_true",
                   help="set each written file's mtime from this process's clock (for runs under libfaketime)")
    p.add_argument("--log-mode", choices=["truncate", "replace", "append"], default="truncate",
                   help="a log an earlier run left: truncated, replaced by a new file, or appended to")
    p.add_argument("--no-banner", action="store_true",
                   help="leave Cypress's (Run Starting)/(Run Finished) banners out of the logs")
    p.add_argument("--backdate", type=float, default=0.0, metavar="SECONDS",
                   help="the first --backdate-groups groups (plain: the whole run) ran this long ago")
    p.add_argument("--backdate-groups", type=int, default=1)
    p.add_argument("--backdate-stride", type=float, default=60.0, help="seconds between back-dated writes")
    p.add_argument("--flaky", action="store_true", help="in each (sub-)run, one test passes only on a retry")
    args = p.parse_args(argv)
    if not args.build_name:
        p.error(f"--build-name (or ${BUILD_ENV}) is required")
    return args


def _finish(run: Run, failed: bool, how: str) -> None:
    for path in (run.exit_file, run.status_file):
        path.parent.mkdir(parents=True, exist_ok=True)
    if how == "exit":
        run.write_outcome(run.exit_file, "1\n" if failed else "0\n")
    elif how == "status":
        run.write_outcome(run.status_file, "FAILED\n" if failed else "COMPLETED\n")


def _interrupt(args: argparse.Namespace) -> None:
    if args.die:
        os.kill(os.getpid(), signal.SIGKILL)
    if args.hang:
        while True:
            sleep(3600)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    # The folders from the arguments, the file names from the same template settings the watcher reads.
    layout = RunLayout(args.build_name, args.log_dir, args.report_dir, load().templates)
    args.log_dir.mkdir(parents=True, exist_ok=True)
    stamp = Stamper(args.stamp_mtimes, args.backdate, args.backdate_stride)
    if args.pid_file:
        layout.pid_file().parent.mkdir(parents=True, exist_ok=True)
        layout.pid_file().write_text(f"{os.getpid()}\n", encoding="utf-8")
        if args.stamp_mtimes:  # by the launcher's clock, never back-dated: it is the live process's
            os.utime(layout.pid_file(), (time.time(), time.time()))
    sleep(args.start_delay)
    parent = Run(layout.run(), stamp)
    banner = not args.no_banner
    any_failed = False
    if not args.group:
        parent.start_log(args.log_mode)
        if args.hang or args.die:
            parent.say(f"\n{BAR}\n\n  (Run Starting)\n")
            _interrupt(args)
        _, failed = run_specs(parent, "main", args.outcome == "pass", args.step_seconds, banner, args.flaky)
        any_failed = failed > 0
    else:
        for i, spec in enumerate(args.group):
            name, _, outcome = spec.partition(":")
            stamp.past = i < args.backdate_groups and args.backdate > 0
            group = Run(layout.group(name), stamp)
            group.start_log(args.log_mode)
            if i == len(args.group) - 1 and (args.hang or args.die):
                group.say(f"\n{BAR}\n\n  (Run Starting)\n")
                _interrupt(args)
            _, failed = run_specs(group, name, outcome != "fail", args.step_seconds, banner, args.flaky)
            _finish(group, failed > 0, args.outcome_file)
            any_failed = any_failed or failed > 0
        stamp.past = len(args.group) <= args.backdate_groups and args.backdate > 0
    _finish(parent, any_failed, args.outcome_file)
    return 1 if any_failed else 0


if __name__ == "__main__":
    sys.exit(main())
