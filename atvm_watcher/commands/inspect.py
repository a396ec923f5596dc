"""``inspect``: read-only. The state the watcher would decide now, the evidence read and the rule behind it."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any, Callable, Dict, List, Optional

from ..decide import EXIT_RE, decide
from ..discover import Found, discover
from ..evidence import EvidenceReader
from ..ledger import recorded_groups, recorded_run_start
from ..settings import TEMPLATE_SETTINGS, Settings
from ..statedir import BuildDir, read_json, utc_now_iso
from ..vocab import TERMINAL, ExitCode, OutcomeFile, ScopeEvidence, Snapshot, State


def _scope_lines(scope: ScopeEvidence) -> List[str]:
    lines = []
    if scope.log:
        log = scope.log
        seen = "(Run Finished) seen" if log.finished_banner else "no (Run Finished) banner yet"
        said = [f"summary: {log.summary}" if log.summary else "",
                "(Run Starting) without (Run Finished)" if log.unfinished else "",
                f"{log.failed_tests} failed tests" if log.failed_tests else "",
                "the run was canceled in Cypress Cloud" if log.cancelled else "",
                f"Cypress error: {log.error!r}" if log.error else ""]
        said_text = "".join(f", {s}" for s in said if s)
        lines.append(f"log {log.path}: {log.size} bytes, modified {utc_now_iso(log.mtime)}, {seen}{said_text}")
    else:
        lines.append("log: not found")
    for label, f, parses, what in (("status file", scope.status, _is_state_word, "a state word"),
                                   ("exit file", scope.exit, EXIT_RE.fullmatch, "an exit code")):
        lines.append(f"{label}: not found" if not f else f"{label} {f.path}: {_outcome_text(f, parses, what)}")
    unread = [r.result for r in scope.reports if r.result.status != "ok"]
    lines.append(f"reports: {len(scope.reports)} file(s), {len(scope.reports) - len(unread)} readable")
    for res in unread:
        lines.append(f"  {res.path}: {res.status}: {res.detail}")
    return lines


def _is_state_word(text: str) -> bool:
    return State.of(text.upper()) in TERMINAL


def _outcome_text(f: OutcomeFile, parses: Callable[[str], Any], what: str) -> str:
    """What an outcome file says, shown only when it parses: the file may not be the run's (a world-writable
    log folder), and its content is never echoed."""
    if f.problem:
        return f"cannot be read ({f.problem})"
    if not f.text:
        return "empty"
    return repr(f.text) if parses(f.text) else f"holds {f.size} bytes that are not {what}"


def explain(snap: Snapshot, settings: Settings, recorded: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    d = decide(snap, settings.limits(), cancelled=False)
    launcher = snap.launcher
    out: Dict[str, Any] = {
        "build_name": snap.build,
        "categorized": snap.categorized,
        "recorded_state": (recorded or {}).get("state"),
        "decision": {"state": d.run.state, "rule": d.run.rule, "reason": d.run.reason,
                     "counts": asdict(d.run.counts), "failed_titles": list(d.run.failed_titles[:20])},
        # inspect has no watcher: its "watcher's start" is now
        "run_start": {"at": utc_now_iso(d.run.run_start) if d.run.run_start is not None else "not known",
                      "from": d.run_start_rule},
        "launcher": {"alive": launcher.alive, "pid": launcher.pid, "found_by": launcher.source, "note": launcher.note},
        "evidence": _scope_lines(snap.parent),
        "ignored": list(d.run.ignored),
        "subruns": [{"group": v.group, "position": i + 1, "state": v.state, "rule": v.rule, "reason": v.reason,
                     "counts": asdict(v.counts), "evidence": _scope_lines(g)}
                    for i, (v, g) in enumerate(zip(d.groups, snap.groups))],
    }
    return out


def run(settings: Settings, build: str, categorize: bool, as_json: bool) -> int:
    bd = BuildDir.of(settings.state_root, build)
    recorded, problem = bd.read_state() if bd.path.is_dir() else (None, None)
    req_data, _ = read_json(bd.request_file)
    categorized = (categorize or (req_data or {}).get("categorize") is True
                   or (recorded or {}).get("categorized") is True)
    groups = recorded_groups(recorded)  # only well-formed names: the file may be damaged or hand-edited
    reader = EvidenceReader(settings.layout(build), categorized, known_groups=groups,
                            recorded_run_start=recorded_run_start(recorded), requested_at=bd.requested_at())
    info = explain(reader.snapshot(), settings, recorded)
    info["categorize_note"] = reader.categorize_mismatch(bool(State.of(info["decision"]["state"]).terminal))
    info["state_problem"] = problem
    info["cancelled"] = bd.is_cancelled()
    info["posted"] = bd.is_posted()
    if as_json:
        print(json.dumps(info, indent=2, ensure_ascii=False))
        return ExitCode.OK
    _print_inspect(info, settings)
    return ExitCode.OK


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
    if info["categorize_note"]:
        print(f"  warning: {info['categorize_note']}")
    run = settings.layout(info["build_name"]).run()
    print(f"  (layout: log {run.log}, reports {run.reports}/, outcome {run.status} and {run.exit})")



SHOWN = 40


def _read_as(f: Found) -> str:
    if f.settings:
        return "read as " + ", ".join(f.settings)
    if f.suggestion:
        return "read by no setting"
    if f.why == "first line" or f.kind == "report":
        return "read by no setting (no template can name it: its path does not name the build)"
    return "read by no setting (no setting reads this kind of file)"


def discover_files(settings: Settings, build: str, as_json: bool) -> int:
    layout = settings.layout(build)
    names = {key: name for name, key in TEMPLATE_SETTINGS.items()}
    found, notes = discover(layout, names)
    suggestions = sorted({f.suggestion for f in found if f.suggestion})
    if as_json:
        print(json.dumps({"build_name": build, "folders": [str(layout.log_dir), str(layout.report_dir)],
                          "files": [asdict(f) for f in found], "suggested": suggestions, "notes": notes}, indent=2,
                         ensure_ascii=False))
        return ExitCode.OK
    print(f"files that mention build {build} under {layout.log_dir} and {layout.report_dir}:")
    for f in found[:SHOWN]:
        print(f"  {f.path}  ({f.kind}, named in its {f.why}): {_read_as(f)}")
    if len(found) > SHOWN:
        print(f"  ... and {len(found) - SHOWN} more (--json lists them all)")
    if not found:
        print("  none")
    for note in notes:
        print(f"  note: {note}")
    if suggestions:
        print(f"settings that would read the others (put them in {settings.env_file}):")
        for line in suggestions:
            print(f"  {line}")
    elif found and all(f.settings for f in found):
        print("every file found is read by the layout settings as they are")
    print("the layout now:")
    for key, template in settings.templates.items():
        print(f"  {names[key]}={template}")
    return ExitCode.OK
