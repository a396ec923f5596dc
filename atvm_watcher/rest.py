"""The light waiter: what a watcher becomes while its run stays quiet (``ATVM_WAKE=auto``).

A watcher that has seen no change for ``ATVM_REST_AFTER_SECONDS`` writes what it knows (its whole
state, pickled) into an unnamed file and exec()s this script in the same process (same pid, same
systemd unit, same lock on the build's state directory). This script imports next to nothing, so
the resting watcher costs what a bare interpreter costs (docs/PERFORMANCE.md, section 2). It waits,
on the descriptors the watcher left open, for:

- an event of the watcher's inotify instance that concerns this run (names in shared folders are
  filtered as the watcher filters them: another run's log line does not wake it);
- the launcher's exit (its pidfd turns readable);
- the next instant at which a time rule of the decision would change it (computed by the watcher);
- a change that raised no event: every SAFETY_SECONDS it stats the run's files and folders and
  compares them with what the watcher last saw;

and then exec()s the watcher again, which takes its state back and looks at once. A stop signal
(SIGTERM, SIGINT, SIGHUP) ends it as it ends a waiting watcher: exit 0, nothing posted for what is
unfinished, one journal line saying so.

It is run as ``python3 -I -S /proc/self/fd/M atvm-run-watcher resting --build-name=B --spec-fd=N`` (M:
this file, opened by the watcher, so that a package folder moved aside meanwhile does not leave the
interpreter without it; N: a memfd holding the JSON that commands/watch.py wrote) and must not import
the package: whatever it imports, every resting watcher pays for.
"""

import json
import os
import select
import signal
import struct
import sys
import time

SAFETY_SECONDS = 60.0  # as wake.SAFETY_SECONDS: the bound on how late a change that raised no event is seen
EXEC_RETRIES = 30  # a failed exec() back (EAGAIN, ENOMEM, the package moved aside) is tried again, a second apart
EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len
IN_Q_OVERFLOW, IN_IGNORED, SELF = 0x4000, 0x8000, 0x400 | 0x800
INTERNAL = 1  # vocab.ExitCode.INTERNAL: systemd restarts the watcher, which recovers from its state directory


def say(spec, level, text):
    """One line as log.py writes it (journald's priority prefix under systemd)."""
    prio = {"INFO": 6, "WARNING": 4, "ERROR": 3}[level]
    line = f"{level} build={spec['build']} {text}"
    if spec.get("journal"):
        line = f"<{prio}>{line}"
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def fingerprint(path):
    """What a stat says of a path (None: absent); a change of it is a change of the evidence."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def changed_paths(look):
    """The paths of ``look`` ([path, fingerprint]) whose fingerprint is not the one the watcher saw."""
    return [path for path, seen in look if fingerprint(path) != seen]


def relevant(data, names):
    """Do these inotify events concern the run? ``names``: wd (as text) -> names that count, or None (all)."""
    at = 0
    while at + EVENT.size <= len(data):
        wd, mask, _cookie, size = EVENT.unpack_from(data, at)
        name = data[at + EVENT.size : at + EVENT.size + size].split(b"\0", 1)[0]
        at += EVENT.size + size
        if mask & IN_Q_OVERFLOW:
            return True
        key = str(wd)
        if key not in names:
            continue
        if mask & (IN_IGNORED | SELF):
            return True
        wanted = names[key]
        if not name or wanted is None or os.fsdecode(name) in wanted:
            return True
    return False


def wait(spec, clock=time.monotonic):
    """Until something may have changed: (why, when), why one of event, launcher, deadline, safety."""
    fds = [spec["inotify"]] + ([spec["pidfd"]] if spec["pidfd"] >= 0 else [])
    deadline = spec["deadline"]  # monotonic, or None: no time rule can change the decision
    safety = spec.get("safety", SAFETY_SECONDS)
    next_look = clock() + safety
    while True:
        now = clock()
        if deadline is not None and now >= deadline:
            return "deadline", now
        if now >= next_look:
            if changed_paths(spec["look"]):
                return "safety", now
            next_look = now + safety
        until = next_look if deadline is None else min(next_look, deadline)
        ready, _, _ = select.select(fds, [], [], max(0.0, until - now))
        if spec["pidfd"] in ready:
            return "launcher", clock()
        if spec["inotify"] in ready:
            try:
                data = os.read(spec["inotify"], 65536)
            except BlockingIOError:
                continue
            if relevant(data, spec["names"]):
                return "event", clock()


def read_spec(argv):
    """The JSON behind --spec-fd=N (the descriptor is closed: it is not handed on)."""
    fd = int(next(a for a in argv if a.startswith("--spec-fd="))[len("--spec-fd="):])
    with os.fdopen(fd, "rb") as fh:
        return json.loads(fh.read())


def main(argv):
    if argv[0].startswith("/proc/self/fd/"):  # run from a descriptor the watcher opened: read by now
        try:
            os.close(int(argv[0][len("/proc/self/fd/"):]))
        except (OSError, ValueError):
            pass
    spec = read_spec(argv)

    def stop(_signum, _frame):
        say(spec, "INFO", "stop requested before the run finished; nothing posted for what is unfinished")
        os._exit(0)

    stops = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    for sig in stops:
        signal.signal(sig, stop)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)  # blocked across the exec(): one that came is handled now
    why, when = wait(spec)
    argv_back = spec["resume"] + [f"--from-rest={spec['state']},{why},{when!r}"]
    problem = None
    for _ in range(EXEC_RETRIES):
        signal.pthread_sigmask(signal.SIG_BLOCK, stops)  # until the watcher's own handlers are in place
        try:
            # An interpreter that cannot open the script exits 2, which systemd does not restart: a package
            # folder moved aside for a moment (an upgrade) is waited for here instead.
            if not os.path.isfile(spec["script"]):
                raise OSError(f"{spec['script']} is missing")
            os.execv(argv_back[0], argv_back[1:])
        except OSError as exc:
            problem = exc
            signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)
            time.sleep(1.0)
    say(spec, "ERROR", f"the watcher could not be started again ({problem}); exit {INTERNAL}: systemd restarts it, "
        "and it takes up from its state directory")
    return INTERNAL


if __name__ == "__main__":
    sys.exit(main(sys.argv))
