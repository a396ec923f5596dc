#!/usr/bin/env python3
"""Benchmark: how fast and how cheap is a watcher? Run by hand, not by the test suite.

    python3 bench/bench_watchers.py --write docs/PERFORMANCE.md     # about 4 minutes on 2 cores

Every figure comes from real processes: the simulated launcher (atvm_dev/simulate.py), the
real watcher (atvm_run_watcher.py watch, default settings), the loopback Mattermost double, and
the naive alternative (bench/naive_watch.sh: grep + curl in a shell loop). Sections:
  1 latency      finish evidence written (closing line, .exit, .status) -> post on the receiver
  2 idle         CPU and memory of waiting watchers beside a bare sleeping interpreter (and a naive loop)
  3 many         N watchers on N runs finishing together, with file events and polling
  4 big          a 1 GiB log, 10,000 reports (and 200,000, memory only); the /proc scan with ~500 processes
  5 naive        the shell loop beside the watcher (figures gathered in 1, 2 and 4)
  hugereports    the watcher's peak memory on a finished run with 200,000 reports (its own block)
It prints the tables and, with --write, puts them between the markers in docs/PERFORMANCE.md.
``--only hugereports --write DOC`` measures and writes that section's block alone.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib as bl  # noqa: E402
from benchlib import World  # noqa: E402

from atvm_watcher import decide as decide_mod  # noqa: E402
from atvm_watcher import evidence, procs  # noqa: E402
from atvm_watcher.layout import RunLayout  # noqa: E402
from atvm_watcher.settings import Settings  # noqa: E402

MIB = 1024 * 1024
UNIT_PYTHON = "/usr/bin/python3"  # ExecStart of deploy/atvm-run-watcher@.service
PY = UNIT_PYTHON if os.path.exists(UNIT_PYTHON) else sys.executable  # set from --python in main()


# --- 1: detection latency --------------------------------------------------------------------------------


def bench_latency(tmp: Path, rx: bl.TimedReceiver, runs: int, outcome_runs: int, poll_runs: int,
                  step: float) -> Dict[str, Any]:
    world = World.make(tmp, "latency", rx.url, PY)
    rng = random.Random(20261126)
    rows = []
    try:
        for i in range(runs):
            rows.append(_one_latency_run(world, rx, f"bench-lat-{i:03d}", step, rng.uniform(0.2, 1.2)))
        for i in range(outcome_runs):
            for kind in ("exit", "status"):
                rows.append(_one_outcome_run(world, rx, f"bench-lat-{kind}-{i:03d}", kind, rng.uniform(0.2, 1.2)))
        for i in range(outcome_runs):
            rows.append(_one_outcome_run(world, rx, f"bench-lat-rest-{i:03d}", "exit", rng.uniform(0.2, 1.2),
                                         rested=True))
        for i in range(poll_runs):
            rows.append(_one_latency_run(world, rx, f"bench-lat-poll-{i:03d}", step, rng.uniform(0.2, 1.2),
                                         poll=True))
    finally:
        world.stop_all()
    counts = rx.counts()
    return {"rows": rows, "once": all(counts.get(("watcher", r["build"])) == 1 for r in rows),
            "naive_once": all(counts.get(("naive", r["build"])) == 1 for r in rows if r["naive"] is not None)}


LATENCY_KINDS = ("closing line", ".exit file", ".status file")  # finish evidence, with file events
POLLED = "closing line, ATVM_WAKE=poll"


def _one_latency_run(world: World, rx: bl.TimedReceiver, build: str, step: float, delay: float,
                     poll: bool = False) -> Dict[str, Any]:
    # The delay before the run's first file puts its end at a random point of the watcher's poll cycle.
    launcher = world.launcher(build, "--step-seconds", f"{step:g}", "--start-delay", f"{delay:.3f}")
    watcher = world.watcher(build, env={"ATVM_WAKE": "poll"} if poll else None)
    naive = None if poll else world.naive(build)
    rx.wait_for([("watcher", build)] + ([] if poll else [("naive", build)]), timeout=60)
    code, cpu, rss = bl.reap(watcher, 60)
    bl.reap(launcher, 30)
    if naive is not None:
        bl.reap(naive, 10)
    finished = finished_at(world, build)
    ours, theirs = rx.arrived.get(("watcher", build)), rx.arrived.get(("naive", build))
    return {"build": build, "kind": POLLED if poll else "closing line", "exit": code, "cpu": cpu, "rss": rss,
            "ours": since(finished, ours), "naive": None if poll else since(finished, theirs)}


QUIET_LOG = "    ✓ cuts over and boots the target (21877ms)\n\n  3 passing (2m)\n"  # --quiet: no closing line


RESTED = ".exit file, resting watcher"


def _one_outcome_run(world: World, rx: bl.TimedReceiver, build: str, kind: str, delay: float,
                     rested: bool = False) -> Dict[str, Any]:
    """A run whose only finish evidence is its .exit (or .status) file, written while the watcher waits
    (``rested``: while it rests, with ATVM_REST_AFTER_SECONDS=1 so that it rests within seconds)."""
    layout = world.layout(build)
    run = layout.run()
    launcher = world.spawn(["sleep", "600"])
    layout.pid_file().write_text(f"{launcher.pid}\n")
    run.log.write_text(QUIET_LOG)
    now = time.time()
    bl.write_reports(run.reports, 3, 0, (now, now))
    watcher = world.watcher(build, env={"ATVM_REST_AFTER_SECONDS": "1"} if rested else None)
    state = world.root / "state" / build / "state.json"
    deadline = time.monotonic() + 30
    while not state.exists() and time.monotonic() < deadline:  # the watcher has looked once
        time.sleep(0.02)
    while rested and _image(watcher.pid) != "resting" and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(delay)
    path = run.exit if kind == "exit" else run.status
    path.write_text("0\n" if kind == "exit" else "COMPLETED\n")
    written = path.stat().st_mtime_ns / 1e9
    rx.wait_for([("watcher", build)], timeout=60)
    code, cpu, rss = bl.reap(watcher, 60)
    launcher.kill()
    launcher.wait()
    return {"build": build, "kind": RESTED if rested else f".{kind} file", "exit": code, "cpu": cpu, "rss": rss,
            "ours": since(written, rx.arrived.get(("watcher", build))), "naive": None}


def finished_at(world: World, build: str) -> Optional[float]:
    """The summary is the log's last write and comes before the .exit file: the earliest terminal evidence."""
    try:
        return world.layout(build).run().log.stat().st_mtime_ns / 1e9
    except OSError:
        return None


def since(start: Optional[float], end: Optional[float]) -> Optional[float]:
    return None if start is None or end is None else end - start


# --- 2: idle cost ------------------------------------------------------------------------------------------


BARE = "bare python3 sleeping in 1 s steps (the reference)"


def bench_idle(tmp: Path, rx: bl.TimedReceiver, seconds: float, warmup: float, reports: int,
               process_target: int) -> Dict[str, Any]:
    world = World.make(tmp, "idle", rx.url, PY)
    filler = bl.fill_process_table(process_target)
    try:
        for build in ("bench-idle-quiet", "bench-idle-10k", "bench-idle-poll", "bench-idle-resident"):
            world.launcher(build, "--hang")
        time.sleep(1.0)  # reports written after the launcher started belong to its run
        now = time.time()
        bl.write_reports(world.layout("bench-idle-10k").run().reports, reports, 0, (now - 0.5, now - 0.5))
        subjects = {
            BARE: (world.bare_python(), False),
            "watcher, quiet run (launcher alive, log quiet)": (world.watcher("bench-idle-quiet"), False),
            f"watcher, quiet run with {reports:,} reports": (world.watcher("bench-idle-10k"), False),
            f"watcher, run not started yet (no launcher known, {bl.process_count()} processes)":
                (world.watcher("bench-idle-nolauncher"), False),
            "watcher, quiet run, ATVM_WAKE=poll (the fallback)":
                (world.watcher("bench-idle-poll", env={"ATVM_WAKE": "poll"}), False),
            RESIDENT: (world.watcher("bench-idle-resident", env={"ATVM_WAKE": "events"}), False),
            "naive loop (grep + curl every 1 s), same quiet run": (world.naive("bench-idle-quiet"), True),
        }
        if os.path.realpath(sys.executable) != os.path.realpath(PY):
            subjects[f"watcher, quiet run, under {sys.executable} (this checkout's dev Python)"] = (
                world.watcher("bench-idle-quiet-dev", python=sys.executable), False)
            subjects[f"bare {sys.executable} sleeping in 1 s steps"] = (world.bare_python(sys.executable), False)
            world.launcher("bench-idle-quiet-dev", "--hang")
        return _measure_window(subjects, seconds, warmup)
    finally:
        world.stop_all()
        for p in filler:
            p.kill()
            p.wait()


def _measure_window(subjects: Dict[str, Any], seconds: float, warmup: float) -> Dict[str, Any]:
    """CPU over the window; peak RSS: the largest of VmRSS sampled every 0.5 s through the window and VmHWM at
    its end (VmHWM alone would not do: a watcher that rests exec()s, which starts VmHWM afresh)."""
    time.sleep(warmup)  # past startup, the first full report parse, YOUNG_SECONDS and ATVM_REST_AFTER_SECONDS
    start = {name: bl.cpu_seconds(p.pid, kids) for name, (p, kids) in subjects.items()}
    image = {name: _image(p.pid) for name, (p, kids) in subjects.items()}
    peak = {name: 0 for name in subjects}
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:  # the sampling is this process's CPU, not the subjects'
        for name, (p, kids) in subjects.items():
            if not kids:
                with contextlib.suppress(OSError, ValueError, IndexError):
                    peak[name] = max(peak[name], bl.status_kib(p.pid, "VmRSS"))
        time.sleep(min(0.5, max(0.0, seconds - (time.monotonic() - t0))))
    elapsed = time.monotonic() - t0
    rows = []
    for name, (p, kids) in subjects.items():
        alive = p.poll() is None
        cpu = bl.cpu_seconds(p.pid, kids) - start[name] if alive else float("nan")
        hwm = max(peak[name], bl.status_kib(p.pid, "VmHWM")) if alive and not kids else None
        rows.append({"name": name, "alive": alive, "cpu": cpu, "share": 100 * cpu / elapsed,
                     "since_start": bl.cpu_seconds(p.pid, kids) if alive else float("nan"), "hwm": hwm,
                     "image": f"{image[name]} -> {_image(p.pid) if alive else 'exited'}"})
    return {"seconds": elapsed, "warmup": warmup, "rows": rows}


RESIDENT = "watcher, quiet run, ATVM_WAKE=events (resident: never rests)"


def _image(pid: int) -> str:
    """What the process runs: the light waiter (resting), the watcher, or something else."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "gone"
    if b"atvm-run-watcher" in argv and b"resting" in argv:  # the light waiter's marker (commands/watch.py)
        return "resting"
    return "watcher" if any(a.endswith(b"atvm_run_watcher.py") for a in argv) else "-"


# --- 3: many watchers -------------------------------------------------------------------------------------


def bench_many(tmp: Path, rx: bl.TimedReceiver, n: int, step: float, poll: bool = False) -> Dict[str, Any]:
    world = World.make(tmp, "many-poll" if poll else "many", rx.url, PY)
    builds = [f"bench-many{'-poll' if poll else ''}-{i:03d}" for i in range(n)]
    try:
        # Every watcher is up and waiting (it wrote its first state.json) before the launchers start, and
        # every launcher is started before any writes: on a busy machine start-up must not be measured.
        watchers = [world.watcher(b, env={"ATVM_WAKE": "poll"} if poll else None) for b in builds]
        states = [world.root / "state" / b / "state.json" for b in builds]
        deadline = time.monotonic() + 60 + n
        while not all(p.exists() for p in states) and time.monotonic() < deadline:
            time.sleep(0.2)
        begin = time.time() + 10 + 0.15 * n
        launchers = [world.launcher(b, "--step-seconds", f"{step:g}", "--start-delay",
                                    f"{max(0.0, begin - time.time()):.3f}") for b in builds]
        time.sleep(max(0.0, begin - 2 - time.time()))
        early = [w.returncode for w in watchers if w.poll() is not None]
        up = len(watchers) - len(early)
        pss = sum(bl.pss_kib(w.pid) for w in watchers)
        on_events = sum(1 for w in watchers if bl.uses_inotify(w.pid))
        resting = sum(1 for w in watchers if _image(w.pid) == "resting")
        arrived = rx.wait_for([("watcher", b) for b in builds], timeout=120 + 2 * n)
        reaped = [bl.reap(w, 60) for w in watchers]
        for launcher in launchers:
            bl.reap(launcher, 30)
    finally:
        world.stop_all()
    ends = [finished_at(world, b) for b in builds]
    lat = [x for x in (since(e, rx.arrived.get(("watcher", b))) for b, e in zip(builds, ends)) if x is not None]
    ends = [e for e in ends if e is not None] or [float("nan")]
    counts = rx.counts()
    return {"n": n, "up_before_end": up, "early_exits": early, "all_arrived": arrived, "latencies": lat,
            "once": sum(1 for b in builds if counts.get(("watcher", b)) == 1), "on_events": on_events,
            "resting": resting,
            "exit0": sum(1 for code, _, _ in reaped if code == 0), "cpu": [c for _, c, _ in reaped],
            "rss": [r for _, _, r in reaped], "pss": pss, "spread": max(ends) - min(ends),
            "receiver": [since(rx.accepted.get(("watcher", b)), rx.arrived.get(("watcher", b))) for b in builds]}


# --- 4: big evidence -------------------------------------------------------------------------------------


def cpu_of(fn: Callable[[], Any], repeat: int = 1) -> float:
    """Mean CPU seconds of fn() in this process."""
    c0 = time.process_time()
    for _ in range(repeat):
        fn()
    return (time.process_time() - c0) / repeat


def bench_log_sizes(tmp: Path, sizes: List[int], polls: int) -> List[Dict[str, Any]]:
    folder = tmp / "biglog"
    sleeper = subprocess.Popen(["sleep", "3600"])
    rows = []
    try:
        for size in sizes:
            layout = RunLayout(f"bench-log-{size // MIB}m", folder / "log", folder / "reports")
            log = layout.run().log
            bl.write_log(log, size)
            layout.pid_file().write_text(f"{sleeper.pid}\n")
            rows.append(_log_poll_costs(layout, polls))
            log.unlink()
    finally:
        sleeper.kill()
        sleeper.wait()
    return rows


def _log_poll_costs(layout: RunLayout, polls: int) -> Dict[str, Any]:
    log = layout.run().log
    tail = evidence.LogTail(log)
    first = cpu_of(tail.facts)
    quiet = cpu_of(tail.facts, polls)
    grown = 0.0
    for _ in range(polls):
        with log.open("ab") as fh:
            fh.write(b"  cy:xhr  GET /api/v1/jobs/42/status  Status: 200\n")
        grown += cpu_of(tail.facts)
    reader = evidence.EvidenceReader(layout, False)
    reader.snapshot()
    snap = cpu_of(reader.snapshot, polls)
    grep = [_grep_cost(log) for _ in range(3)]
    return {"size": log.stat().st_size, "first": first, "quiet": quiet, "grown": grown / polls, "snapshot": snap,
            "grep_cpu": bl.median([g[0] for g in grep]), "grep_wall": bl.median([g[1] for g in grep])}


def _grep_cost(log: Path):
    t0 = time.monotonic()
    proc = subprocess.Popen(["grep", "-q", "(Run Finished)", str(log)])
    _, cpu, _ = bl.reap(proc, 120)
    return cpu, time.monotonic() - t0


def bench_reports(tmp: Path, rx: bl.TimedReceiver, count: int, polls: int) -> Dict[str, Any]:
    world = World.make(tmp, "reports", rx.url, PY)
    build = "bench-reports-10k"
    _finished_run(world, build, count)
    reader = evidence.EvidenceReader(world.layout(build), False)
    t0, c0 = time.monotonic(), time.process_time()
    decision = decide_mod.decide(reader.snapshot(), decide_mod.Limits())
    first = {"wall": time.monotonic() - t0, "cpu": time.process_time() - c0, "state": decision.run.state,
             "tests": decision.run.counts.tests, "failed": decision.run.counts.failed}
    scanner = reader.parent.scanner
    clock = [time.time()]

    def cheap_poll():
        clock[0] += 1.0
        scanner.scan(clock[0])

    snap = reader.snapshot()
    costs = {"cheap": cpu_of(cheap_poll, polls), "thorough": cpu_of(lambda: scanner.scan(time.time(), True), 5),
             "full_walk": cpu_of(lambda: _full_walk(world.layout(build).run().reports), 5),
             "decide": cpu_of(lambda: decide_mod.decide(snap, decide_mod.Limits()), 10)}
    e2e = _watch_finished_run(world, rx, build)
    return {"count": count, "first": first, "costs": costs, "e2e": e2e}


def _finished_run(world: World, build: str, count: int) -> None:
    """A run that ended two minutes ago: log, exit file and ``count`` reports, one of them failed."""
    now = time.time()
    run = world.layout(build).run()
    log = run.log
    bl.write_log(log, 2 * MIB)
    with log.open("ab") as fh:
        fh.write("\n  (Run Finished)\n    ✖  1 of 900 failed (0%)   2:01:07   2700   2699   1   -   -\n".encode())
    bl.write_reports(run.reports, count, 1, (now - 7200, now - 125))
    os.utime(run.reports, (now - 125, now - 125))
    run.exit.write_text("1\n")
    os.utime(run.exit, (now - 120, now - 120))
    # The decision rules date the run from the earliest of its own files' mtimes: the log's is set to
    # the run's start so that every report counts (see docs/PERFORMANCE.md).
    os.utime(log, (now - 7300, now - 7300))


def _full_walk(folder: Path) -> int:
    n = 0
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            os.stat(os.path.join(dirpath, name))
            n += 1
    return n


def _watch_finished_run(world: World, rx: bl.TimedReceiver, build: str) -> Dict[str, Any]:
    subprocess.run(["sync"], check=False)
    t0 = time.time()
    watcher = world.watcher(build)
    rx.wait_for([("watcher", build)], timeout=60)
    code, cpu, rss = bl.reap(watcher, 60)
    arrived = rx.arrived.get(("watcher", build))
    return {"seconds": None if arrived is None else arrived - t0, "exit": code, "cpu": cpu, "rss": rss,
            "posts": rx.counts().get(("watcher", build), 0)}


HUGE_RSS_TARGET_MIB = 64


def bench_huge_reports(tmp: Path, rx: bl.TimedReceiver, count: int) -> Dict[str, Any]:
    """A run that finished two minutes ago with ``count`` small reports: the real watcher's peak RSS to post it.

    VmHWM is read from /proc/<pid>/status while the watcher runs; wait4()'s ru_maxrss is the same high-water
    mark as the kernel kept it to the watcher's exit (the sampling can miss the last few milliseconds).
    """
    world = World.make(tmp, "hugereports", rx.url, PY)
    build = "bench-reports-huge"
    t0 = time.monotonic()
    _finished_run(world, build, count)
    written = time.monotonic() - t0
    subprocess.run(["sync"], check=False)
    t0 = time.time()
    watcher = world.watcher(build)
    hwm = 0
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        pid, status, usage = os.wait4(watcher.pid, os.WNOHANG)
        if pid:
            watcher.returncode = os.waitstatus_to_exitcode(status)
            break
        try:
            hwm = max(hwm, bl.status_kib(watcher.pid, "VmHWM"))
        except OSError:
            pass
        time.sleep(0.02)
    else:
        watcher.kill()
        watcher.wait()
        usage = None
    arrived = rx.arrived.get(("watcher", build))
    shutil.rmtree(world.root, ignore_errors=True)
    return {"count": count, "written": written, "seconds": None if arrived is None else arrived - t0,
            "exit": watcher.returncode, "cpu": usage.ru_utime + usage.ru_stime if usage else None,
            "maxrss": usage.ru_maxrss if usage else None, "hwm": hwm,
            "posts": rx.counts().get(("watcher", build), 0)}


def bench_proc_scan(process_target: int, repeat: int) -> Dict[str, Any]:
    """ArgvScanner.find() for a build no process names, with ~process_target processes present."""
    filler = bl.fill_process_table(process_target)
    try:
        present = bl.process_count()
        t = time.time()
        full = bl.median([cpu_of(lambda: procs.ArgvScanner("bench-absent", (os.getpid(),)).find(t))
                          for _ in range(5)])
        scanner = procs.ArgvScanner("bench-absent", (os.getpid(),))
        scanner.find(t)
        later = t + procs.RECHECK_NEW_SECONDS + 1  # past the re-reads of pids first seen at t
        scanner.find(later)
        quiet = cpu_of(lambda: scanner.find(later), repeat)
        created = []
        for _ in range(20):
            subprocess.run(["true"], check=True)  # one new pid: its argv read by number, /proc not listed
            created.append(cpu_of(lambda: scanner.find(later)))
    finally:
        for p in filler:
            p.kill()
            p.wait()
    listing = bl.median(created)
    return {"processes": present, "full": full, "quiet": quiet, "created": listing,
            "per_second": listing}  # no periodic full rescan: only before a decision ends a run


def bench_big_live(tmp: Path, rx: bl.TimedReceiver, size: int, seconds: float) -> Dict[str, Any]:
    """Our watcher and the naive loop on the same quiet run whose log is ``size`` bytes."""
    world = World.make(tmp, "biglive", rx.url, PY)
    build = "bench-big-live"
    layout = world.layout(build)
    launcher = world.spawn(["sleep", "3600"])
    layout.pid_file().write_text(f"{launcher.pid}\n")
    bl.write_log(layout.run().log, size)
    subprocess.run(["sync"], check=False)
    try:
        subjects = {BARE: (world.bare_python(), False), "watcher": (world.watcher(build), False),
                    "naive loop": (world.naive(build), True)}
        return _measure_window(subjects, seconds, warmup=3.0)
    finally:
        world.stop_all()
        layout.run().log.unlink()


# --- tables ------------------------------------------------------------------------------------------------


def ms(seconds: Optional[float]) -> str:
    if seconds is None or seconds != seconds:  # None or NaN: nothing was measured
        return "n/a"
    return f"{seconds * 1000:.2f} ms" if seconds < 0.1 else f"{seconds:.2f} s"


def top(values: List[float]) -> float:
    return max(values) if values else float("nan")


def pass_mark(ok: bool) -> str:
    return "met" if ok else "**NOT met**"


def table(head: List[str], rows: List[List[str]]) -> List[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    return out + ["| " + " | ".join(r) + " |" for r in rows]


def render(res: Dict[str, Any], args: argparse.Namespace, info: Dict[str, str]) -> str:
    lines = [f"Measured {info['date']} on {info['cpu']}, {info['memory']} RAM, Linux {info['kernel']} "
             f"({info['load']}, {bl.load_average()} at the end: other work shared the machine); "
             f"evidence on {info['fs']}; commit {info['commit']}. Watchers run under {info['python']} "
             f"(the unit's interpreter, byte-compiled as the installer does); in-process figures under "
             f"{info['bench_python']}.",
             "", f"Command: `{info['command']}` ({info['duration']})", ""]
    for section in (_latency_md, _idle_md, _many_md, _big_md, _naive_md):
        lines += section(res, args) + [""]
    return "\n".join(lines).rstrip() + "\n"


def _latency_md(res, args) -> List[str]:
    lat = res["latency"]
    rows, events = [], []
    for kind in LATENCY_KINDS + (RESTED, POLLED):
        xs = [r["ours"] for r in lat["rows"] if r["kind"] == kind and r["ours"] is not None]
        n = sum(1 for r in lat["rows"] if r["kind"] == kind)
        if not n:
            continue
        if kind not in (POLLED, RESTED):
            events += xs
        rows.append([kind, str(n), ms(bl.median(xs)), ms(bl.pct(xs, 95)), ms(top(xs)),
                     "" if len(xs) == n else f"**{n - len(xs)} not posted**"])
    med, p95 = bl.median(events), bl.pct(events, 95)
    complete = lat["once"] and all(r["ours"] is not None for r in lat["rows"])
    rows.append(["**all finish evidence, file events**", str(len(events)), ms(med), ms(p95), ms(top(events)),
                 f"target median <= 0.1 s, p95 <= 0.5 s: {pass_mark(med <= 0.1 and p95 <= 0.5 and complete)}"])
    return ["### 1. Detection latency (default settings)", "",
            "Plain runs one after another, the clock started when the finish evidence was written and stopped "
            "when the receiver had the post. *closing line*: a simulated launcher writing 3 specs, the clock "
            "starting at the mtime of the log's last write (Cypress's closing line, which precedes the .exit "
            "file); *.exit file* / *.status file*: a quiet run (no closing line) whose outcome file is written "
            "while the watcher waits, the clock starting at that file's mtime; *resting watcher*: the same, the "
            ".exit file written while the watcher rests as the light waiter (ATVM_REST_AFTER_SECONDS=1 so that "
            "it rests within a second; the default changes only when it starts resting), so the post "
            "waits for the watcher to come back (an exec() and its imports); *ATVM_WAKE=poll*: the polling "
            "fallback (a look every second) on closing-line runs. The target row counts the runs of the "
            "default path (a watcher is resident while its run writes), not these two.", ""] + table(
        ["finish evidence", "runs", "median", "p95", "max", ""], rows) + [
        "", f"Every run posted exactly once: {'yes' if lat['once'] else '**no**'}; watcher exit codes: "
        f"{sorted({r['exit'] for r in lat['rows']})}; CPU per watcher over its whole life (start-up included): "
        f"{ms(bl.median([r['cpu'] for r in lat['rows']]))} median; peak RSS (posting included): "
        f"{bl.median([r['rss'] for r in lat['rows']]) / 1024:.1f} MiB median."]


def _idle_rows(rows: List[Dict[str, Any]]) -> List[List[str]]:
    bare = next(r for r in rows if r["name"] == BARE)
    out = []
    for r in rows:
        hwm = f"{r['hwm'] / 1024:.1f} MiB" if r["hwm"] else "-"
        more = f"{(r['hwm'] - bare['hwm']) / 1024:+.1f} MiB" if r["hwm"] and r is not bare else "-"
        out.append([r["name"], r.get("image", "-"), f"{r['cpu'] * 1000:.1f} ms", f"{r['share']:.4f} %",
                    ratio(r["cpu"], bare["cpu"]), hwm, more, "" if r["alive"] else "**exited early**"])
    return out


def idle_met(row: Dict[str, Any], bare: Dict[str, Any]) -> Tuple[bool, bool]:
    """(CPU no more than the bare interpreter's, peak RSS within 3 MiB of it)."""
    return row["cpu"] <= bare["cpu"], row["hwm"] is not None and row["hwm"] - bare["hwm"] <= 3 * 1024


def _idle_md(res, args) -> List[str]:
    idle = res["idle"]
    bare = next(r for r in idle["rows"] if r["name"] == BARE)
    verdicts = []
    for r in idle["rows"]:
        if r["name"].startswith("watcher") and "ATVM_WAKE=" not in r["name"] and "dev Python" not in r["name"]:
            cpu_ok, rss_ok = idle_met(r, bare)
            verdicts.append(f"{r['name'].split(', ', 1)[1]}: CPU {pass_mark(cpu_ok)}, RSS {pass_mark(rss_ok)}")
    return ["### 2. Idle cost", "",
            f"All at once, over the same {idle['seconds']:.0f} s window, after {idle['warmup']:.0f} s of warm-up "
            "(start-up, first parse of every report, the reports' first YOUNG_SECONDS, and "
            "ATVM_REST_AFTER_SECONDS, after which a quiet watcher rests), with about "
            f"{args.processes} processes on the machine. CPU from /proc/<pid>/task/*/schedstat (the naive loop: "
            "/proc/<pid>/stat with its reaped children, in clock ticks); peak RSS is the largest VmRSS sampled "
            "every 0.5 s through the window and VmHWM at its end (a rest exec()s, which starts VmHWM afresh: "
            "the samples would show a watcher that came back within the window). *image*: what the process "
            "ran at the window's start -> end (*resting*: the light waiter, rest.py). The machine is shared and "
            "noisy: the ratio to the bare interpreter, measured in the same window, is the figure to read, not "
            "the absolute CPU.", ""] + table(
        ["process", "image", "CPU in window", "of one core", "x bare", "peak RSS", "RSS - bare", ""],
        _idle_rows(idle["rows"])) + [
        "", "Target for a waiting watcher: no more CPU than the bare interpreter and a peak RSS within 3 MiB of "
        "its: " + "; ".join(verdicts) + "."]


def _many_md(res, args) -> List[str]:
    variants = [m for m in (res["many"], res.get("many_poll")) if m]
    m0 = variants[0]

    def row(name, fn):
        return [name] + [fn(m) for m in variants]

    def ok(m):
        lat = m["latencies"]
        return m["once"] == m["n"] and m["exit0"] == m["n"] and len(lat) == m["n"] and bl.pct(lat, 95) <= 2

    spreads = " and ".join(f"{m['spread']:.2f} s" for m in variants)
    head = ["measure", "file events (default)", "ATVM_WAKE=poll (a look every second)"][: len(variants) + 1]
    return [f"### 3. {m0['n']} watchers on {m0['n']} concurrent runs ({os.cpu_count()} cores)", "",
            f"{m0['n']} watchers started and waiting, then {m0['n']} simulated launchers timed to start writing "
            "together, one per watcher (default settings), writing a spec a second; done with file events, then "
            f"again with polling. The finishes fell within {spreads} of each other.",
            ""] + table(head, [
        row("posted exactly once", lambda m: f"{m['once']} of {m['n']}"),
        row("watchers exiting 0", lambda m: f"{m['exit0']} of {m['n']}"),
        row("watchers waiting on file events (inotify; the rest poll)", lambda m: f"{m['on_events']} of {m['n']}"),
        row("of them resting (the light waiter) 2 s before the runs start", lambda m: f"{m.get('resting', 0)}"),
        row("latency median / p95 / max", lambda m: f"{ms(bl.median(m['latencies']))} / "
            f"{ms(bl.pct(m['latencies'], 95))} / {ms(top(m['latencies']))}"),
        row("the receiver's own time per post (connection accepted -> post stored): median / p95 / max",
            lambda m: receiver_share(m.get("receiver"))),
        row("CPU, all watchers, whole life", lambda m: f"{sum(m['cpu']):.2f} s ({ms(bl.median(m['cpu']))} each)"),
        row("memory: sum of PSS while waiting", lambda m: f"{m['pss'] / 1024:.0f} MiB"),
        row("memory: sum of peak RSS (the peak includes posting)",
            lambda m: f"{sum(m['rss']) / 1024:.0f} MiB ({top(m['rss']) / 1024:.1f} MiB the largest)"),
        row("every run posted exactly once, within 2 s p95", lambda m: pass_mark(ok(m)))])


def receiver_share(values: Optional[List[Optional[float]]]) -> str:
    """The double's own time per post (and the sender's, from connecting to its last byte): how much of a latency
    the bench may have added, since the receiver shares the cores with the watchers."""
    known = [v for v in values or () if v is not None]
    return f"{ms(bl.median(known))} / {ms(bl.pct(known, 95))} / {ms(top(known))}" if known else "-"


def _big_md(res, args) -> List[str]:
    logs, rep, scan = res["logs"], res["reports"], res["procscan"]
    log_rows = [[f"{r['size'] / MIB:,.0f} MiB", ms(r["first"]), ms(r["quiet"]), ms(r["grown"]), ms(r["snapshot"]),
                 f"{ms(r['grep_cpu'])} CPU, {ms(r['grep_wall'])} wall"] for r in logs]
    flat = logs[-1]["grown"] <= 3 * logs[0]["grown"] + 0.0002
    c = rep["costs"]
    e2e = rep["e2e"]
    first_ok = e2e["seconds"] is not None and e2e["seconds"] <= 2 and e2e["posts"] == 1
    out = ["### 4. Big evidence", "", "**The log.** CPU per call, in-process (`LogTail.facts()`, and the whole "
           "`EvidenceReader.snapshot()` with a live launcher from a pid file); the naive loop's `grep` beside it.",
           ""] + table(["log size", "first read (last 16 MiB)", "poll, log quiet", "poll, one line appended",
                        "whole snapshot", "naive: one grep of the log"], log_rows) + [
        "", f"Poll cost flat from 1 MiB to 1 GiB: {pass_mark(flat)}.", "",
        f"**{rep['count']:,} report files** (one folder, mochawesome JSON, one failure), run finished two minutes "
        "before the watcher starts.", ""] + table(
        ["measure", "value"],
        [["first classification in-process (reader + decide)",
          f"{ms(rep['first']['wall'])} wall, {ms(rep['first']['cpu'])} CPU -> {rep['first']['state']}, "
          f"{rep['first']['tests']:,} tests, {rep['first']['failed']} failed"],
         ["watcher started -> post on the receiver (target <= 2 s)",
          f"{ms(e2e['seconds']) if e2e['seconds'] is not None else 'no post'}: {pass_mark(first_ok)}"],
         ["report scan per later poll (cheap: folders, young files, at most "
          f"{evidence.SWEEP_PER_LOOK} of the rest)", ms(c["cheap"])],
         ["report scan per poll while finish evidence is new (every file stat-ed)", ms(c["thorough"])],
         ["for comparison: a full walk stat-ing every file (what each poll cost before)", ms(c["full_walk"])],
         ["decide() on a snapshot with all these reports (decision code, not the adapter)", ms(c["decide"])]])
    return out + [
        "", f"**/proc scan while no launcher is known**, {scan['processes']} processes present (in-process, "
        "`ArgvScanner.find()`):", ""
    ] + table(["measure", "value"], [
        ["full scan: every argv read (the first poll, and before a decision ends a run or sub-run with no "
         "launcher alive; what every poll cost before)", ms(scan["full"])],
        ["poll, no process created since the last one (/proc/loadavg unchanged)", ms(scan["quiet"])],
        ["poll after a process was created (its argv read by pid, /proc not listed)", ms(scan["created"])],
        ["per second at one poll a second, a process created every second", ms(scan["per_second"])]])


def _huge_md(res, args, info) -> List[str]:
    h = res["hugereports"]
    peak = max(h["maxrss"] or 0, h["hwm"]) / 1024
    ok = h["posts"] == 1 and h["exit"] == 0 and 0 < peak <= HUGE_RSS_TARGET_MIB
    return [f"### {h['count']:,} report files: the watcher's memory", "",
            f"Measured {info['date']} on {info['cpu']}, {info['memory']} RAM; evidence on {info['fs']}; commit "
            f"{info['commit']}; the watcher under {info['python']}. Command: `{info['command']}` ({info['duration']}).",
            "", f"A run that finished two minutes before its watcher starts, with {h['count']:,} small mochawesome "
            f"reports (one failed) in one folder, written in {h['written']:.1f} s; the real watcher, default settings. "
            "Peak RSS is VmHWM, read from /proc/<pid>/status every 20 ms while the watcher ran, and wait4()'s "
            "ru_maxrss, the same high-water mark at its exit.", ""] + table(
        ["measure", "value"],
        [["watcher started -> post on the receiver", ms(h["seconds"]) if h["seconds"] is not None else "no post"],
         ["CPU, whole life", ms(h["cpu"])],
         ["peak RSS: VmHWM sampled / ru_maxrss at exit", f"{h['hwm'] / 1024:.1f} MiB / "
          f"{(h['maxrss'] or 0) / 1024:.1f} MiB"],
         ["posts, exit code", f"{h['posts']}, {h['exit']}"]]) + [
        "", f"Target: peak RSS at most {HUGE_RSS_TARGET_MIB} MiB whatever the number of reports (it was 255 MiB "
        f"before the scanner kept columns): {pass_mark(ok)}."]


def _naive_md(res, args) -> List[str]:
    lat = [r for r in res["latency"]["rows"] if r["kind"] == "closing line"]
    ours = [r["ours"] for r in lat if r["ours"] is not None]
    naive = [r["naive"] for r in lat if r["naive"] is not None]
    q_ours = res["idle"]["rows"][1]
    q_naive = next(r for r in res["idle"]["rows"] if r["name"].startswith("naive"))
    big = {r["name"]: r for r in res["biglive"]["rows"]}
    cpu_rows = [("CPU, quiet run, small log", q_ours, q_naive),
                (f"CPU, quiet run, {res['biglive_size'] / MIB / 1024:g} GiB log", big["watcher"], big["naive loop"])]
    rows = [
        ["latency median", ms(bl.median(ours)), ms(bl.median(naive)), ratio(bl.median(naive), bl.median(ours)),
         pass_mark(bl.median(ours) <= bl.median(naive))],
        ["latency p95", ms(bl.pct(ours, 95)), ms(bl.pct(naive, 95)), ratio(bl.pct(naive, 95), bl.pct(ours, 95)),
         pass_mark(bl.pct(ours, 95) <= bl.pct(naive, 95))],
    ] + [[name, f"{o['share']:.4f} %", f"{n['share']:.4f} %", ratio(n["cpu"], o["cpu"]),
          pass_mark(n["cpu"] >= 10 * o["cpu"])] for name, o, n in cpu_rows]
    bare = big[BARE]
    return ["### 5. The naive alternative", "",
            "`bench/naive_watch.sh`: `grep` the log every second, `curl` the webhook, on the same runs at the same "
            "time as the watcher (latency: the closing-line runs of section 1; CPU: the window of section 2, and a "
            f"{res['biglive']['seconds']:.0f} s window on a quiet run with a big log, where the bare interpreter "
            f"used {bare['cpu'] * 1000:.1f} ms and the watcher {ratio(big['watcher']['cpu'], bare['cpu'])} that). "
            "Target: at least 10 x less CPU on every row, at equal or better latency.", ""] + table(
        ["", "watcher", "naive loop", "naive / watcher", "target"], rows) + [
        "", "The naive loop posts no counts, no failed titles, no VMs, nothing for a killed or hung run, "
        "and twice if restarted; its CPU grows with the log because every look re-reads all of it."]


def ratio(a: float, b: float) -> str:
    return f"{a / b:.1f} x" if b > 0 and a == a else "-"


# --- main -------------------------------------------------------------------------------------------------


def parse_args(argv: List[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=20, help="latency runs (default 20)")
    p.add_argument("--watchers", type=int, default=100, help="concurrent watchers (default 100)")
    p.add_argument("--idle-seconds", type=float, default=60.0)
    p.add_argument("--warmup-seconds", type=float,
                   default=max(evidence.YOUNG_SECONDS, Settings.rest_after_seconds) + 10,
                   help="before the idle window: past YOUNG_SECONDS and ATVM_REST_AFTER_SECONDS's default")
    p.add_argument("--outcome-runs", type=int, default=10, help="latency runs per outcome file kind (default 10)")
    p.add_argument("--poll-runs", type=int, default=10, help="latency runs with ATVM_WAKE=poll (default 10)")
    p.add_argument("--reports", type=int, default=10000)
    p.add_argument("--huge-reports", type=int, default=200000, help="reports of the memory section")
    p.add_argument("--log-mib", type=int, default=1024, help="the big log, MiB (default 1024)")
    p.add_argument("--processes", type=int, default=500, help="processes present for the /proc scan")
    p.add_argument("--python", default=PY, help=f"interpreter for the watcher (default {PY}, as the unit)")
    p.add_argument("--tmp", help="parent folder for the benchmark's files (default: $TMPDIR or /tmp)")
    p.add_argument("--quick", action="store_true", help="small numbers, for trying the script out")
    p.add_argument("--write", metavar="DOC", help="put the tables between the markers in this Markdown file")
    p.add_argument("--only", metavar="SECTIONS", help="comma-separated steps (latency,idle,many,many_poll,logs,"
                   "reports,procscan,biglive,hugereports): print their raw figures, write nothing")
    args = p.parse_args(argv)
    if args.only and args.write and args.only != "hugereports":
        p.error("--only prints raw figures; --write needs every section (or --only hugereports: its own block)")
    if args.quick:
        args.runs, args.watchers, args.idle_seconds, args.warmup_seconds = 4, 10, 5.0, 3.0
        args.reports, args.log_mib, args.outcome_runs, args.poll_runs, args.huge_reports = 1000, 64, 2, 2, 20000
    return args


def run_all(args: argparse.Namespace, tmp: Path) -> Dict[str, Any]:
    res: Dict[str, Any] = {}
    steps = [
        ("latency", lambda rx: bench_latency(tmp, rx, args.runs, args.outcome_runs, args.poll_runs, 0.3)),
        ("idle", lambda rx: bench_idle(tmp, rx, args.idle_seconds, args.warmup_seconds, args.reports,
                                       args.processes)),
        ("many", lambda rx: bench_many(tmp, rx, args.watchers, 1.0)),
        ("many_poll", lambda rx: bench_many(tmp, rx, args.watchers, 1.0, poll=True)),
        ("logs", lambda rx: bench_log_sizes(tmp, [MIB, args.log_mib * MIB], 500)),
        ("reports", lambda rx: bench_reports(tmp, rx, args.reports, 100)),
        ("procscan", lambda rx: bench_proc_scan(args.processes, 200)),
        ("biglive", lambda rx: bench_big_live(tmp, rx, args.log_mib * MIB, min(20.0, args.idle_seconds))),
        ("hugereports", lambda rx: bench_huge_reports(tmp, rx, args.huge_reports)),
    ]
    for name, step in steps:
        if args.only and name not in args.only.split(","):
            continue
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        with bl.TimedReceiver() as rx:  # one receiver per section: posts never mix
            res[name] = step(rx)
    res["biglive_size"] = args.log_mib * MIB
    return res


def write_doc(path: Path, block: str, name: str = "bench") -> None:
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = path.read_text(encoding="utf-8") if path.exists() else f"# Performance\n\n{begin}\n{end}\n"
    if begin not in text or end not in text:
        text = text.rstrip("\n") + f"\n\n{begin}\n{end}\n"
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1]
    path.write_text(f"{head}{begin}\n{block}{end}{tail}", encoding="utf-8")


def main(argv: List[str]) -> int:
    global PY
    args = parse_args(argv)
    PY = args.python
    tmp = bl.temp_root(args.tmp)
    bl.install(tmp, sorted({PY, sys.executable}))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the finally below cleans up
    started = time.monotonic()
    load = f"load average {bl.load_average()} at the start"
    try:
        res = run_all(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.only and not args.write:
        print(json.dumps(res, indent=1, default=str))
        return 0
    info = {**bl.machine(PY), "fs": bl.filesystem_of(tmp), "commit": bl.git_commit(), "load": load,
            "date": time.strftime("%Y-%m-%d"), "duration": f"took {(time.monotonic() - started) / 60:.1f} min",
            "command": "python3 bench/bench_watchers.py " + " ".join(argv)}
    blocks = [("bench:hugereports", "\n".join(_huge_md(res, args, info)) + "\n")]
    if not args.only:
        blocks.insert(0, ("bench", render(res, args, info)))
    for name, block in blocks:
        print(block)
        if args.write:
            write_doc(Path(args.write), block, name)
            print(f"bench: wrote {name} into {args.write}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
