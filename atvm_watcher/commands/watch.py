"""``watch``: the watcher itself. Snapshot -> decide -> record in the ledger -> deliver what is owed.

A scope (the plain run, or one sub-run) that reached a terminal state is final: the ledger records
it once, a post is made at most once when it is COMPLETED/FAILED, and it is never decided again,
also by a restarted watcher. The exit code tells systemd whether a restart could help (vocab.py).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

from .. import inventory, log, preview, procs, version_text
from ..decide import Decision, Verdict, decide, rests_on_launcher
from ..delivery import Deliverer, Result
from ..evidence import SYSTEM_CLOCK, Clock, EvidenceReader
from ..ledger import Ledger, Scope, parent_base
from ..mattermost import render
from ..message import Context, compose
from ..request import Request
from ..settings import ConfigError, Settings, posting_problem
from ..statedir import BuildDir, Locked, StateError
from ..stop import StopRequest
from ..vocab import Delivery, ExitCode, State
from ..wake import Targets, Waiter, next_deadline, timeout_until

CATEGORIZE_EVERY = 30.0  # seconds between looks for sub-runs a plain watcher would miss (a few scandirs)

# What only a post needs (the message, Mattermost's payload, HTTP and TLS) is imported at start (above), not
# when the run ends: deferred, it saved about 2.3 MiB per waiting watcher but cost about 25 ms of CPU
# at the worst moment, and made a burst of 100 runs finishing together post later (docs/PERFORMANCE.md,
# "Memory", has both measurements).


class Watcher:
    def __init__(self, settings: Settings, request: Request, dry_run: bool = False,
                 at_least_once: bool = False, clock: Clock = SYSTEM_CLOCK,
                 out: Callable[[str], None] = print):
        self.s, self.req, self.dry_run = settings, request, dry_run
        self.clock, self.out = clock, out
        self.reader: Optional[EvidenceReader] = None
        self.categorize_said, self.categorize_checked = False, float("-inf")
        self.build = BuildDir.of(settings.state_root, request.build_name)
        self.log = log.get(request.build_name)
        self.stop = StopRequest()
        self.ledger = Ledger(self.build, request.build_name, request.categorize,
                             parent_base(request.build_name, request.categorize, request.to_json()),
                             at_least_once or settings.at_least_once, dry_run, out)
        self.deliverer = Deliverer(self.build, settings.webhook, settings.post_timeout_seconds,
                                   settings.post_attempts, settings.post_backoff_seconds,
                                   settings.post_max_wait_seconds, self.ledger.at_least_once, self.stop.sleep)

    def run(self) -> int:
        self.stop.install()
        if self.dry_run:  # no lock, no writes: a dry run never changes what the real watcher will do
            return self._loop(self._reader(()))
        try:
            lock = self.build.acquire_watch_lock()
        except Locked as exc:
            self.log.error("another watcher (%s) is already watching this build; not starting a second", exc.holder)
            return ExitCode.LOCKED
        try:
            return self._run_locked()
        finally:
            os.close(lock)

    def _run_locked(self) -> int:
        recovery = self.ledger.recover()
        if recovery.finished is not None:
            return self._already_finished(recovery.finished)
        if self.build.is_cancelled():
            self.ledger.cancel(recovery.groups)
            return ExitCode.OK
        if not self.build.request_file.exists():  # watched without the start helper: when it was asked for
            self.build.record_request(self.req.to_json())
        self.ledger.begin(recovery.groups, recovery.run_start)
        self.log.info("watching (categorized=%s, poll %gs)", self.req.categorize, self.s.poll_seconds)
        self._deliver_owed()  # sub-runs a stopped watcher decided but did not post
        return self._loop(self._reader(recovery.groups, recovery.run_start))

    def _already_finished(self, state: str) -> int:
        """A terminal build is final: only a post we left owed (or at-least-once) is sent now."""
        owed = self.ledger.has_owed()
        if not owed and not self.ledger.attempted():
            self.log.info("build already finished (%s); nothing more to do", state)
            return ExitCode.OK
        if owed:
            self.log.info("build finished (%s) with a post still owed; delivering it now", state)
            self._deliver_owed()
        return self.ledger.finish(None, ())

    def _reader(self, groups: Tuple[str, ...], run_start: Optional[float] = None) -> EvidenceReader:
        self.reader = EvidenceReader(self.s.layout(self.req.build_name), self.req.categorize, self.clock, groups,
                                     run_start, self.build.requested_at())
        return self.reader

    def _check_categorize(self, decision) -> None:
        """Say once (a WARNING) when --categorize looks forgotten, or was given for a run without sub-runs."""
        now = self.clock.mono()
        if self.categorize_said or (not decision.run.terminal and now < self.categorize_checked + CATEGORIZE_EVERY):
            return
        self.categorize_checked = now
        mismatch = self.reader.categorize_mismatch(decision.run.terminal)
        if mismatch:
            self.categorize_said = True
            self.log.warning("%s", mismatch)
            if self.dry_run:
                self.out(f"[dry-run] warning: {mismatch}")

    @staticmethod
    def _order(decision) -> Tuple[str, ...]:
        """This run's sub-runs in order: the groups found on disk less those only an earlier run left."""
        return tuple(v.group for v in decision.groups if v.group)

    def _loop(self, reader: EvidenceReader) -> int:
        waiter = Waiter(self.stop, self.s.poll_seconds, self.s.wake, self.clock.mono)
        self.log.info("%s", waiter.describe())
        try:
            return self._look_until_terminal(reader, waiter)
        finally:
            waiter.close()

    def _look_until_terminal(self, reader: EvidenceReader, waiter: Waiter) -> int:
        """Look (snapshot -> decide -> ledger -> deliver), then wait until the evidence may have changed."""
        limits = self.s.limits()
        spans = (limits.settle, limits.gone_grace, limits.hung_after, limits.start_timeout)
        order = reader.group_order
        polling = not waiter.on_events
        while True:
            if not self.dry_run and self.build.is_cancelled():
                self.ledger.cancel(order)
                return ExitCode.OK
            if waiter.seen_alive is not None:
                reader.launcher_alive_until(*waiter.seen_alive)
            if waiter.lost_events():
                reader.look_everywhere()
            reader.reports_touched(waiter.reports_touched())
            snap = reader.snapshot()
            decision = decide(snap, limits)
            ends = (v.group for v in (decision.run, *decision.groups)  # an unknown launcher's start dates the run
                    if v.terminal and (rests_on_launcher(v) or snap.launcher.started_at is None))
            if reader.launcher_rescanned(ends):
                snap = reader.snapshot()  # a launcher only a full /proc scan found: decided again with it
                decision = decide(snap, limits)
            if decision.run_start_kept is not None:  # e.g. an earlier run's .exit, about to be overwritten
                reader.recorded_run_start = decision.run_start_kept
            reader.mark_leftovers(decision.leftover_groups)
            self._check_categorize(decision)
            order = self._order(decision)
            for scope in self.ledger.apply(decision, order, self._render):
                self._deliver(scope)
            if decision.run.terminal:
                if not self.dry_run:
                    self._deliver_owed()
                code = self.ledger.finish(decision, order)
                ended = State.CANCELLED if not self.dry_run and self.build.is_cancelled() else decision.run.state
                self.log.info("finished: %s; exit %d", ended, code)
                return code
            files, trees, folders, logs = reader.watch_targets()
            again = waiter.looked(Targets(files + (str(self.build.cancelled_marker),), trees, folders, logs))
            if polling != (not waiter.on_events):
                polling = True
                self.log.warning("%s", waiter.describe())
            launcher = snap.launcher
            waiter.follow(launcher.pid if launcher.alive else None,
                          lambda pid=launcher.pid, began=launcher.started_at: procs.alive(pid, began))
            timeout = 0.0 if again else timeout_until(next_deadline(snap, spans), snap.taken_at)
            if settling(decision):
                timeout = min(timeout, self.s.poll_seconds)
            if not self._wait(waiter, reader, timeout):
                self.log.info("stop requested before the run finished; nothing posted for what is unfinished")
                return ExitCode.OK

    @staticmethod
    def _wait(waiter: Waiter, reader: EvidenceReader, timeout: float) -> bool:
        """Wait for the next look; a log that grew by lines the decision does not read is read, not looked at."""
        end = waiter.clock() + timeout
        while waiter.wait(timeout):
            if not waiter.logs_only or reader.log_news():
                return True
            if not waiter.breathe():  # rationed too: a log written line by line must not keep the watcher busy
                return False
            timeout = end - waiter.clock()
            if timeout <= 0:
                return True
        return False

    def _render(self, verdict: Verdict, position: Optional[int]) -> Dict[str, Any]:
        return render(compose(verdict, self.req, self.context(verdict, position)), self.s.channel, self.s.username)

    def context(self, verdict: Verdict, position: Optional[int]) -> Context:
        """What the post says beyond the verdict: VMs, where the files are, error lines, flaky tests."""
        build, group = self.req.build_name, verdict.group
        vms, problem = inventory.vms_for_build(self.s.inventory, build)
        mine = inventory.for_group(vms, group)
        # How many sub-runs there are: the operator's --groups, else the sub-runs the inventory names for
        # this build. The watcher itself only learns it when the run has ended, after the posts.
        of = self.req.groups or len(inventory.groups_of(vms)) or None
        layout = self.s.layout(build)
        paths = layout.group(group) if group else layout.run()
        scope = self.reader.scope(group) if self.reader is not None else None  # as read by this poll
        errors, flaky, flaky_count = (scope.errors(), tuple(scope.tail.flaky), scope.tail.flaky_count) if scope \
            else ({}, (), 0)
        return Context(hostname=socket.gethostname(), vm_labels=[vm.label() for vm in mine or vms],
                       inventory_problem=problem, position=position, of=of, vm_group=group if mine else "",
                       log_path=str(paths.log), report_path=str(paths.reports),
                       report_url=self.s.report_link(build, group), errors=errors, flaky=flaky,
                       flaky_count=flaky_count, version=version_text())

    def write_preview(self, path: Path) -> None:
        """The posts of this (dry) run as an HTML page (preview.py), in the order they were decided."""
        payloads = [s.record["message"] for s in self.ledger.scopes.values()
                    if s.record is not None and isinstance(s.record.get("message"), dict)]
        note = "" if payloads else "Nothing would be posted: the run did not end COMPLETED or FAILED (see above)."
        path.write_text(preview.page(payloads, f"{self.req.build_name}: what would be posted", note),
                        encoding="utf-8")
        self.out(f"[dry-run] {len(payloads)} post(s) laid out as Mattermost shows them: {path}")

    def _deliver_owed(self) -> None:
        for scope in self.ledger.owed():
            payload = self.ledger.message_of(scope)
            if payload is None:
                self.ledger.logger(scope.key).error("the recorded message is missing; cannot deliver")
                scope.outcome = Delivery.NOT_SENT
                continue
            self._deliver(scope, payload)

    def _deliver(self, scope: Scope, payload: Optional[Dict[str, Any]] = None) -> None:
        scope.owed = False
        record = scope.record or {}
        try:
            result = self.deliverer.deliver(scope.run, payload or record["message"], record["state"])
        except StateError as exc:
            result = Result(Delivery.NOT_SENT, f"the intent record could not be written ({exc}); nothing was sent")
        level = 20 if result.outcome in (Delivery.POSTED, Delivery.CANCELLED) else 40
        error_id = f" [{result.error_id}]" if result.error_id else ""
        self.ledger.logger(scope.key).log(level, "delivery %s after %d attempt(s): %s%s", result.outcome,
                                          result.attempts, result.detail, error_id)
        self.ledger.event(scope, delivery=result.outcome, detail=result.detail, error_id=result.error_id)
        # Nothing was attempted (the intent record could not be written): try once more before exiting.
        retry = result.outcome == Delivery.NOT_SENT and result.attempts == 0
        self.ledger.record_delivery(scope, result.outcome, retry=retry)


def settling(decision: Decision) -> bool:
    """Is a verdict waiting for a file still being written? It may be written in ways that raise no event
    (through mmap): looked at every ATVM_POLL_SECONDS while it lasts (seconds)."""
    return any(v.rule.endswith("settling") for v in (decision.run, *decision.groups))


def run(settings: Settings, request: Request, dry_run: bool, at_least_once: bool,
        preview_file: Optional[str] = None) -> int:
    problem = posting_problem(settings)
    if settings.env_file_unsafe:  # under systemd the values arrive via EnvironmentFile=: refuse all the same
        raise ConfigError(f"{problem} (the watcher refuses to run until then)")
    if problem and not dry_run:
        raise ConfigError(problem)
    try:
        watcher = Watcher(settings, request, dry_run, at_least_once)
        code = watcher.run()
        if preview_file:
            watcher.write_preview(Path(preview_file))
        return code
    except StateError as exc:
        log.get(request.build_name).error("state directory problem: %s", exc)
        return ExitCode.INTERNAL
