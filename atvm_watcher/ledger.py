"""The ledger: the only owner of what is recorded about a build's scopes, and of what is still owed.

A scope is the plain run (key ``RUN``) or one sub-run of a categorized run (key = its group).
Each has a ``state.json`` (the record), and the markers that are the truth about posting
(``posted.marker``) and cancelling (``cancelled.marker``). The rules kept here, each once:

- a terminal record is final: never decided again, also by a restarted watcher;
- a post is owed only while the record says ``delivery: pending`` (decided, no attempt settled)
  or an attempt certainly made none (``not-sent``); a terminal record without that is final,
  also one written by hand; at-least-once also resends what is uncertain or was rejected;
- an attempt interrupted by a crash (intent written, no outcome) is reported once as uncertain;
- once ``cancelled.marker`` exists, a scope not yet posted is recorded CANCELLED;
- the watch's exit code follows from the delivery outcomes of this watcher's life.

The watch command reads as: snapshot -> decide -> ``Ledger.apply`` -> deliver what is owed.
``cancel``, ``status`` and ``inspect`` use the same reads and the same CANCELLED record.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import log
from .buildname import check_group_name
from .decide import Decision, Verdict
from .statedir import BuildDir, RunDir, StateError, read_json, utc_now_iso
from .vocab import EXIT_FOR_DELIVERY, EXIT_RANK, POSTED, Delivery, ExitCode, State

RUN: Optional[str] = None  # scope key of the plain run / categorized parent; sub-runs use their group
MAX_STORED_TITLES = 50
CANCEL_REASON = "cancelled.marker is present"

Render = Callable[[Verdict, Optional[int]], Dict[str, Any]]  # verdict, position -> webhook payload


def delivery_status(run: RunDir) -> Delivery:
    """Where a scope's post stands, from the markers and the delivery record (the truth), not state.json.

    NOT_REQUIRED here means no attempt was ever recorded.
    """
    if run.is_posted():
        return Delivery.POSTED
    phase = Delivery.of(run.read_delivery().get("phase"))
    if phase in (Delivery.SENDING, Delivery.UNCERTAIN):
        return Delivery.UNCERTAIN
    if phase in (Delivery.NOT_SENT, Delivery.REJECTED, Delivery.CANCELLED):
        return phase
    return Delivery.NOT_REQUIRED


def verdict_record(v: Verdict, build: str, position: Optional[int] = None) -> Dict[str, Any]:
    rec: Dict[str, Any] = {"build_name": build, "state": v.state, "rule": v.rule, "reason": v.reason,
                           "counts": asdict(v.counts), "failed_titles": list(v.failed_titles[:MAX_STORED_TITLES]),
                           "run_start": v.run_start, "finished_at": v.finished_at, "elapsed": v.elapsed}
    if v.group:
        rec.update(group=v.group, position=v.position if v.position is not None else position)
    return rec


def cancelled_record(record: Optional[Dict[str, Any]], build: str, group: Optional[str],
                     reason: str = CANCEL_REASON) -> Dict[str, Any]:
    """The CANCELLED record of a scope: what it held, less any owed message."""
    rec = {k: v for k, v in (record or {}).items() if k not in ("message", "delivery")}
    rec.update(build_name=build, state=State.CANCELLED, rule="cancelled-marker", reason=reason)
    if group:
        rec["group"] = group
    return rec


def record_state(record: Optional[Dict[str, Any]]) -> Optional[State]:
    return State.of((record or {}).get("state"))


def recorded_groups(parent: Optional[Dict[str, Any]]) -> Tuple[str, ...]:
    """Sub-run names from state.json, trusting only well-formed ones (the file may be damaged)."""
    groups = (parent or {}).get("groups")
    if not isinstance(groups, list):
        return ()
    return tuple(dict.fromkeys(g for g in groups if isinstance(g, str) and check_group_name(g)))


def recorded_run_start(parent: Optional[Dict[str, Any]]) -> Optional[float]:
    value = (parent or {}).get("run_start")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def read_record(run: RunDir, categorized: bool = False) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
    """(record, problem): state.json, or for a plain scope without one, what its posted.marker proves."""
    data, problem = run.read_state()
    if data is None and not categorized and run.is_posted():
        marker, _ = read_json(run.posted_marker)
        data = {"state": State.of((marker or {}).get("state")) or State.COMPLETED, "rule": "posted-marker",
                "reason": "rebuilt from posted.marker"}
    return data, problem


def owed_after_restart(run: RunDir, rec: Optional[Dict[str, Any]], at_least_once: bool) -> bool:
    """Is a recorded terminal scope's post still owed (to be sent by the next watcher)?"""
    if record_state(rec) not in POSTED:
        return False
    status = delivery_status(run)
    if status == Delivery.POSTED:
        return False
    if status in (Delivery.UNCERTAIN, Delivery.REJECTED):
        return at_least_once
    return status == Delivery.NOT_SENT or (rec or {}).get("delivery") in (Delivery.PENDING, Delivery.NOT_SENT)


def may_still_post(run: RunDir, rec: Optional[Dict[str, Any]]) -> bool:
    """Could a watcher still post for this scope: it is not decided yet, or its post is owed."""
    if run.is_posted():
        return False
    state = record_state(rec)
    return state is None or not state.terminal or owed_after_restart(run, rec, at_least_once=False)


def finished_state(bd: BuildDir, categorized: Optional[bool] = None) -> Optional[str]:
    """The terminal state of a build (or "posted" where only the marker says so), else None."""
    data, problem = bd.read_state()
    state = record_state(data)
    if state is not None and state.terminal:
        return str(state)
    if (problem or not (categorized or (data or {}).get("categorized"))) and bd.is_posted():
        return "posted"
    return None


@dataclass
class Scope:
    """One scope's bookkeeping during this watcher's life."""

    key: Optional[str]
    run: RunDir
    record: Optional[Dict[str, Any]] = None  # the terminal record, once there is one
    written: Optional[Tuple[str, str]] = None  # (state, rule) last written while not terminal
    logged: Optional[Tuple[str, str]] = None  # (state, rule) last logged
    outcome: Optional[Delivery] = None  # this watcher's delivery outcome, for the exit code
    owed: bool = False  # a post is owed and not yet attempted by this watcher

    @property
    def final(self) -> bool:
        return self.record is not None


@dataclass(frozen=True)
class Recovery:
    groups: Tuple[str, ...]  # known sub-runs, in their recorded order
    run_start: Optional[float]
    finished: Optional[State]  # the build's recorded terminal state: nothing more to watch


class Ledger:
    def __init__(self, build: BuildDir, build_name: str, categorized: bool, parent_base: Dict[str, Any],
                 at_least_once: bool = False, dry_run: bool = False, out: Callable[[str], None] = print):
        self.build, self.build_name, self.categorized = build, build_name, categorized
        self.parent_base = parent_base  # what every parent record carries (request, pid, ...)
        self.at_least_once, self.dry_run, self.out = at_least_once, dry_run, out
        self.scopes: Dict[Optional[str], Scope] = {}

    def scope(self, key: Optional[str]) -> Scope:
        if key not in self.scopes:
            self.scopes[key] = Scope(key, self.build if key is RUN else self.build.subrun(key))
        return self.scopes[key]

    def logger(self, key: Optional[str]) -> logging.LoggerAdapter:
        return log.get(self.build_name, key)

    # --- after a restart --------------------------------------------------------------------------

    def recover(self) -> Recovery:
        """Read what earlier watchers recorded; every terminal scope becomes final here, once."""
        parent = self._load_parent()
        groups = self._restore_subruns(recorded_groups(parent))
        state = record_state(parent)
        if state is not None and state.terminal:
            if not self.categorized or "message" in (parent or {}):  # a categorized run posted as a whole
                self._restore(self.scope(RUN), parent)
            return Recovery(groups, recorded_run_start(parent), state)
        return Recovery(groups, recorded_run_start(parent), None)

    def _load_parent(self) -> Optional[Dict[str, Any]]:
        data, problem = read_record(self.build, self.categorized)
        if problem:
            aside = self.build.set_aside_state()
            self.logger(RUN).warning("%s; moved aside to %s; markers remain the truth about what was posted",
                                     problem, aside or "(could not be moved)")
            data, _ = read_record(self.build, self.categorized)
        return data

    def _restore_subruns(self, recorded: Tuple[str, ...]) -> Tuple[str, ...]:
        found: Dict[str, int] = {}
        for g in set(recorded) | {g for g in self.build.subrun_names() if check_group_name(g)}:
            scope = self.scope(g)
            rec, _ = read_record(scope.run)
            if rec is not None and "group" not in rec:
                rec["group"] = g
            position = (rec or {}).get("position")
            found[g] = position if isinstance(position, int) else 10**6
            self._restore(scope, rec)
        return tuple(recorded) + tuple(sorted((g for g in found if g not in recorded), key=lambda g: (found[g], g)))

    def _restore(self, scope: Scope, rec: Optional[Dict[str, Any]]) -> None:
        state = record_state(rec)
        if rec is None or state is None or not state.terminal:
            return
        scope.record = rec
        if owed_after_restart(scope.run, rec, self.at_least_once):
            scope.owed = True
        elif rec.get("delivery") == Delivery.PENDING:
            self._report_interrupted(scope)

    def _report_interrupted(self, scope: Scope) -> None:
        """The watcher before us stopped during its attempt: report the outcome once, never resend."""
        outcome = delivery_status(scope.run)
        if outcome == Delivery.UNCERTAIN:
            self.logger(scope.key).error(
                "delivery uncertain: the previous watcher stopped while its request was in flight; not resent "
                "(at-most-once; check the channel, --at-least-once resends)")
        self.record_delivery(scope, outcome)

    # --- while watching -----------------------------------------------------------------------------

    def begin(self, groups: Tuple[str, ...], run_start: Optional[float]) -> None:
        self._write(self.build, {**self.parent_base, "build_name": self.build_name, "state": State.WAITING,
                                 "rule": "watcher-started", "reason": "the watcher started",
                                 "groups": list(groups), "run_start": run_start})

    def apply(self, decision: Decision, order: Tuple[str, ...], render: Render) -> List[Scope]:
        """Record what was decided; returns the scopes whose post became owed now."""
        if not self.categorized:
            return self._apply_scope(self.scope(RUN), decision.run, None, render)
        owed: List[Scope] = []
        for v in decision.groups:
            owed += self._apply_scope(self.scope(v.group or "?"), v, v.position, render)
        if not decision.groups and decision.run.terminal and decision.run.state in POSTED:
            # It ended before any sub-run began (a setup failure, say): its own result is the one post.
            return owed + self._apply_scope(self.scope(RUN), decision.run, None, render)
        self._note(self.scope(RUN), decision.run)
        if not decision.run.terminal:
            self._write_if_changed(self.scope(RUN), {**verdict_record(decision.run, self.build_name),
                                                     **self.parent_base, "groups": list(order)})
        return owed

    def unrecorded(self, decision: Decision) -> List[str]:
        """The scopes this decision ended whose terminal record could not be written (``apply`` logged why):
        the watcher must not end before they are (a restart would decide them again), nor post them."""
        if self.dry_run:
            return []
        if not self.categorized:
            verdicts = [(RUN, decision.run)]
        elif decision.groups:
            verdicts = [(v.group or "?", v) for v in decision.groups]
        else:
            verdicts = [(RUN, decision.run)] if decision.run.state in POSTED else []
        return [str(key or "the run") for key, v in verdicts if v.terminal and not self.scope(key).final]

    def _apply_scope(self, scope: Scope, v: Verdict, position: Optional[int], render: Render) -> List[Scope]:
        if scope.final:
            return []
        self._note(scope, v)
        record = verdict_record(v, self.build_name, position)
        if scope.key is RUN:
            record.update(self.parent_base)
        if not v.terminal:
            self._write_if_changed(scope, record)
            return []
        if v.state in POSTED:
            record["message"] = render(v, position)
            record["delivery"] = Delivery.PENDING  # a restart finds the post owed and sends it
        if self.dry_run:
            scope.record = record
            if "message" in record:
                self.out(json.dumps(record["message"], indent=2, ensure_ascii=False))
            return []
        try:
            record = self._write(scope.run, record)
        except StateError as exc:
            self.logger(RUN).error("cannot record %s: %s; will try again", v.state, exc)
            return []
        scope.record = record
        if record_state(record) in POSTED:
            scope.owed = True
            return [scope]
        return []

    def _note(self, scope: Scope, v: Verdict) -> None:
        """Log a scope's state when it changes: one line per change, never one per poll."""
        if scope.logged == (v.state, v.rule):
            return
        scope.logged = (v.state, v.rule)
        level = logging.WARNING if v.state in (State.HUNG, State.UNKNOWN, State.TERMINATED) else logging.INFO
        self.logger(scope.key).log(level, "state %s (%s): %s", v.state, v.rule, v.reason)
        if self.dry_run:
            self.out(f"[dry-run] {self.build_name}{'/' + scope.key if scope.key else ''}: {v.state} ({v.rule})")

    def _write_if_changed(self, scope: Scope, record: Dict[str, Any]) -> None:
        sig = (str(record["state"]), str(record["rule"]))
        if scope.written == sig:
            return
        try:
            self._write(scope.run, record)
            scope.written = sig
        except StateError as exc:
            self.logger(RUN).error("cannot record state %s: %s", record["state"], exc)

    def _write(self, run: RunDir, record: Dict[str, Any]) -> Dict[str, Any]:
        """Write under the lock cancel takes: once cancelled.marker exists, an unposted scope is CANCELLED."""
        if self.dry_run:
            return record
        with self.build.state_lock():
            if self.build.is_cancelled() and not run.is_posted() and record_state(record) != State.CANCELLED:
                record = cancelled_record(record, self.build_name, record.get("group"))
            run.write_state(record)
        self.build.append_event({"subrun": record.get("group"), "state": record["state"], "rule": record.get("rule")})
        return record

    # --- posts ---------------------------------------------------------------------------------------

    def has_owed(self) -> bool:
        return any(s.owed for s in self.scopes.values())

    def owed(self) -> List[Scope]:
        """Scopes whose post is owed, taken off the list: the caller attempts each now."""
        due = [s for s in self.scopes.values() if s.owed]
        for s in due:
            s.owed = False
        return due

    def message_of(self, scope: Scope) -> Optional[Dict[str, Any]]:
        """The recorded payload of an owed post (as the deciding watcher rendered it), re-read from disk."""
        rec, _ = scope.run.read_state()
        if rec and isinstance(rec.get("message"), dict) and record_state(rec) in POSTED:
            scope.record = rec
            return rec["message"]
        return None

    def record_delivery(self, scope: Scope, outcome: Delivery, retry: bool = False) -> None:
        """The outcome of this watcher's attempt (or of an interrupted one), kept for the exit code."""
        scope.outcome = outcome
        scope.owed = retry
        if scope.record is None:
            return
        scope.record = {**scope.record, "delivery": outcome}
        try:
            scope.record = self._write(scope.run, scope.record)
        except StateError as exc:
            self.logger(RUN).error("cannot record the delivery outcome: %s", exc)

    def event(self, scope: Scope, **fields: Any) -> None:
        self.build.append_event({"subrun": scope.key, **fields})

    # --- the end -----------------------------------------------------------------------------------

    def cancel(self, order: Tuple[str, ...], reason: str = CANCEL_REASON) -> None:
        """Record CANCELLED for every scope not yet final, the parent last."""
        for g in order:
            scope = self.scope(g)
            if not scope.final:
                self._write(scope.run, cancelled_record(None, self.build_name, g, reason))
        self._write(self.build, {**cancelled_record(None, self.build_name, None, reason), **self.parent_base,
                                 "state": State.CANCELLED, "groups": list(order)})
        self.logger(RUN).info("cancelled: nothing will be posted")

    def finish(self, decision: Optional[Decision], order: Tuple[str, ...]) -> ExitCode:
        """The exit code, from every posted scope's delivery: this watcher's, and what earlier watchers
        of the build recorded (a restart that sends an owed post must not hide a post rejected before).

        ``decision`` is None for a build that had finished before this watcher started."""
        for scope in self.scopes.values():
            if scope.outcome is None and scope.record is not None and record_state(scope.record) in POSTED:
                scope.outcome = delivery_status(scope.run)
        parent = self.scope(RUN)
        if not self.dry_run and self.categorized and not parent.final:
            record = ({**verdict_record(decision.run, self.build_name), **self.parent_base, "groups": list(order)}
                      if decision is not None else read_record(self.build, True)[0])
            try:
                if record is not None:
                    self._write(self.build, {**record, "delivery": self._summary()})
            except StateError as exc:
                self.logger(RUN).error("cannot record the final state: %s", exc)
        return self.exit_code()

    def _summary(self) -> Delivery:
        outcomes = {s.outcome for s in self.scopes.values() if s.outcome is not None and s.key is not RUN}
        if not outcomes:
            return Delivery.NOT_REQUIRED
        for outcome in (Delivery.NOT_SENT, Delivery.UNCERTAIN, Delivery.REJECTED, Delivery.CANCELLED):
            if outcome in outcomes:
                return outcome
        return Delivery.POSTED

    def attempted(self) -> bool:
        return any(s.outcome is not None for s in self.scopes.values())

    def exit_code(self) -> ExitCode:
        codes = {EXIT_FOR_DELIVERY.get(s.outcome) for s in self.scopes.values() if s.outcome is not None}
        return next((c for c in EXIT_RANK if c in codes), ExitCode.OK)


def parent_base(build_name: str, categorized: bool, request: Dict[str, Any]) -> Dict[str, Any]:
    return {"build_name": build_name, "categorized": categorized, "request": request, "watcher_pid": os.getpid()}


# --- the operator's cancel (the cancel command and helper) -------------------------------------------


@dataclass(frozen=True)
class CancelResult:
    cancelled: bool  # cancelled.marker written (or already there): nothing more will be posted
    finished: Optional[str] = None  # the build's state when there was nothing left to cancel
    posted: Tuple[str, ...] = ()  # scopes already posted ("" for the plain run)
    uncertain: Tuple[str, ...] = ()  # scopes whose post may exist (delivery uncertain)


def cancel_build(bd: BuildDir, build: str) -> CancelResult:
    """Write cancelled.marker and CANCELLED records, under the lock a watcher holds while it posts.

    Only a post already made (or a build finished with nothing owed) is out of reach: a run whose
    post is still owed (decided, waiting in a retry back-off, or left for a restart) is cancelled,
    and the watcher's re-check of the marker, under the same lock, keeps it from posting.
    """
    with bd.state_lock():
        data, problem = bd.read_state()
        categorized = bool((data or {}).get("categorized")) or bool(bd.subrun_names())
        subruns = [(g, bd.subrun(g)) for g in bd.subrun_names()]
        scopes = subruns if categorized else [("", bd)]
        records = {g: read_record(run)[0] for g, run in scopes}
        open_parent = categorized and (problem is not None or not (record_state(data) or State.WAITING).terminal)
        posted = tuple(g for g, run in scopes if run.is_posted())
        uncertain = tuple(g for g, run in scopes if not run.is_posted() and delivery_status(run) == Delivery.UNCERTAIN)
        if not open_parent and not any(may_still_post(run, records[g]) for g, run in scopes):
            # A damaged state.json of a posted run: the marker says it finished; it is left as it is.
            state = record_state(data) or (State.COMPLETED if posted else None)
            if state is not None:
                return CancelResult(False, str(state) if record_state(data) else "posted", posted, uncertain)
        bd.mark_cancelled({"cancelled_at": utc_now_iso(), "by_pid": os.getpid()})
        bd.write_state(cancelled_record(data, build, None, "cancelled by the operator"))
        for g, run in subruns:
            if may_still_post(run, records[g]):
                run.write_state(cancelled_record(records[g], build, g))
    bd.append_event({"state": State.CANCELLED, "rule": "cancelled-marker"})
    return CancelResult(True, None, posted, uncertain)
