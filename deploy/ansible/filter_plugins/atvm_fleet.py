"""Ansible filter for status.yml: the controllers' ``status --json`` answers as one table.

Runs on the machine running Ansible (standard library only), not on the controllers.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping, Sequence

HEADER = ("CONTROLLER", "BUILD", "STATE", "SUB-RUNS", "DELIVERY", "LIVE WATCHER")


def _rows_of(host: str, result: Mapping[str, Any]) -> List[Sequence[str]]:
    """One row per build of one controller, or one row saying why there is none."""
    if not result or result.get("unreachable"):
        return [(host, "-", "UNREACHABLE", "-", "-", "-")]
    if result.get("rc") != 0:
        reason = (result.get("stderr") or result.get("msg") or "").strip().splitlines()
        return [(host, "-", f"STATUS FAILED (rc {result.get('rc')})", "-", "-", (reason or ["-"])[-1])]
    try:
        builds = json.loads(result.get("stdout") or "")["builds"]
    except (ValueError, KeyError, TypeError):
        return [(host, "-", "STATUS UNREADABLE", "-", "-", "-")]
    if not builds:
        return [(host, "-", "no watched builds", "-", "-", "-")]
    return [(host, b["build_name"], b["state"], _subruns(b.get("subruns") or []), b["delivery"], b["watcher"])
            for b in builds]


def _subruns(subruns: List[Dict[str, Any]]) -> str:
    """As the controller's own status table shows them: group=STATE/delivery, ..."""
    return ", ".join(f"{s['group']}={s['state']}/{s['delivery']}" for s in subruns) or "-"


def atvm_fleet_table(hosts: Sequence[str], hostvars: Mapping[str, Mapping[str, Any]],
                     var: str = "atvm_status") -> List[str]:
    rows: List[Sequence[str]] = [HEADER]
    for host in hosts:
        rows += _rows_of(host, hostvars[host].get(var) or {})
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(HEADER))]
    return ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]


class FilterModule:
    def filters(self):
        return {"atvm_fleet_table": atvm_fleet_table}
