"""Operator commands that read or touch the state directory: record-request, cancel, status, inspect."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from typing import Any, Dict, List, Optional

from .buildname import BUILD_NAME_RE
from .decide import decide
from .evidence import EvidenceReader
from .request import Request
from .settings import Settings
from .statedir import BuildDir, RunDir, read_json, utc_now_iso, write_json_atomic
from .vocab import POSTED as POSTED_STATES
from .vocab import TERMINAL as TERMINAL_STATES
from .vocab import ScopeEvidence, Snapshot
from .watcher import EXIT_FINISHED, EXIT_LOCKED, EXIT_OK, delivery_status, limits_of, recorded_run_start

ARCHIVE = ".archive"


def _finished_state(bd: BuildDir, categorized: Optional[bool] = None) -> Optional[str]:
    data, problem = bd.read_state()
    if data and data.get("state") in TERMINAL_STATES:
        return str(data["state"])
    if not (categorized or (data or {}).get("categorized")) and bd.is_posted():
        return "posted"
    if problem and bd.is_posted():
        return "posted"
    return None


def record_request(settings: Settings, req: Request, rerun: bool) -> int:
    bd = BuildDir.of(settings.state_root, req.build_name)
    holder = bd.watch_lock_holder()
    if holder:
        print(f"build {req.build_name} is already being watched ({holder}); not starting a second watcher")
        return EXIT_LOCKED
    finished = _finished_state(bd, req.categorize) if bd.path.exists() else None
    if finished and not rerun:
        print(f"build {req.build_name} already finished ({finished}); nothing to watch. "
              "To watch a new run under the same build name, use --rerun (the old state is archived).")
        return EXIT_FINISHED
    if bd.path.exists() and (finished or rerun):
        archive = settings.state_root / ARCHIVE / f"{req.build_name}.{time.strftime('%Y%m%dT%H%M%S')}"
        archive.parent.mkdir(parents=True, exist_ok=True)
        os.replace(bd.path, archive)
        print(f"archived the previous state of {req.build_name} to {archive}")
    bd.ensure()
    write_json_atomic(bd.request_file, {**req.to_json(), "requested_at": utc_now_iso()})
    print(f"recorded request for {req.build_name} in {bd.request_file}")
    return EXIT_OK


def cancel(settings: Settings, build: str) -> int:
    bd = BuildDir.of(settings.state_root, build)
    if not bd.path.is_dir():
        print(f"build {build} is unknown (no state under {settings.state_root}); nothing cancelled")
        return EXIT_OK
    with bd.state_lock():
        data, _ = bd.read_state()
        finished = _finished_state(bd)
        if finished:
            print(f"build {build} already finished ({finished}); nothing changed")
            return EXIT_OK
        bd.mark_cancelled({"cancelled_at": utc_now_iso(), "by_pid": os.getpid()})
        bd.write_state({**(data or {}), "build_name": build, "state": "CANCELLED", "rule": "cancelled-marker",
                        "reason": "cancelled by the operator"})
        for g in bd.subrun_names():
            run = bd.subrun(g)
            sub, _ = run.read_state()
            if not run.is_posted() and (sub or {}).get("state") not in TERMINAL_STATES:
                run.write_state({**(sub or {}), "group": g, "state": "CANCELLED", "rule": "cancelled-marker"})
    bd.append_event({"state": "CANCELLED", "rule": "cancelled-marker"})
    print(f"cancelled build {build}: nothing will be posted for it")
    return EXIT_OK


# --- status ----------------------------------------------------------------------------------


def _delivery(run: RunDir, record: Optional[Dict[str, Any]]) -> str:
    status = delivery_status(run)
    if status == "uncertain":
        return "DELIVERY-UNCERTAIN"
    if status == "none":
        return "not-posted" if (record or {}).get("state") in POSTED_STATES else "-"
    return status


def build_status(bd: BuildDir) -> Dict[str, Any]:
    data, problem = bd.read_state()
    data = data or {}
    subruns = []
    for g in data.get("groups") or bd.subrun_names():
        run = bd.subrun(str(g))
        sub, _ = run.read_state()
        subruns.append({"group": g, "state": (sub or {}).get("state", "?"), "delivery": _delivery(run, sub)})
    try:
        updated = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(bd.state_file.stat().st_mtime))
    except OSError:
        updated = "-"
    return {
        "build_name": bd.build,
        "state": data.get("state") or ("CORRUPT" if problem else "NEW"),
        "problem": problem,
        "rule": data.get("rule"),
        "categorized": bool(data.get("categorized")),
        "delivery": _delivery(bd, data) if not data.get("categorized") else "-",
        "subruns": subruns,
        "cancelled": bd.is_cancelled(),
        "watcher": bd.watch_lock_holder() or "-",
        "updated": updated,
    }


def status(settings: Settings, build: Optional[str], as_json: bool) -> int:
    root = settings.state_root
    if build:
        names = [build] if (root / build).is_dir() else []
    else:
        try:
            names = sorted(p.name for p in root.iterdir() if p.is_dir() and BUILD_NAME_RE.fullmatch(p.name))
        except OSError:
            names = []
    rows = [build_status(BuildDir.of(root, n)) for n in names]
    if as_json:
        print(json.dumps({"state_root": str(root), "builds": rows}, indent=2))
        return EXIT_OK
    if not rows:
        print(f"no watched builds under {root}" + (f" named {build}" if build else ""))
        return EXIT_OK
    header = ("BUILD", "STATE", "SUB-RUNS", "DELIVERY", "WATCHER", "UPDATED")
    table = [header] + [(r["build_name"], r["state"], _subrun_text(r["subruns"]), r["delivery"], r["watcher"],
                         r["updated"]) for r in rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
    return EXIT_OK


def _subrun_text(subruns: List[Dict[str, Any]]) -> str:
    if not subruns:
        return "-"
    return ", ".join(f"{s['group']}={s['state']}/{s['delivery']}" for s in subruns)


# --- inspect ---------------------------------------------------------------------------------


def _scope_lines(scope: ScopeEvidence) -> List[str]:
    lines = []
    if scope.log:
        log = scope.log
        seen = "(Run Finished) seen" if log.finished_banner else "no (Run Finished) banner yet"
        summary = f", summary: {log.summary}" if log.summary else ""
        lines.append(f"log {log.path}: {log.size} bytes, modified {utc_now_iso(log.mtime)}, {seen}{summary}")
    else:
        lines.append("log: not found")
    for label, f in (("status file", scope.status), ("exit file", scope.exit)):
        lines.append(f"{label} {f.path}: {f.text!r}" if f else f"{label}: not found")
    ok = [r for r in scope.reports if r.result.status == "ok"]
    lines.append(f"reports: {len(scope.reports)} file(s), {len(ok)} readable")
    for r in scope.reports:
        if r.result.status != "ok":
            lines.append(f"  {r.result.path}: {r.result.status}: {r.result.detail}")
    return lines


def explain(snap: Snapshot, settings: Settings, recorded: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    d = decide(snap, limits_of(settings), cancelled=False)
    launcher = snap.launcher
    out: Dict[str, Any] = {
        "build_name": snap.build,
        "categorized": snap.categorized,
        "recorded_state": (recorded or {}).get("state"),
        "decision": {"state": d.run.state, "rule": d.run.rule, "reason": d.run.reason,
                     "counts": asdict(d.run.counts), "failed_titles": list(d.run.failed_titles[:20])},
        # inspect has no watcher: its "watcher's start" is now
        "run_start": {"at": utc_now_iso(d.run.run_start) if d.run.run_start else None,
                      "from": d.run_start_rule.replace("the watcher's start", "now, as inspect runs")},
        "launcher": {"alive": launcher.alive, "pid": launcher.pid, "found_by": launcher.source, "note": launcher.note},
        "evidence": _scope_lines(snap.parent),
        "ignored": list(d.run.ignored),
        "subruns": [{"group": v.group, "position": i + 1, "state": v.state, "rule": v.rule, "reason": v.reason,
                     "counts": asdict(v.counts), "evidence": _scope_lines(g)}
                    for i, (v, g) in enumerate(zip(d.groups, snap.groups))],
    }
    return out


def inspect(settings: Settings, build: str, categorize: bool, as_json: bool) -> int:
    bd = BuildDir.of(settings.state_root, build)
    recorded, problem = bd.read_state() if bd.path.is_dir() else (None, None)
    req_data, _ = read_json(bd.request_file)
    categorized = categorize or bool((req_data or {}).get("categorize")) or bool((recorded or {}).get("categorized"))
    groups = tuple((recorded or {}).get("groups") or ())
    reader = EvidenceReader(build, settings.log_dir, settings.report_dir, categorized, time.time(), groups,
                            recorded_run_start(recorded))
    info = explain(reader.snapshot(), settings, recorded)
    info["state_problem"] = problem
    info["cancelled"] = bd.is_cancelled()
    info["posted"] = bd.is_posted()
    if as_json:
        print(json.dumps(info, indent=2, ensure_ascii=False))
        return EXIT_OK
    _print_inspect(info, settings)
    return EXIT_OK


def _print_inspect(info: Dict[str, Any], settings: Settings) -> None:
    dec = info["decision"]
    print(f"build {info['build_name']}{' (categorized)' if info['categorized'] else ''}")
    rec = info["recorded_state"] or ("unreadable: " + info["state_problem"] if info["state_problem"] else "none")
    print(f"  recorded state: {rec}{'; cancelled.marker present' if info['cancelled'] else ''}"
          f"{'; posted.marker present' if info['posted'] else ''}")
    print(f"  would decide now: {dec['state']}  (rule {dec['rule']})")
    print(f"    because {dec['reason']}")
    c = dec["counts"]
    print(f"  tests: {c['passed']} passed, {c['failed']} failed, {c['pending']} pending, {c['skipped']} skipped")
    print(f"  run start: {info['run_start']['at']} (from {info['run_start']['from']})")
    la = info["launcher"]
    alive = f"alive, pid {la['pid']} ({la['found_by']})" if la["alive"] else "not running"
    print(f"  launcher: {alive}{'; ' + la['note'] if la['note'] else ''}")
    print("  evidence read:")
    for line in info["evidence"]:
        print(f"    {line}")
    for sub in info["subruns"]:
        print(f"  sub-run #{sub['position']} {sub['group']}: {sub['state']} (rule {sub['rule']}): {sub['reason']}")
        for line in sub["evidence"]:
            print(f"    {line}")
    for line in info["ignored"]:
        print(f"  ignored: {line}")
    print(f"  (layout: logs in {settings.log_dir}, reports in {settings.report_dir})")

