"""``status``: every watched build under the state root: state, sub-runs, delivery, watcher, last update.

Three renderings of the same rows: the table, ``--json``, and ``--format prometheus`` (Prometheus's
text exposition format 0.0.4, for node_exporter's textfile collector; ``--output FILE`` replaces
FILE atomically, so the collector never reads half a file).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

from ..buildname import BUILD_NAME_RE
from ..ledger import delivery_status, read_record, record_state, recorded_groups
from ..settings import Settings
from ..statedir import BuildDir, RunDir
from ..vocab import POSTED, Delivery, ExitCode, State

# How status shows each delivery; UNCERTAIN is loud because it is the one an operator must check by hand.
SHOWN = {Delivery.UNCERTAIN: "DELIVERY-UNCERTAIN"}


def shown_delivery(run: RunDir, record: Optional[Dict[str, Any]]) -> str:
    status = delivery_status(run)
    if status == Delivery.NOT_REQUIRED:
        return "not-posted" if record_state(record) in POSTED else "-"
    return SHOWN.get(status, str(status))


def build_status(bd: BuildDir) -> Dict[str, Any]:
    """One build's row; a damaged or unreadable build gives a CORRUPT row, never an error for all."""
    try:
        return _build_status(bd)
    except OSError as exc:
        return {"build_name": bd.build, "state": "CORRUPT", "problem": f"unreadable: {exc.strerror or exc}",
                "rule": None, "categorized": False, "delivery": "-", "subruns": [], "cancelled": False,
                "watcher": "-", "updated": "-"}


def _build_status(bd: BuildDir) -> Dict[str, Any]:
    raw, problem = bd.read_state()
    categorized = bool((raw or {}).get("categorized") is True) or bool(bd.subrun_names())
    data, _ = read_record(bd, categorized)  # a posted run whose state.json is gone: its marker says
    data = data or {}
    state = record_state(data)
    if state is None and data.get("state") is not None:
        problem = problem or "state.json names no known state"
    subruns = []
    # Recorded names only when well formed (the file may be hand-edited); a folder's own name is safe to show.
    for g in recorded_groups(data) or bd.subrun_names():
        run = bd.subrun(g)
        sub, _ = read_record(run)
        sub_state = record_state(sub)
        subruns.append({"group": g, "state": str(sub_state) if sub_state else "?",
                        "delivery": shown_delivery(run, sub)})
    try:
        updated = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(bd.state_file.stat().st_mtime))
    except OSError:
        updated = "-"
    return {
        "build_name": bd.build,
        "state": str(state) if state else ("CORRUPT" if problem else "NEW"),
        "problem": problem,
        "rule": data.get("rule") if isinstance(data.get("rule"), str) else None,
        "categorized": categorized,
        "delivery": shown_delivery(bd, data) if not categorized else "-",
        "subruns": subruns,
        "cancelled": bd.is_cancelled(),
        "watcher": bd.watch_lock_holder() or "-",
        "updated": updated,
    }


FORMATS = ("table", "json", "prometheus")


def run(settings: Settings, build: Optional[str], as_json: bool, fmt: str = "table",
        output: Optional[str] = None) -> int:
    root = settings.state_root
    if build:
        names = [build] if (root / build).is_dir() else []
    else:
        try:
            names = sorted(p.name for p in root.iterdir() if p.is_dir() and BUILD_NAME_RE.fullmatch(p.name))
        except OSError:
            names = []
    builds = [BuildDir.of(root, n) for n in names]
    rows = [build_status(bd) for bd in builds]
    fmt = "json" if as_json else fmt
    if fmt == "json":
        text = json.dumps({"state_root": str(root), "builds": rows}, indent=2) + "\n"
    elif fmt == "prometheus":
        text = prometheus_text(builds, rows)
    elif not rows:
        missing = "" if root.is_dir() else " (it does not exist: check ATVM_WATCHER_STATE_ROOT)"
        text = f"no watched builds under {root}{missing}" + (f" named {build}" if build else "") + "\n"
    else:
        text = _table(rows)
    if output is None:
        print(text, end="")
        return ExitCode.OK
    try:
        write_text_atomic(Path(output), text)
    except OSError as exc:
        print(f"error: cannot write {output}: {exc.strerror or exc}", file=sys.stderr)
        return ExitCode.INTERNAL
    return ExitCode.OK


def _table(rows: List[Dict[str, Any]]) -> str:
    header = ("BUILD", "STATE", "SUB-RUNS", "DELIVERY", "WATCHER", "UPDATED")
    table = [header] + [(r["build_name"], r["state"], _subrun_text(r["subruns"]), r["delivery"], r["watcher"],
                         r["updated"]) for r in rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    return "".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() + "\n" for row in table)


def _subrun_text(subruns: List[Dict[str, Any]]) -> str:
    if not subruns:
        return "-"
    return ", ".join(f"{s['group']}={s['state']}/{s['delivery']}" for s in subruns)


# --- Prometheus text exposition (format 0.0.4) ----------------------------------------------------
# Every series is a gauge: each value is read from the state root as it is now, and builds leave
# it (record-request --rerun archives them). A build's own run has group=""; a sub-run has its group.
STATE_WORDS: Tuple[str, ...] = tuple(str(s) for s in State) + ("NEW", "CORRUPT")  # NEW, CORRUPT: see build_status
DELIVERY_WORDS: Tuple[str, ...] = tuple(str(d) for d in (Delivery.POSTED, Delivery.PENDING, Delivery.UNCERTAIN,
                                                          Delivery.REJECTED, Delivery.NOT_SENT))
PROM_FILE_MODE = 0o644  # node_exporter reads the file as its own user


def prometheus_text(builds: List[BuildDir], rows: List[Dict[str, Any]]) -> str:
    runs: List[Tuple[str, str, str, Optional[str], RunDir]] = []  # build, group, state, delivery, folder
    for bd, row in zip(builds, rows):
        runs.append((bd.build, "", row["state"], None if row["categorized"] else _delivery_word(bd, row["state"]),
                     bd))
        for sub in row["subruns"]:
            group, state = str(sub["group"]), "NEW" if sub["state"] == "?" else str(sub["state"])
            runs.append((bd.build, group, state, _delivery_word(bd.subrun(group), state), bd.subrun(group)))
    alive = [(row["build_name"], row["watcher"] != "-") for row in rows]
    deliveries = [r[3] for r in runs if r[3]]

    def by_state(subruns: bool) -> List[Tuple[Dict[str, str], float]]:
        states = [r[2] for r in runs if bool(r[1]) == subruns]
        return [({"state": w}, states.count(w)) for w in STATE_WORDS]

    families = [
        ("live_watchers", "Watchers alive now (each holds its build's watch lock).",
         [({}, sum(a for _, a in alive))]),
        ("watcher_alive", "1 while the build's watcher is alive, else 0.",
         [({"build": b}, int(a)) for b, a in alive]),
        ("runs", "Builds under the state root, by state (NEW: nothing decided yet; CORRUPT: unreadable state).",
         by_state(False)),
        ("subruns", "Sub-runs of categorized builds, by state.", by_state(True)),
        ("run_state", "1 for the current state of each run (group=\"\": the build itself; else its sub-run).",
         [({"build": b, "group": g, "state": s}, 1) for b, g, s, _, _ in runs]),
        ("run_updated_timestamp_seconds", "When the run's state.json was last written (Unix time).",
         [({"build": b, "group": g}, t) for b, g, _, _, d in runs for t in _mtime(d.state_file)]),
        ("deliveries", "Runs by delivery of their post: posted, pending (owed, not yet attempted), "
                       "uncertain (may exist: check the channel), rejected by the server, not-sent (retried).",
         [({"delivery": w}, deliveries.count(w)) for w in DELIVERY_WORDS]),
        ("delivery", "1 for the delivery of each run that has one to make (words as in atvm_watcher_deliveries).",
         [({"build": b, "group": g, "delivery": w}, 1) for b, g, _, w, _ in runs if w]),
        ("last_post_timestamp_seconds", "When the run's post was confirmed by the server (Unix time).",
         [({"build": b, "group": g}, t) for b, g, _, w, d in runs if w == Delivery.POSTED
          for t in _mtime(d.posted_marker)]),
    ]
    lines: List[str] = []
    for name, help_text, samples in families:
        if not samples:
            continue
        full = f"atvm_watcher_{name}"
        lines += [f"# HELP {full} {_escape(help_text, quote=False)}", f"# TYPE {full} gauge"]
        lines += [f"{full}{_labels(labels)} {_number(value)}" for labels, value in samples]
    return "".join(line + "\n" for line in lines)


def _delivery_word(run: RunDir, state: str) -> Optional[str]:
    """Where the run's post stands, or None when it has none to make (not COMPLETED/FAILED, never tried)."""
    try:
        status = delivery_status(run)
    except OSError:  # an unreadable folder: its row already says CORRUPT
        return None
    if status == Delivery.NOT_REQUIRED:
        return str(Delivery.PENDING) if State.of(state) in POSTED else None
    return str(status)


def _mtime(path: Path) -> Iterable[float]:
    try:
        return (path.stat().st_mtime,)
    except OSError:
        return ()


def _escape(text: str, quote: bool = True) -> str:
    """The format's escapes: backslash and newline (HELP text), and double quote too (label values).
    A folder name that is not UTF-8 first becomes \\x.. text for its odd bytes: the format is UTF-8."""
    try:
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that no file name produced
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    text = text.replace("\\", "\\\\").replace("\n", "\\n")
    return text.replace('"', '\\"') if quote else text


def _labels(labels: Dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:.3f}"


def write_text_atomic(path: Path, text: str) -> None:
    """A temporary file beside ``path``, then a rename: a reader sees the old file or the new one.
    The temporary name does not end in ``.prom``, so node_exporter's collector never reads it."""
    fd, tmp = tempfile.mkstemp(dir=str(path.parent), prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8", "backslashreplace"))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, PROM_FILE_MODE)
        os.replace(tmp, str(path))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
