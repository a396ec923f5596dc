"""``status``: every watched build under the state root: state, sub-runs, delivery, watcher, last update."""

from __future__ import annotations

import json
import time
from typing import Any, Dict, List, Optional

from ..buildname import BUILD_NAME_RE
from ..ledger import delivery_status, record_state
from ..settings import Settings
from ..statedir import BuildDir, RunDir
from ..vocab import POSTED, Delivery, ExitCode

# How status shows each delivery; UNCERTAIN is loud because it is the one an operator must check by hand.
SHOWN = {Delivery.UNCERTAIN: "DELIVERY-UNCERTAIN"}


def shown_delivery(run: RunDir, record: Optional[Dict[str, Any]]) -> str:
    status = delivery_status(run)
    if status == Delivery.NOT_REQUIRED:
        return "not-posted" if record_state(record) in POSTED else "-"
    return SHOWN.get(status, str(status))


def build_status(bd: BuildDir) -> Dict[str, Any]:
    data, problem = bd.read_state()
    data = data or {}
    subruns = []
    for g in data.get("groups") or bd.subrun_names():
        run = bd.subrun(str(g))
        sub, _ = run.read_state()
        subruns.append({"group": g, "state": (sub or {}).get("state", "?"), "delivery": shown_delivery(run, sub)})
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
        "delivery": shown_delivery(bd, data) if not data.get("categorized") else "-",
        "subruns": subruns,
        "cancelled": bd.is_cancelled(),
        "watcher": bd.watch_lock_holder() or "-",
        "updated": updated,
    }


def run(settings: Settings, build: Optional[str], as_json: bool) -> int:
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
        return ExitCode.OK
    if not rows:
        print(f"no watched builds under {root}" + (f" named {build}" if build else ""))
        return ExitCode.OK
    header = ("BUILD", "STATE", "SUB-RUNS", "DELIVERY", "WATCHER", "UPDATED")
    table = [header] + [(r["build_name"], r["state"], _subrun_text(r["subruns"]), r["delivery"], r["watcher"],
                         r["updated"]) for r in rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
    return ExitCode.OK


def _subrun_text(subruns: List[Dict[str, Any]]) -> str:
    if not subruns:
        return "-"
    return ", ".join(f"{s['group']}={s['state']}/{s['delivery']}" for s in subruns)
