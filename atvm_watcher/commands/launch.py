"""``launch``: run an ATVM command so that the watcher reads exact evidence (``atvm-run.sh`` calls it).

Before the command starts, this scope's earlier outcome files are removed (no earlier outcome can be
taken for this run's), the pid file is written (its mtime stamps the run's start; the watcher trusts
it only for a process that started before it) and a fresh log is created. While the command runs, its
stdout and stderr are appended to the log as they come, through a fixed-size buffer: no ``tee`` stands
between Cypress and its exit status, and memory does not grow with the output. Then the real exit status
is written to ``.exit``, or ``TERMINATED`` to ``.status`` when the command was killed by a signal or
when this process received a stop signal and passed it on (whatever the command's exit code then).
Every file is where the layout settings put it.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

from ..buildname import BadName, check_group_name
from ..settings import PACKAGE_ROOT, Settings
from ..statedir import StateError, write_bytes_atomic
from ..vocab import ExitCode

START_HELPER = "start-atvm-run-watcher.sh"
CHUNK = 64 * 1024
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# After the command exits, a process it left behind may still hold the output pipe: keep copying while
# output flows, but stop after DRAIN_QUIET seconds of silence, and after DRAIN_MAX seconds in any case.
DRAIN_QUIET = 2.0
DRAIN_MAX = 60.0
WATCHER_ALREADY_RUNNING = 6


@dataclass
class Launch:
    settings: Settings
    build: str
    group: Optional[str]
    command: List[str]
    echo: bool = True
    start_watcher: Optional[List[str]] = None  # the start helper's arguments, when asked to start the watcher


def check(args: Launch) -> None:
    """Refuse bad input before anything is written (the build name is checked by the CLI)."""
    if args.group is not None and not check_group_name(args.group):
        raise BadName(f"group name {args.group[:80]!r} refused: it may hold only letters A-Z a-z, digits, '.', '_' "
                      "and '-', must not start with '-' or '.', and is at most 128 characters")
    if not args.command:
        raise BadName("no command to run: give it after '--', e.g. launch --build-name B -- npx cypress run")


class Forwarder:
    """Passes SIGTERM/SIGINT/SIGHUP on to the command's process group, and remembers the first."""

    def __init__(self) -> None:
        self.pgid: Optional[int] = None
        self.received: Optional[int] = None
        self.pending: List[int] = []
        self.old = {}

    def install(self) -> None:
        for sig in FORWARDED:
            self.old[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self.old.items():
            signal.signal(sig, handler)

    def started(self, pgid: int) -> None:
        self.pgid = pgid
        for sig in self.pending:  # arrived between fork and here
            self._send(sig)

    def _handle(self, signum: int, frame) -> None:
        self.received = self.received or signum
        if self.pgid is None:
            self.pending.append(signum)
        else:
            self._send(signum)

    def _send(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, signum)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class Copier:
    """Copies the command's output to the log (and to our stdout while it can be written)."""

    def __init__(self, log_fd: int, echo: bool):
        self.log_fd = log_fd
        self.echo_fd: Optional[int] = sys.stdout.fileno() if echo else None
        self.log_error: Optional[str] = None

    def copy(self, data: bytes) -> None:
        if self.log_error is None:
            try:
                _write_all(self.log_fd, data)
            except OSError as exc:  # a full disk: the run goes on, the outcome is still recorded
                self.log_error = exc.strerror or str(exc)
                print(f"launch: cannot write the log any more ({self.log_error}); the run goes on", file=sys.stderr)
        if self.echo_fd is not None:
            try:
                _write_all(self.echo_fd, data)
            except OSError:
                self.echo_fd = None  # our own stdout went away (a closed terminal): the log is what counts


def pump(out_fd: int, child: subprocess.Popen, copier: Copier) -> None:
    """Until the command's output ends (see DRAIN_QUIET/DRAIN_MAX once the command has exited)."""
    exited_at: Optional[float] = None
    last_data = time.monotonic()
    while True:
        ready, _, _ = select.select([out_fd], [], [], 0.5)
        now = time.monotonic()
        if ready:
            data = os.read(out_fd, CHUNK)
            if not data:
                return
            copier.copy(data)
            last_data = now
            continue
        if exited_at is None and child.poll() is not None:
            exited_at = now
        if exited_at is not None and (now - last_data >= DRAIN_QUIET or now - exited_at >= DRAIN_MAX):
            return


def fresh_log(path: Path) -> int:
    """A new, empty log file for this run (an earlier run's log is replaced: a new inode the watcher notices)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    return os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC,
                   0o644)


def start_watcher(args: Launch) -> int:
    helper = PACKAGE_ROOT / START_HELPER
    done = subprocess.run([str(helper), f"--build-name={args.build}", *(args.start_watcher or [])],
                          stdin=subprocess.DEVNULL)
    return 0 if done.returncode == WATCHER_ALREADY_RUNNING else done.returncode


def prepare(args: Launch) -> int:
    """Outcome files gone, pid file written, fresh log created: the run's evidence starts here."""
    layout = args.settings.layout(args.build)
    scope = layout.run() if args.group is None else layout.group(args.group)
    for old in (scope.exit, scope.status):
        old.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            old.unlink()
    if args.group is None:  # one pid file per build: a group's launch runs inside the parent's
        pid_file = layout.pid_file()
        pid_file.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(pid_file, f"{os.getpid()}\n".encode())
    return fresh_log(scope.log)


def record(args: Launch, returncode: int, received: Optional[int]) -> int:
    """Write the outcome file; return our own exit status (the command's; 128+n for a signal).

    A stop signal this process received and passed on makes the run TERMINATED whatever the command's
    exit code: a launcher that traps the signal (to clean up) may well exit 0 or 1 after it, and a run
    the operator stopped must never be posted as finished.
    """
    layout = args.settings.layout(args.build)
    scope = layout.run() if args.group is None else layout.group(args.group)
    if returncode < 0 or received is not None:
        write_bytes_atomic(scope.status, b"TERMINATED\n")
        signum = -returncode if returncode < 0 else received
        how = f"killed by signal {signum}" if returncode < 0 else f"stopped by signal {signum} (it exited {returncode})"
        print(f"launch: the command was {how}: {scope.status} says TERMINATED", file=sys.stderr)
        return 128 + signum
    write_bytes_atomic(scope.exit, f"{returncode}\n".encode())
    return returncode


def run(args: Launch) -> int:
    check(args)
    # Before the watcher starts: it must never find an earlier run's outcome or log as this run's.
    log_fd = prepare(args)
    if args.start_watcher is not None:
        code = start_watcher(args)
        if code:
            os.close(log_fd)
            print(f"launch: the watcher could not be started (exit {code}); the command was not run", file=sys.stderr)
            return code
    return execute(args, log_fd)


def execute(args: Launch, log_fd: int) -> int:
    forwarder = Forwarder()
    forwarder.install()
    read_fd, write_fd = os.pipe()
    try:
        try:
            # Its own process group: a signal we pass on reaches npm, Cypress and the browser alike.
            child = subprocess.Popen(args.command, stdout=write_fd, stderr=write_fd, start_new_session=True,
                                     close_fds=True)
        except OSError as exc:
            os.close(write_fd)
            message = f"launch: cannot run {args.command[0]!r}: {exc.strerror or exc}\n"
            Copier(log_fd, False).copy(message.encode())
            print(message, end="", file=sys.stderr)
            return record(args, 127, None)
        os.close(write_fd)
        forwarder.started(child.pid)
        pump(read_fd, child, Copier(log_fd, args.echo))
        returncode = child.wait()
    finally:
        os.close(read_fd)
        os.close(log_fd)
        forwarder.restore()
    return record(args, returncode, forwarder.received)


def main(settings: Settings, build: str, group: Optional[str], command: Sequence[str], echo: bool,
         start_args: Optional[List[str]]) -> int:
    command = list(command)
    if command[:1] == ["--"]:  # the separator, when the parser kept it
        command = command[1:]
    try:
        return run(Launch(settings, build, group, command, echo, start_args))
    except StateError as exc:
        print(f"launch: {exc}", file=sys.stderr)
        return ExitCode.INTERNAL
