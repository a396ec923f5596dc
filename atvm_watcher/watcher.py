"""The watch loop: poll evidence -> decide -> record -> render -> deliver once -> exit.

A scope (the plain run, or one sub-run) that reached a terminal state is final: it is recorded
in its state.json, posted at most once when COMPLETED/FAILED, and never decided again, also
by a restarted watcher. The exit code tells systemd whether a restart could help.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import asdict
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import inventory, log
from .buildname import check_group_name
from .decide import Decision, Limits, Verdict, decide
from .delivery import NOT_SENT, REJECTED, SENDING, UNCERTAIN, Deliverer, Result
from .evidence import EvidenceReader
from .mattermost import render
from .message import Context, compose
from .request import Request
from .settings import Settings
from .statedir import BuildDir, Locked, RunDir, StateError, read_json
from .stop import StopRequest
from .vocab import POSTED as POSTED_STATES
from .vocab import TERMINAL as TERMINAL_STATES

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_CONFIG = 0, 1, 2, 3
EXIT_REJECTED, EXIT_UNCERTAIN, EXIT_LOCKED, EXIT_FINISHED, EXIT_RETRY = 4, 5, 6, 7, 75
EXIT_FOR = {"uncertain": EXIT_UNCERTAIN, "rejected": EXIT_REJECTED, "not-sent": EXIT_RETRY}
EXIT_RANK = (EXIT_RETRY, EXIT_UNCERTAIN, EXIT_REJECTED)  # restartable first: a restart resends what is safe
PARENT = ""  # scope key of the plain run / categorized parent; sub-runs use their group name


def limits_of(settings: Settings) -> Limits:
    return Limits(settings.hung_after_seconds, settings.start_timeout_seconds, settings.gone_grace_seconds,
                  settings.settle_seconds)


def verdict_record(v: Verdict, build: str, position: Optional[int] = None) -> Dict[str, Any]:
    rec: Dict[str, Any] = {"build_name": build, "state": v.state, "rule": v.rule, "reason": v.reason,
                           "counts": asdict(v.counts), "failed_titles": list(v.failed_titles[:50]),
                           "run_start": v.run_start, "finished_at": v.finished_at}
    if v.group:
        rec.update(group=v.group, position=position)
    return rec


def delivery_status(run: RunDir) -> str:
    """posted | uncertain | rejected | not-sent | none, from the markers (the truth), not state.json."""
    if run.is_posted():
        return "posted"
    phase = run.read_delivery().get("phase")
    if phase in (SENDING, UNCERTAIN):
        return "uncertain"
    return {NOT_SENT: "not-sent", REJECTED: "rejected"}.get(phase, "none")


def needs_delivery(run: RunDir, record: Optional[Dict[str, Any]], at_least_once: bool) -> bool:
    """Should a restarted watcher (re)send this recorded scope's post?

    Only where we left a post owed: ``delivery: pending`` (decided, then the watcher stopped before
    any attempt) or an attempt that certainly made no post. A terminal state.json without that
    (also one written by hand) is final: nothing is sent. at-least-once also resends what is
    uncertain or was rejected.
    """
    if not record or record.get("state") not in POSTED_STATES:
        return False
    status = delivery_status(run)
    if status == "posted":
        return False
    if status in ("uncertain", "rejected"):
        return at_least_once
    return status == "not-sent" or record.get("delivery") in ("pending", "not-sent")


def recorded_groups(parent: Optional[Dict[str, Any]]) -> Tuple[str, ...]:
    """Sub-run names from state.json, trusting only well-formed ones (the file may be damaged)."""
    groups = (parent or {}).get("groups")
    if not isinstance(groups, list):
        return ()
    return tuple(dict.fromkeys(g for g in groups if isinstance(g, str) and check_group_name(g)))


def recorded_run_start(parent: Optional[Dict[str, Any]]) -> Optional[float]:
    value = (parent or {}).get("run_start")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class Watcher:
    def __init__(self, settings: Settings, request: Request, dry_run: bool = False,
                 at_least_once: bool = False, clock: Callable[[], float] = time.time,
                 out: Callable[[str], None] = print):
        self.s, self.req, self.dry_run = settings, request, dry_run
        self.at_least_once = at_least_once or settings.at_least_once
        self.clock, self.out = clock, out
        self.build = BuildDir.of(settings.state_root, request.build_name)
        self.log = log.get(request.build_name)
        self.stop = StopRequest()
        self.outcomes: Dict[str, str] = {}  # scope key -> delivery outcome, for the exit code
        self.done: Dict[str, Dict[str, Any]] = {}  # scope key -> terminal record
        self.logged: Dict[str, Tuple[str, str]] = {}  # scope key -> (state, rule) last logged
        self.written: Dict[str, Tuple[str, str]] = {}  # scope key -> (state, rule) last written
        self.pending: List[Tuple[str, RunDir]] = []  # terminal, post still owed: retried before exit
        self.deliverer = Deliverer(self.build, settings.webhook, settings.post_timeout_seconds,
                                   settings.post_attempts, settings.post_backoff_seconds,
                                   settings.post_max_wait_seconds, self.at_least_once,
                                   self.stop.sleep)

    # --- lifecycle --------------------------------------------------------------------------

    def run(self) -> int:
        self._install_signals()
        if self.dry_run:  # no lock, no writes: a dry run never changes what the real watcher will do
            return self._loop(self._reader(()))
        try:
            lock = self.build.acquire_watch_lock()
        except Locked as exc:
            self.log.error("another watcher (%s) is already watching this build; not starting a second", exc.holder)
            return EXIT_LOCKED
        try:
            return self._run_locked()
        finally:
            os.close(lock)

    def _install_signals(self) -> None:
        self.stop.install()

    def _run_locked(self) -> int:
        parent = self._load_parent()
        groups = self._restore_subruns(recorded_groups(parent))
        if parent and parent.get("state") in TERMINAL_STATES:
            return self._already_finished(parent)
        if self.build.is_cancelled():
            return self._cancelled(groups)
        self._write(self.build, {**self._parent_base(), "state": "WAITING", "rule": "watcher-started",
                                 "reason": "the watcher started", "groups": list(groups),
                                 "run_start": recorded_run_start(parent)})
        self.log.info("watching (categorized=%s, poll %gs)", self.req.categorize, self.s.poll_seconds)
        self._retry_pending()  # sub-runs a stopped watcher decided but did not post
        return self._loop(self._reader(groups, recorded_run_start(parent)))

    def _reader(self, groups: Tuple[str, ...], run_start: Optional[float] = None) -> EvidenceReader:
        return EvidenceReader(self.req.build_name, self.s.log_dir, self.s.report_dir, self.req.categorize,
                              self.clock(), groups, run_start)

    def _parent_base(self) -> Dict[str, Any]:
        return {"build_name": self.req.build_name, "categorized": self.req.categorize,
                "request": self.req.to_json(), "watcher_pid": os.getpid()}

    def _load_parent(self) -> Optional[Dict[str, Any]]:
        data, problem = self.build.read_state()
        if problem:
            aside = self.build.path / f"state.json.corrupt-{int(self.clock())}"
            try:
                os.replace(self.build.state_file, aside)
            except OSError:
                pass
            self.log.warning("%s; moved aside to %s; markers remain the truth about what was posted",
                             problem, aside.name)
        if data is None and not self.req.categorize and self.build.is_posted():
            marker, _ = read_json(self.build.posted_marker)
            data = {"state": (marker or {}).get("state", "COMPLETED"), "rule": "posted-marker",
                    "reason": "rebuilt from posted.marker"}
        return data

    def _restore_subruns(self, recorded: Tuple[str, ...]) -> Tuple[str, ...]:
        """Terminal sub-runs stay final; returns the known groups in their recorded order."""
        found: Dict[str, int] = {}
        for g in set(recorded) | {g for g in self.build.subrun_names() if check_group_name(g)}:
            run = self.build.subrun(g)
            rec, _ = run.read_state()
            if rec is None and run.is_posted():
                marker, _ = read_json(run.posted_marker)
                rec = {"state": (marker or {}).get("state", "COMPLETED"), "group": g}
            position = (rec or {}).get("position")
            found[g] = position if isinstance(position, int) else 10**6
            if rec and rec.get("state") in TERMINAL_STATES:
                self.done[g] = rec
                if needs_delivery(run, rec, self.at_least_once):
                    self.pending.append((g, run))
                elif rec.get("delivery") == "pending":
                    self._report_interrupted(g, run, rec)
        order = list(recorded) + sorted((g for g in found if g not in recorded), key=lambda g: (found[g], g))
        return tuple(order)

    def _already_finished(self, parent: Dict[str, Any]) -> int:
        """A terminal build is final: only a post we left owed (or at-least-once) is sent now."""
        state = parent.get("state")
        if not self.req.categorize and needs_delivery(self.build, parent, self.at_least_once):
            self.done[PARENT] = parent
            self.pending.append((PARENT, self.build))
        elif not self.req.categorize and parent.get("delivery") == "pending":
            self._report_interrupted(PARENT, self.build, parent)
        if not self.pending and not self.outcomes:
            self.log.info("build already finished (%s); nothing more to do", state)
            return EXIT_OK
        if self.pending:
            self.log.info("build finished (%s) with a post still owed; delivering it now", state)
            self._retry_pending()
        return self._exit_code()

    def _report_interrupted(self, key: str, run: RunDir, record: Dict[str, Any]) -> None:
        """The watcher before us stopped during its attempt: report the outcome once, never resend."""
        outcome = delivery_status(run)
        self.done[key] = record
        self.outcomes[key] = outcome
        if outcome == "uncertain":
            log.get(self.req.build_name, key or None).error(
                "delivery uncertain: the previous watcher stopped while its request was in flight; not resent "
                "(at-most-once; check the channel, --at-least-once resends)")
        self._record_delivery(key, run, outcome)

    def _cancelled(self, groups: Tuple[str, ...]) -> int:
        for g in groups:
            if g not in self.done:
                self._write(self.build.subrun(g), {"build_name": self.req.build_name, "group": g,
                                                  "state": "CANCELLED", "rule": "cancelled-marker",
                                                  "reason": "cancelled.marker is present"})
        self._write(self.build, {**self._parent_base(), "state": "CANCELLED", "rule": "cancelled-marker",
                                 "reason": "cancelled.marker is present", "groups": list(groups)})
        self.log.info("cancelled: nothing will be posted")
        return EXIT_OK

    # --- the loop ------------------------------------------------------------------------------

    def _loop(self, reader: EvidenceReader) -> int:
        limits = limits_of(self.s)
        while True:
            if not self.dry_run and self.build.is_cancelled():
                return self._cancelled(reader.group_order)
            decision = decide(reader.snapshot(self.clock()), limits)
            self._handle(decision, reader.group_order)
            if decision.run.terminal:
                return self._finish(decision, reader.group_order)
            if not self.stop.sleep(self.s.poll_seconds):
                self.log.info("stop requested before the run finished; nothing posted for what is unfinished")
                return EXIT_OK

    def _handle(self, decision: Decision, order: Tuple[str, ...]) -> None:
        if not self.req.categorize:
            self._scope(PARENT, self.build, decision.run, None)
            return
        for v in decision.groups:
            self._scope(v.group or "?", self.build.subrun(v.group or "?"), v, order.index(v.group) + 1)
        self._note("parent", decision.run)
        if not decision.run.terminal:
            self._write_if_changed(PARENT, self.build, {**verdict_record(decision.run, self.req.build_name),
                                                        **self._parent_base(), "groups": list(order)})

    def _note(self, key: str, v: Verdict) -> None:
        """Log a scope's state when it changes: one line per change, never one per poll."""
        if self.logged.get(key) == (v.state, v.rule):
            return
        self.logged[key] = (v.state, v.rule)
        sub = None if key in (PARENT, "parent") else key
        level = 30 if v.state in ("HUNG", "UNKNOWN", "TERMINATED") else 20
        log.get(self.req.build_name, sub).log(level, "state %s (%s): %s", v.state, v.rule, v.reason)
        if self.dry_run:
            self.out(f"[dry-run] {self.req.build_name}{'/' + sub if sub else ''}: {v.state} ({v.rule})")

    def _scope(self, key: str, run: RunDir, v: Verdict, position: Optional[int]) -> None:
        if key in self.done:
            return
        self._note(key or "parent", v)
        record = verdict_record(v, self.req.build_name, position)
        if key == PARENT:
            record.update(self._parent_base())
        if not v.terminal:
            self._write_if_changed(key, run, record)
            return
        if v.state in POSTED_STATES:
            record["message"] = render(compose(v, self.req, self._context(position)), self.s.channel,
                                       self.s.username)
            record["delivery"] = "pending"  # a restart finds the post owed and sends it
        if self.dry_run:
            self.done[key] = record
            if "message" in record:
                self.out(json.dumps(record["message"], indent=2, ensure_ascii=False))
            return
        try:
            record = self._write(run, record)
        except StateError as exc:
            self.log.error("cannot record %s: %s; will try again", v.state, exc)
            return
        self.done[key] = record
        if record["state"] in POSTED_STATES:
            self._deliver(key, run, record["message"], record["state"])

    def _write_if_changed(self, key: str, run: RunDir, record: Dict[str, Any]) -> None:
        sig = (record["state"], record["rule"])
        if self.written.get(key) == sig:
            return
        try:
            self._write(run, record)
            self.written[key] = sig
        except StateError as exc:
            self.log.error("cannot record state %s: %s", record["state"], exc)

    def _write(self, run: RunDir, record: Dict[str, Any]) -> Dict[str, Any]:
        """Write under the lock cancel takes: once cancelled.marker exists, an unposted scope is CANCELLED."""
        if self.dry_run:
            return record
        with self.build.state_lock():
            if self.build.is_cancelled() and not run.is_posted() and record.get("state") != "CANCELLED":
                record = {k: v for k, v in record.items() if k != "message"}
                record.update(state="CANCELLED", rule="cancelled-marker", reason="cancelled.marker is present")
            run.write_state(record)
        self.build.append_event({"subrun": record.get("group"), "state": record["state"], "rule": record.get("rule")})
        return record

    def _context(self, position: Optional[int]) -> Context:
        vms, problem = inventory.vms_for_build(self.s.inventory, self.req.build_name)
        return Context(hostname=socket.gethostname(), vm_labels=[vm.label() for vm in vms],
                       inventory_problem=problem, position=position)

    # --- delivery ------------------------------------------------------------------------------

    def _deliver(self, key: str, run: RunDir, payload: Dict[str, Any], state: str) -> None:
        log_ = log.get(self.req.build_name, key or None)
        try:
            result = self.deliverer.deliver(run, payload, state)
        except StateError as exc:
            result = Result("not-sent", f"the intent record could not be written ({exc}); nothing was sent")
        self.outcomes[key] = result.outcome
        level = 20 if result.outcome in ("posted", "cancelled") else 40
        error_id = f" [{result.error_id}]" if result.error_id else ""
        log_.log(level, "delivery %s after %d attempt(s): %s%s", result.outcome, result.attempts, result.detail,
                 error_id)
        self.build.append_event({"subrun": key or None, "delivery": result.outcome, "detail": result.detail,
                                 "error_id": result.error_id})
        if result.outcome == "not-sent" and result.attempts == 0:  # exhausted attempts: exit 75 retries
            self.pending.append((key, run))
        self._record_delivery(key, run, result.outcome)

    def _retry_pending(self) -> None:
        pending, self.pending = self.pending, []
        for key, run in pending:
            rec, _ = run.read_state()
            if rec and isinstance(rec.get("message"), dict) and rec.get("state") in POSTED_STATES:
                self.done[key] = rec
                self._deliver(key, run, rec["message"], rec["state"])
            else:
                self.outcomes[key] = "not-sent"
                log.get(self.req.build_name, key or None).error("the recorded message is missing; cannot deliver")

    def _record_delivery(self, key: str, run: RunDir, outcome: str) -> None:
        if key not in self.done:
            return
        self.done[key] = {**self.done[key], "delivery": outcome}
        try:
            self.done[key] = self._write(run, self.done[key])
        except StateError as exc:
            self.log.error("cannot record the delivery outcome: %s", exc)

    def _finish(self, decision: Decision, order: Tuple[str, ...]) -> int:
        if self.pending and not self.dry_run:
            self._retry_pending()
        if not self.dry_run and self.req.categorize:
            record = {**verdict_record(decision.run, self.req.build_name), **self._parent_base(),
                      "groups": list(order), "delivery": self._summary()}
            try:
                self._write(self.build, record)
            except StateError as exc:
                self.log.error("cannot record the final state: %s", exc)
        for key, record in self.done.items():  # also what an earlier, killed watcher found uncertain
            if key not in self.outcomes and record.get("state") in POSTED_STATES:
                self.outcomes[key] = delivery_status(self.build.subrun(key) if key else self.build)
        code = self._exit_code()
        self.log.info("finished: %s; exit %d", decision.run.state, code)
        return code

    def _summary(self) -> str:
        if not self.outcomes:
            return "not-required"
        for outcome in ("not-sent", "uncertain", "rejected", "cancelled"):
            if outcome in self.outcomes.values():
                return outcome
        return "posted"

    def _exit_code(self) -> int:
        codes = {EXIT_FOR.get(o, EXIT_OK) for o in self.outcomes.values()}
        return next((c for c in EXIT_RANK if c in codes), EXIT_OK)


def run_watch(settings: Settings, request: Request, dry_run: bool, at_least_once: bool) -> int:
    try:
        return Watcher(settings, request, dry_run, at_least_once).run()
    except StateError as exc:
        log.get(request.build_name).error("state directory problem: %s", exc)
        return EXIT_INTERNAL
