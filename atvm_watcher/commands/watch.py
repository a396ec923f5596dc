"""``watch``: the watcher itself. Snapshot -> decide -> record in the ledger -> deliver what is owed.

A scope (the plain run, or one sub-run) that reached a terminal state is final: the ledger records
it once, a post is made at most once when it is COMPLETED/FAILED, and it is never decided again,
also by a restarted watcher. The exit code tells systemd whether a restart could help (vocab.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import functools
import json
import os
import pickle
import signal
import socket
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from .. import inventory, log, preview, procs, version_text
from ..decide import Decision, Limits, Verdict, decide, rests_on_launcher
from ..delivery import Deliverer, Result
from ..evidence import SYSTEM_CLOCK, Clock, EvidenceReader
from ..ledger import Ledger, Scope, parent_base
from ..mattermost import render
from ..message import Context, compose
from ..request import Request
from ..rest import fingerprint
from ..settings import ConfigError, Settings, posting_problem
from ..statedir import BuildDir, Locked, StateError
from ..stop import STOP_SIGNALS, StopRequest
from ..vocab import Delivery, ExitCode, Snapshot, State
from ..wake import DEADLINE_MARGIN, SAFETY_SECONDS, Targets, Waiter, Watches, deadlines, next_deadline, timeout_until

CATEGORIZE_EVERY = 30.0  # seconds between looks for sub-runs a plain watcher would miss (a few scandirs)
REST_MAGIC = b"atvm-watcher rest state 1\n"  # the first bytes of the state a resting watcher hands itself
REST_PROBES = 64  # instants probed for the next decisive deadline (decisive_deadline)

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
        self.lock_fd = -1  # the build's watch lock, held for the watcher's life (across a rest too)
        self.categorize_said, self.categorize_checked = False, float("-inf")
        self.build = BuildDir.of(settings.state_root, request.build_name)
        self.log = log.get(request.build_name)
        self.stop = StopRequest()
        self.ledger = Ledger(self.build, request.build_name, request.categorize,
                             parent_base(request.build_name, request.categorize, request.to_json()),
                             at_least_once or settings.at_least_once, dry_run, out)
        self.rest_problem: Optional[str] = None  # why this watcher could not rest, once it tried
        # Only a watcher that is the program itself (atvm_run_watcher.py, as the unit starts it) may rest:
        # the rest exec()s the light waiter in its place, and then the program again (run() sets it).
        self.may_rest = False
        self.rested = False
        self.deliverer = self._deliverer()

    def _deliverer(self) -> Deliverer:
        s = self.s
        return Deliverer(self.build, s.webhook, s.post_timeout_seconds, s.post_attempts, s.post_backoff_seconds,
                         s.post_max_wait_seconds, self.ledger.at_least_once, self.stop.sleep)

    def run(self) -> int:
        self.stop.install()
        # Parsed now, while nothing waits on this watcher: the post re-reads the file and parses it only
        # if it changed (inventory.py), so a burst of runs finishing together does not pay for it.
        inventory.load_inventory(self.s.inventory)
        if self.dry_run:  # no lock, no writes: a dry run never changes what the real watcher will do
            return self._loop(self._reader(()))
        try:
            lock = self.lock_fd = self.build.acquire_watch_lock()
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

    def _loop(self, reader: EvidenceReader, waiter: Optional[Waiter] = None) -> int:
        if waiter is None:
            waiter = Waiter(self.stop, self.s.poll_seconds, self.s.wake, self.clock.mono)
            said = self.log.info if waiter.on_events or self.s.wake == "poll" else self.log.warning
            said("%s", waiter.describe())
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
        unreadable = refused = 0  # looks in a row that could not read the evidence; ends the ledger refused
        while True:
            if not self.dry_run and self.build.is_cancelled():
                self.ledger.cancel(order)
                return ExitCode.OK
            if waiter.seen_alive is not None:
                reader.launcher_alive_until(*waiter.seen_alive)
            if waiter.lost_events():
                reader.look_everywhere()
            reader.reports_touched(waiter.reports_touched())
            short = descriptors_short()
            snap = reader.snapshot()
            short = short or descriptors_short()
            if short:  # a file the look could not open was "absent" to it: nothing it saw is to be trusted
                unreadable += 1
                if unreadable == 1 or unreadable % 60 == 0:
                    self.log.error("cannot read the run's evidence: %s; looking again every %gs (nothing is decided "
                                   "meanwhile)", short, self.s.poll_seconds)
                if not self.stop.sleep(self.s.poll_seconds):
                    self.log.info("stop requested before the run finished; nothing posted for what is unfinished")
                    return ExitCode.OK
                continue
            if unreadable:
                self.log.info("the run's evidence can be read again")
                unreadable = 0
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
            unrecorded = self.ledger.unrecorded(decision) if decision.run.terminal else []
            if unrecorded:  # the state directory refused the record (apply logged why): never end unrecorded
                refused += 1
                if refused >= RECORD_ATTEMPTS:
                    self.log.error("the end of %s could not be recorded in %d tries; exit %d: systemd starts the "
                                   "watcher again, which decides it anew", ", ".join(unrecorded), refused,
                                   ExitCode.INTERNAL)
                    return ExitCode.INTERNAL
                if not self.stop.sleep(self.s.poll_seconds):
                    self.log.info("stop requested before the run finished; nothing posted for what is unfinished")
                    return ExitCode.OK
                continue
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
                          functools.partial(procs.alive, launcher.pid, launcher.started_at))
            timeout = 0.0 if again else timeout_until(next_deadline(snap, spans), snap.taken_at)
            if settling(decision):
                timeout = min(timeout, self.s.poll_seconds)
            elif not again and self._may_rest(waiter):
                quiet_for = self.clock.mono() - waiter.event_at
                if quiet_for >= self.s.rest_after_seconds:
                    self._rest(waiter, snap, decision, limits, spans)  # returns only when it could not rest
                else:  # wake when it has been quiet long enough (no event comes to say so)
                    timeout = min(timeout, self.s.rest_after_seconds - quiet_for + DEADLINE_MARGIN)
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

    # --- resting: the light waiter (rest.py) in this very process while the run stays quiet ----------------

    def _may_rest(self, waiter: Waiter) -> bool:
        """May this watcher rest, once its run has been quiet for ATVM_REST_AFTER_SECONDS?"""
        return (self.may_rest and self.s.wake == "auto" and not self.dry_run and self.rest_problem is None
                and waiter.on_events and not waiter.launcher_polled)

    def _rest(self, waiter: Waiter, snap: Snapshot, decision: Decision, limits: Limits,
              spans: Tuple[float, ...]) -> None:
        """Hand this watcher's state to itself and exec() the light waiter; returns only when that failed
        (the watcher then waits as it is, and does not try again)."""
        deadline = decisive_deadline(snap, decision, limits, spans)
        if deadline is not None and deadline - self.clock.mono() < self.s.rest_after_seconds:
            return  # due soon: a rest costs an exec() each way (about 0.15 s of CPU to come back)
        try:
            argv, spec_fds = self._rest_command(waiter, deadline)
            # A stop signal that comes while either image starts waits, blocked, for its handler (the mask
            # survives exec(); rest.py and StopRequest.install unblock once theirs are in place).
            signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
            os.execv(argv[0], argv[1:])
        except (OSError, pickle.PicklingError, TypeError, AttributeError, ValueError) as exc:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
            self.rest_problem = f"{type(exc).__name__}: {exc}"
            self.log.warning("cannot rest (%s); waiting as it is (only costlier)", self.rest_problem)
            for fd in locals().get("spec_fds", ()):  # the state's descriptor, when it was made
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _rest_command(self, waiter: Waiter, deadline: Optional[float]) -> Tuple[List[str], Tuple[int, ...]]:
        """The light waiter's command line; its state descriptor (to close if the exec fails)."""
        if not sys.executable or waiter.watches is None:
            raise OSError("no interpreter path or no inotify")
        resume = resume_command()
        when = "no time rule due" if deadline is None else f"its next time rule in {deadline - self.clock.mono():.0f}s"
        say = self.log.info if not self.rested else self.log.debug  # said once: a run rests between its tests
        say("quiet for %.0fs: resting (the same process, a light waiter) until a change, the launcher's exit or "
            "%s%s", self.clock.mono() - waiter.event_at, when, "" if self.rested else " (later rests: debug level)")
        self.rested = True
        state = os.memfd_create(STATE_NAME, os.MFD_ALLOW_SEALING)
        try:
            data = memoryview(REST_MAGIC + code_stamp() + b"\n"
                              + pickle.dumps((self, waiter), protocol=pickle.HIGHEST_PROTOCOL))
            while data:
                data = data[os.write(state, data):]
            fcntl.fcntl(state, F_ADD_SEALS, SEALS)
            os.lseek(state, 0, os.SEEK_SET)
            watches = waiter.watches
            for fd in (state, watches.inotify.fd, waiter.pidfd, self.lock_fd):
                if fd >= 0:
                    os.set_inheritable(fd, True)  # each stays open across exec(); the rest are closed by it
            spec = {"build": self.req.build_name, "journal": bool(os.environ.get("JOURNAL_STREAM")),
                    "inotify": watches.inotify.fd, "pidfd": waiter.pidfd, "deadline": deadline,
                    "state": f"{state},{self.lock_fd}",
                    "names": {str(wd): None if names is None else sorted(names)
                              for wd, names in watches.names.items()},
                    "look": [[p, fingerprint(p)] for p in look_paths(watches)], "safety": SAFETY_SECONDS,
                    "resume": resume, "script": os.path.abspath(sys.argv[0])}
        except BaseException:
            os.close(state)
            raise
        spec_fd = os.memfd_create("atvm-watcher-rest", 0)
        try:
            os.write(spec_fd, json.dumps(spec).encode())  # small: one write
            os.lseek(spec_fd, 0, os.SEEK_SET)
            os.set_inheritable(spec_fd, True)
        except BaseException:
            os.close(spec_fd)
            os.close(state)
            raise
        rest_py = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "rest.py")
        try:
            # Run from a descriptor of the file, not its path: an upgrade that moves the package folder
            # aside meanwhile cannot leave the interpreter without its script (it would exit 2, which
            # systemd does not restart).
            script_fd = os.open(rest_py, os.O_RDONLY)
            os.set_inheritable(script_fd, True)  # rest.py closes it
        except OSError:
            os.close(spec_fd)
            os.close(state)
            raise
        # What ps and systemctl status show: the build, and the marker every process scan skips (procs.py).
        return ([sys.executable, sys.executable, "-I", "-S", f"/proc/self/fd/{script_fd}", "atvm-run-watcher",
                 "resting", f"--build-name={self.req.build_name}", f"--spec-fd={spec_fd}"],
                (state, spec_fd, script_fd))

    def resumed(self, waiter: Waiter, why: str, when: float) -> int:
        """Back from a rest (rest.py woke for ``why`` at ``when``, monotonic): look at once, then as before."""
        self.stop = StopRequest().install()
        waiter.stop = self.stop
        self.deliverer = self._deliverer()
        reader = self.reader
        if waiter.watches is not None:
            # The light waiter read the events, those that said a watch was gone too: every watch is made
            # again (for a path whose watch lives on, inotify hands back the same one).
            waiter.watches.forget()
        for fd in (waiter.watches.inotify.fd if waiter.watches else -1, waiter.pidfd, self.lock_fd):
            if fd >= 0:
                os.set_inheritable(fd, False)
        if waiter.pid is not None and waiter.pidfd >= 0:
            waiter.seen_alive = (waiter.pid, when)  # alive until then: a pidfd turns readable at the exit
            if why == "launcher":
                waiter._close_pidfd()
                waiter.pid = None
        if why in ("event", "launcher", "safety"):
            waiter.event_at = when
        # The light waiter read the events (which reports they named, too) or saw a change that raised none:
        # this look stats every report, as after lost events.
        reader.look_everywhere()
        self.log.debug("back from a rest (%s)", why)
        try:
            return self._loop(reader, waiter)
        finally:
            if self.lock_fd >= 0:
                os.close(self.lock_fd)

    def __getstate__(self) -> Dict[str, Any]:
        state = dict(self.__dict__)
        state["stop"] = state["deliverer"] = None  # signal handlers, a bound method: made anew on resume
        return state

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


RECORD_ATTEMPTS = 5  # looks in a row whose terminal record the state directory refused before exit 1
HEADROOM = 4  # descriptors a look may hold at once (a folder being listed, a file in it, ...), and spare


def descriptors_short() -> Optional[str]:
    """Why a look could not open what it reads now (the process's or the system's file table full, no
    memory), or None. A look reads a missing file as absent: without this check, EMFILE would make a
    finished run's .exit file, log and launcher all "gone" (TERMINATED, nothing posted). Checked before and
    after each look: a look opens one file at a time, so with HEADROOM descriptors free at both ends it
    never met the limit."""
    fds: List[int] = []
    try:
        for _ in range(HEADROOM):
            fds.append(os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC))
    except OSError as exc:
        if exc.errno == errno.ENOENT:  # no /dev/null (a bare chroot): nothing to learn here
            return None
        return f"{exc.strerror} ({errno.errorcode.get(exc.errno or 0, exc.errno)}: the process's or the system's " \
               "open-file limit, or memory)"
    finally:
        for fd in fds:
            os.close(fd)
    return None


def decisive_deadline(snap: Snapshot, decision: Decision, limits: Limits, spans: Tuple[float, ...]) -> Optional[float]:
    """The first instant ahead at which the decision would change though no evidence does, or None: none.

    wake.deadlines lists every instant at which a time rule might fire; decide() is a pure function of the
    snapshot with its ``taken_at`` as "now", so each is probed by deciding the same evidence as of then. A
    resting watcher comes back only for the one that matters (each return costs an exec()). At most
    REST_PROBES instants are probed per rest: when more remain (a run with many sub-runs), the first
    instant not probed is returned, and the watcher, back then, probes the next ones."""
    def outcome(d: Decision) -> Tuple[Any, ...]:
        return tuple((v.group, v.state, v.rule) for v in (d.run, *d.groups))

    now = outcome(decision)
    ahead = deadlines(snap, spans)
    for t in ahead[:REST_PROBES]:
        at = t + DEADLINE_MARGIN
        wall = None if snap.wall_at is None else snap.wall_at + (at - snap.taken_at)
        if outcome(decide(dataclasses.replace(snap, taken_at=at, wall_at=wall), limits)) != now:
            return at
    return ahead[REST_PROBES] + DEADLINE_MARGIN if len(ahead) > REST_PROBES else None


def look_paths(watches: Watches) -> List[str]:
    """What the light waiter stats for a change that raised no event: the run's own files and folders,
    never a shared folder itself (another run's file coming there is not this run's change)."""
    paths: Dict[str, None] = {}
    targets = watches.targets or Targets()
    for path in (*targets.files, *targets.trees, *targets.folders):
        paths[path] = None
    for path, (wd, _ident, _mask) in watches.watched.items():
        names = watches.names.get(wd)
        for p in [path] if names is None else [os.path.join(path, n) for n in sorted(names)]:
            paths[p] = None
    return list(paths)


def resume_command() -> List[str]:
    """How this watcher was started (interpreter, its flags, the script, the arguments) less an earlier
    ``--from-rest``: [executable, argv0, ...] for os.execv."""
    argv = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])
    if not argv or not sys.argv or not sys.argv[0] or sys.argv[0] == "-c":
        raise OSError("the watcher was not started from its script: it cannot be started again")
    return [sys.executable] + [a for a in argv if not a.startswith("--from-rest=")]


def code_stamp() -> bytes:
    """Which code wrote a rest's state: the package's files (name, size, mtime). A watcher that comes back to
    other code (a reinstall while it rested) does not unpickle the old code's objects: it starts afresh."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parts = []
    for folder in (root, os.path.join(root, "commands")):
        for name in sorted(os.listdir(folder)):
            if name.endswith(".py"):
                st = os.stat(os.path.join(folder, name))
                parts.append(f"{name}:{st.st_size}:{st.st_mtime_ns}")
    return ";".join(parts).encode()


STATE_NAME = "atvm-watcher-state"  # the memfd a resting watcher hands its state in (what /proc/self/fd shows)
SEALS = 0x1 | 0x2 | 0x4 | 0x8  # F_SEAL_SEAL, SHRINK, GROW, WRITE: the state is never changed once handed over
F_ADD_SEALS, F_GET_SEALS = 1033, 1034  # <fcntl.h> (Python's fcntl module names them only from 3.8 on Linux)


def _own_rest_state(fd: int) -> bool:
    """Is ``fd`` a sealed memfd of a resting watcher, held by this very process? Never a file, pipe or FIFO
    someone passed on the command line: only what a resting watcher handed itself is unpickled."""
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
        return target == f"/memfd:{STATE_NAME} (deleted)" and fcntl.fcntl(fd, F_GET_SEALS) == SEALS
    except (OSError, ValueError):
        return False


def close_rest_leftovers() -> None:
    """A watcher starting afresh after a rest it could not come back from: close what the rest kept open
    (its inotify instance, the launcher's pidfd, the state, its lock on the build), which the fresh start
    opens anew. Only those: they are recognised by what they are, never by a number given on the command line."""
    try:
        fds = [int(n) for n in os.listdir("/proc/self/fd") if int(n) > 2]
    except OSError:
        return
    for fd in fds:
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target in ("anon_inode:inotify", "anon_inode:[pidfd]") or target.startswith("/memfd:atvm-watcher") \
                or target.endswith("/watch.lock"):
            with contextlib.suppress(OSError):
                os.close(fd)


def resume(token: str) -> Optional[int]:
    """The watcher, back from a rest: ``token`` is "STATE_FD,LOCK_FD,WHY,WHEN" as the light waiter passed it.

    None when its state cannot be taken back (other code now, a damaged state): what the rest kept open is
    closed and the caller starts the watcher afresh, which takes up from the state directory as after a
    restart."""
    try:
        state_text, _lock_text, why, when_text = token.split(",")
        state_fd, when = int(state_text), float(when_text)
    except ValueError as exc:
        raise ConfigError(f"--from-rest is given only by a resting watcher to itself ({exc})") from None
    if state_fd < 3 or not _own_rest_state(state_fd):
        raise ConfigError("--from-rest is given only by a resting watcher to itself (not its state)")
    with os.fdopen(state_fd, "rb") as fh:
        data = fh.read()
    problem = None
    if not data.startswith(REST_MAGIC):
        problem = "its state is not one this watcher writes"
    else:
        stamp, _, pickled = data[len(REST_MAGIC):].partition(b"\n")
        if stamp != code_stamp():
            problem = "the watcher's code changed while it rested (a reinstall?)"
    if problem is None:
        try:
            watcher, waiter = pickle.loads(pickled)
        except Exception as exc:  # noqa: BLE001 - whatever it is, starting afresh loses nothing
            problem = f"its state could not be read back ({type(exc).__name__})"
    if problem is not None:
        close_rest_leftovers()
        print(f"warning: back from a rest: {problem}; starting afresh from the state directory", file=sys.stderr)
        return None
    log.setup(watcher.s.webhook)
    return watcher.resumed(waiter, why, when)


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
        watcher.may_rest = os.path.basename(sys.argv[0]) == "atvm_run_watcher.py"
        code = watcher.run()
        if preview_file:
            watcher.write_preview(Path(preview_file))
        return code
    except StateError as exc:
        log.get(request.build_name).error("state directory problem: %s", exc)
        return ExitCode.INTERNAL
