"""A quiet watcher rests as the light waiter (rest.py) in its own process and comes back for what matters.

Its decisions must be those of a watcher that stays resident (ATVM_WAKE=events): the same states, the
same posts, the same exit codes; the process (its pid, its lock on the build) is the same throughout.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import pytest

from atvm_watcher import rest

REST = {"ATVM_REST_AFTER_SECONDS": "1"}
RESTING = "resting (the same process, a light waiter)"



SCENARIOS = {
    # name: (launcher arguments, watcher arguments, settings); each run is quiet longer than the rest threshold
    "completed": (("--outcome", "pass", "--step-seconds", "1.6"), (), {}),
    "categorized": (("--group", "linux:pass", "--group", "windows:fail", "--step-seconds", "1.6"),
                    ("--categorize",), {}),
    "hung": (("--hang", "--step-seconds", "0.2"), (), {"ATVM_HUNG_AFTER_SECONDS": "5"}),
    "never-started": ((), (), {"ATVM_START_TIMEOUT_SECONDS": "5"}),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_a_resting_watcher_decides_as_a_resident_one(world, name):
    launcher_args, watcher_args, env = SCENARIOS[name]
    rested = world.outcome(f"quiet-{name}", launcher_args, watcher_args, {**env, **REST})
    resident = world.outcome(f"quiet-{name}-resident", launcher_args, watcher_args,
                       {**env, **REST, "ATVM_WAKE": "events"})
    assert RESTING in rested[3], rested[3]
    assert RESTING not in resident[3]
    assert rested[:3] == resident[:3], (rested[3], resident[3])
    assert rested[0] in (0, 1) and rested[1]


def install_copy(dst: Path) -> Path:
    """The entry script and the package copied to ``dst`` (an install a test may change or move): ``dst``."""
    repo = Path(rest.__file__).resolve().parents[1]
    shutil.copytree(repo / "atvm_watcher", dst / "atvm_watcher", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(repo / "atvm_run_watcher.py", dst / "atvm_run_watcher.py")
    return dst


def cmdline(pid: int) -> List[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def wait_until(check, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def resting(pid: int) -> bool:
    argv = cmdline(pid)
    return "atvm-run-watcher" in argv and "resting" in argv  # the light waiter's marker (commands/watch.py)


def test_a_resting_watcher_is_the_same_process_holds_its_lock_and_stops_on_sigterm(world):
    build = "quiet-stop"
    launcher = world.launch(build, "--hang", "--step-seconds", "0.1")
    proc = world.start_watcher("--build-name", build, env=REST)
    wait_until(lambda: resting(proc.pid))
    status = Path(f"/proc/{proc.pid}/status").read_text()
    rss_kib = int(status.split("VmRSS:")[1].split()[0])
    assert rss_kib < 16 * 1024, status  # the light waiter, not the whole watcher (about 9 MiB against 20+)
    second = world.start_watcher("--build-name", build)  # the lock is still held: a second watcher refuses
    _, err2 = second.communicate(timeout=30)
    assert "already watching this build" in err2, err2
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "stop requested before the run finished; nothing posted" in err.splitlines()[-1], err
    assert not [p for p in world.receiver.posts if build in p["text"]]
    third = world.start_watcher("--build-name", build, env={"ATVM_HUNG_AFTER_SECONDS": "1", "ATVM_WAKE": "events"})
    _, err3 = third.communicate(timeout=30)  # the lock went with the process: the next watcher takes over
    launcher.kill()
    assert "already watching" not in err3 and "finished: HUNG" in err3, err3


def test_a_resting_watcher_is_not_woken_by_another_runs_file_in_a_shared_folder(world):
    build = "quiet-shared"
    other = world.layout("quiet-other").run().log
    launcher = world.launch(build, "--hang", "--step-seconds", "0.1")
    proc = world.start_watcher("--build-name", build, env=REST)
    wait_until(lambda: resting(proc.pid))
    assert other.parent == world.layout(build).run().log.parent
    for _ in range(5):
        with other.open("a") as fh:
            fh.write("another run's line\n")
        time.sleep(0.1)
    assert resting(proc.pid)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    launcher.kill()
    assert err.count("quiet for") == 1 and "back from a rest" not in err, err


def test_the_launchers_exit_wakes_a_resting_watcher_at_once(world):
    build = "quiet-killed"
    launcher = world.launch(build, "--hang", "--pid-file", "--step-seconds", "0.1")
    proc = world.start_watcher("--build-name", build, env={**REST, "ATVM_GONE_GRACE_SECONDS": "4"})
    wait_until(lambda: resting(proc.pid))
    launcher.kill()  # SIGKILL: no outcome file; only its pidfd tells
    launcher.wait()
    wait_until(lambda: not resting(proc.pid), timeout=5)  # woken by the exit, not by a timer
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "finished: TERMINATED" in err, err
    assert not [p for p in world.receiver.posts if build in p["text"]]


def test_a_resting_watcher_keeps_the_settings_it_started_with(world):
    """An env file broken while a watcher rests (an operator's edit) costs no post: it is not read again."""
    build = "quiet-envfile"
    env_file = Path(world.env["ATVM_WATCHER_ENV_FILE"])
    launcher = world.launch(build, "--outcome", "pass", "--step-seconds", "2.5")
    proc = world.start_watcher("--build-name", build, env=REST)
    wait_until(lambda: resting(proc.pid))
    env_file.write_text("ATVM_POLL_SECONDS=fast\nMATTERMOST_ATVM_WEBHOOK=\n")
    _, err = proc.communicate(timeout=60)
    launcher.wait(timeout=30)
    assert proc.returncode == 0 and "finished: COMPLETED" in err, err
    assert len([p for p in world.receiver.posts if build in p["text"]]) == 1


def test_from_rest_is_refused_from_an_operator(world):
    r = world.cli("watch", "--build-name", "quiet-hand", "--from-rest=0,event,1.0")
    assert r.returncode == 3, r.stderr
    assert "only by a resting watcher to itself" in r.stderr
    r = world.cli("watch", "--build-name", "quiet-hand", "--from-rest=garbage")
    assert r.returncode == 3 and "only by a resting watcher" in r.stderr, r.stderr


def test_the_light_waiter_imports_next_to_nothing():
    tree = ast.parse(Path(rest.__file__).read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported <= {"json", "os", "select", "signal", "struct", "sys", "time"}, imported
    out = subprocess.run([sys.executable, "-I", "-S", "-c", f"import runpy,sys; sys.argv=['x']; "
                          f"import importlib.util as u; s=u.spec_from_file_location('r', {rest.__file__!r}); "
                          "m=u.module_from_spec(s); s.loader.exec_module(m); print(len(sys.modules))"],
                         capture_output=True, text=True, check=True)
    assert int(out.stdout) < 80, out.stdout


def event(wd: int, mask: int, name: str = "") -> bytes:
    raw = name.encode() + b"\0" * (16 - len(name) % 16) if name else b""
    return struct.pack("iIII", wd, mask, 0, len(raw)) + raw


def test_the_light_waiter_counts_the_events_the_watcher_would():
    names = {"1": ["b.log", "b.exit"], "2": None}
    assert not rest.relevant(event(1, 0x2, "other.log"), names)  # another run's file in the shared folder
    assert rest.relevant(event(1, 0x100, "b.exit"), names)
    assert rest.relevant(event(2, 0x2, "anything"), names)  # a report folder: every name
    assert not rest.relevant(event(7, 0x2, "b.log"), names)  # a watch dropped since
    assert rest.relevant(event(-1, 0x4000), names)  # the queue overflowed: events were lost
    assert rest.relevant(event(1, 0x8000), names)  # a watched folder went away
    assert rest.relevant(event(1, 0x2, "other.log") + event(2, 0x2, "r.json"), names)


def test_the_light_waiter_sees_a_change_that_raised_no_event(tmp_path):
    f = tmp_path / "b.log"
    f.write_text("x")
    look = [[str(f), rest.fingerprint(str(f))], [str(tmp_path / "absent"), None]]
    assert rest.changed_paths(look) == []
    os.utime(f, ns=(1, 1))
    assert rest.changed_paths(look) == [str(f)]
    (tmp_path / "absent").write_text("")
    assert len(rest.changed_paths(look)) == 2


def test_the_light_waiter_agrees_with_the_package_on_what_it_restates():
    from atvm_watcher import procs, wake
    from atvm_watcher.vocab import RESTARTED, ExitCode

    assert rest.INTERNAL == ExitCode.INTERNAL and ExitCode.INTERNAL in RESTARTED
    assert rest.SAFETY_SECONDS == wake.SAFETY_SECONDS
    assert rest.EVENT.format == wake.EVENT.format
    assert (rest.IN_Q_OVERFLOW, rest.IN_IGNORED, rest.SELF) == (wake.IN_Q_OVERFLOW, wake.IN_IGNORED, wake.SELF)
    argv = b"\0".join([b"/usr/bin/python3", b"-I", b"-S", b"/proc/self/fd/7",
                       b"atvm-run-watcher", b"resting", b"--build-name=b1", b"--spec-fd=5"])
    assert not procs.is_candidate(argv, b"b1")  # a resting watcher is never taken for its run's launcher


def test_a_watcher_that_comes_back_to_other_code_starts_afresh_and_posts_once(world, tmp_path):
    """A reinstall while a watcher rests: it does not unpickle the old code's objects into the new code."""
    copy = install_copy(tmp_path / "install")
    build = "quiet-reinstall"
    launcher = world.launch(build, "--outcome", "pass", "--hang", "--pid-file", "--step-seconds", "0.1")
    proc = subprocess.Popen([sys.executable, str(copy / "atvm_run_watcher.py"), "watch", "--build-name", build],
                            env={**world.env, **REST}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    world.procs.append(proc)
    wait_until(lambda: resting(proc.pid))
    later = time.time() + 5
    os.utime(copy / "atvm_watcher" / "vocab.py", (later, later))  # "reinstalled"
    launcher.kill()  # its exit wakes the watcher, which comes back to the changed code
    _, err = proc.communicate(timeout=60)
    assert "starting afresh from the state directory" in err, err
    assert proc.returncode == 0 and "finished: TERMINATED" in err, err


def test_a_fresh_start_after_a_rest_keeps_no_descriptor_of_the_rest(world, tmp_path):
    copy = install_copy(tmp_path / "install")
    build = "quiet-reinstall-fds"
    launcher = world.launch(build, "--hang", "--pid-file", "--step-seconds", "0.1")
    proc = subprocess.Popen([sys.executable, str(copy / "atvm_run_watcher.py"), "watch", "--build-name", build],
                            env={**world.env, "ATVM_REST_AFTER_SECONDS": "3"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    world.procs.append(proc)
    wait_until(lambda: resting(proc.pid))
    later = time.time() + 5
    os.utime(copy / "atvm_watcher" / "vocab.py", (later, later))
    with world.layout(build).run().log.open("a") as fh:
        fh.write("x\n")
    wait_until(lambda: not resting(proc.pid))
    time.sleep(1.0)
    fds = [os.readlink(f"/proc/{proc.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{proc.pid}/fd")]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    launcher.kill()
    assert "starting afresh" in err, err
    assert fds.count("anon_inode:inotify") == 1 and fds.count("anon_inode:[pidfd]") <= 1, fds
    assert sum(f.endswith("/watch.lock") for f in fds) == 1 and not [f for f in fds if "memfd" in f], fds


# --- found by trying it from outside ---------------------------------------------------------------------

MANY_GROUPS = [f"--group=g{i:02d}:pass" for i in range(24)] + ["--group=last:pass"]


@pytest.mark.parametrize("wake", ["auto", "events"])
def test_hung_is_decided_on_time_with_more_time_rules_than_one_rest_probes(world, wake):
    """25 sub-runs give more instants at which a time rule might fire than a rest probes at once: the
    watcher comes back at the first it did not probe instead of resting for ever."""
    build = f"quiet-hung-many-{wake}"
    launcher = world.launch(build, *MANY_GROUPS, "--hang", "--step-seconds", "0.03")
    t0 = time.monotonic()
    proc = world.start_watcher("--build-name", build, "--categorize",
                               env={**REST, "ATVM_HUNG_AFTER_SECONDS": "8", "ATVM_START_TIMEOUT_SECONDS": "7",
                                    "ATVM_WAKE": wake})
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        launcher.kill()
    assert "finished: HUNG" in err, err[-3000:]
    assert time.monotonic() - t0 < 30, err[-3000:]


def test_a_log_made_anew_while_resting_still_wakes_the_watcher_when_it_grows(world):
    """Unlinked and written again at once (ext4 hands the same inode number back): the light waiter read the
    event that said the old watch was gone, so the watcher, back, makes every watch again."""
    build = "quiet-inode"
    launcher = world.launch(build, "--hang", "--pid-file", "--step-seconds", "0.1")
    log = world.layout(build).run().log
    wait_until(log.exists)
    proc = world.start_watcher("--build-name", build, env={**REST, "ATVM_HUNG_AFTER_SECONDS": "300"})
    wait_until(lambda: resting(proc.pid))
    text = log.read_text()
    log.unlink()
    log.write_text(text)
    time.sleep(0.5)
    wait_until(lambda: resting(proc.pid))  # back, looked, resting again
    with log.open("a") as fh:
        fh.write("  Running:  spec2.cy.js                                                         (2 of 3)\n")
    wait_until(lambda: not resting(proc.pid), timeout=5)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=10)
    launcher.kill()


@pytest.mark.parametrize("delay", [0.0, 0.01, 0.03])
def test_a_stop_signal_while_either_image_starts_is_a_clean_stop(world, delay):
    """The stop signals are blocked across each exec() and handled once the new image's handler is in place."""
    build = f"quiet-sigwin-{int(delay * 1000)}"
    launcher = world.launch(build, "--hang", "--pid-file", "--step-seconds", "0.1")
    proc = world.start_watcher("--build-name", build, env=REST)
    wait_until(lambda: resting(proc.pid))
    time.sleep(delay)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0 and "stop requested" in err.splitlines()[-1], (proc.returncode, err[-500:])
    build = f"quiet-sigback-{int(delay * 1000)}"  # and just after it came back
    proc = world.start_watcher("--build-name", build, env=REST)
    launcher2 = world.launch(build, "--hang", "--pid-file", "--step-seconds", "0.1")
    wait_until(lambda: resting(proc.pid))
    with world.layout(build).run().log.open("a") as fh:
        fh.write("x\n")
    wait_until(lambda: not resting(proc.pid))
    time.sleep(delay)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    launcher.kill()
    launcher2.kill()
    assert proc.returncode == 0 and "stop requested" in err.splitlines()[-1], (proc.returncode, err[-500:])


def test_a_watcher_back_from_a_rest_keeps_its_descriptors_to_itself(world):
    build = "quiet-fds"
    launcher = world.launch(build, "--hang", "--pid-file", "--step-seconds", "0.1")
    proc = world.start_watcher("--build-name", build, env=REST)
    wait_until(lambda: resting(proc.pid))
    with world.layout(build).run().log.open("a") as fh:
        fh.write("x\n")
    wait_until(lambda: not resting(proc.pid))
    time.sleep(0.3)
    inheritable = []
    for fd in os.listdir(f"/proc/{proc.pid}/fd"):
        if int(fd) <= 2:
            continue
        with contextlib.suppress(OSError):
            flags = Path(f"/proc/{proc.pid}/fdinfo/{fd}").read_text().split("flags:")[1].split()[0]
            if not int(flags, 8) & 0o2000000:  # O_CLOEXEC
                inheritable.append(os.readlink(f"/proc/{proc.pid}/fd/{fd}"))
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=10)
    launcher.kill()
    assert not inheritable, inheritable


def test_from_rest_never_unpickles_what_it_is_handed(world, tmp_path):
    """Only a sealed memfd of this very process, named as a rest's state, is read: not a file, pipe or FIFO
    given on the command line, whatever it holds."""
    import pickle

    from atvm_watcher.commands import watch as watch_mod

    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    crafted = tmp_path / "crafted"
    crafted.write_bytes(watch_mod.REST_MAGIC + watch_mod.code_stamp() + b"\n" + pickle.dumps(Evil()))
    entry = str(Path(rest.__file__).parents[1] / "atvm_run_watcher.py")
    with crafted.open("rb") as fh:  # on stdin
        r = subprocess.run([sys.executable, entry, "watch", "--build-name", "quiet-hand", "--from-rest=0,2,event,1.0"],
                           stdin=fh, env=world.env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 3 and "only by a resting watcher" in r.stderr, r.stderr
    with crafted.open("rb") as fh:  # as an inherited descriptor of a file
        fd = fh.fileno()
        r = subprocess.run([sys.executable, entry, "watch", "--build-name", "quiet-hand",
                            f"--from-rest={fd},{fd},event,1.0"], pass_fds=(fd,), env=world.env,
                           capture_output=True, text=True, timeout=30)
    assert r.returncode == 3 and "only by a resting watcher" in r.stderr, r.stderr
    read_end, write_end = os.pipe()  # a pipe (a FIFO would block a reader): refused unread
    try:
        r = subprocess.run([sys.executable, entry, "watch", "--build-name", "quiet-hand",
                            f"--from-rest={read_end},{read_end},event,1.0"], pass_fds=(read_end,), env=world.env,
                           capture_output=True, text=True, timeout=30)
    finally:
        os.close(read_end)
        os.close(write_end)
    assert r.returncode == 3 and "only by a resting watcher" in r.stderr, r.stderr
    assert not marker.exists()


def test_an_upgrade_swapping_the_package_folder_while_a_watcher_rests_costs_no_post(world, tmp_path):
    """install.sh moves the package folder aside and the new one in place: a watcher coming back in between
    waits for its script (an interpreter that cannot open it exits 2, which systemd never restarts)."""
    pkg = install_copy(tmp_path / "opt" / "atvm-watcher-service")
    build = "quiet-swap"
    launcher = world.launch(build, "--outcome", "pass", "--step-seconds", "3", "--pid-file")
    proc = subprocess.Popen([sys.executable, str(pkg / "atvm_run_watcher.py"), "watch", "--build-name", build],
                            env={**world.env, **REST}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    world.procs.append(proc)
    wait_until(lambda: resting(proc.pid))
    aside = pkg.with_name("old")
    os.rename(pkg, aside)
    try:
        time.sleep(4)  # the launcher writes meanwhile: the watcher wants to come back
        assert proc.poll() is None
    finally:
        os.rename(aside, pkg)
    _, err = proc.communicate(timeout=60)
    launcher.wait(timeout=30)
    assert proc.returncode == 0 and "finished: COMPLETED" in err, (proc.returncode, err)
    assert len([p for p in world.receiver.posts if build in p["text"]]) == 1


@pytest.mark.parametrize("wake", ["events", "auto"])
def test_no_file_descriptor_left_is_no_evidence_of_a_gone_run(world, wake):
    """EMFILE made every file of a finished run "absent": it was TERMINATED, exit 0, nothing posted. Now a
    look that could not open what it reads decides nothing; once files open again, the run is posted."""
    build = f"quiet-emfile-{wake}"
    launcher = world.launch(build, "--outcome", "pass", "--step-seconds", "1.5", "--pid-file")
    proc = world.start_watcher("--build-name", build, env={**REST, "ATVM_WAKE": wake})
    if wake == "auto":
        wait_until(lambda: resting(proc.pid))
    else:
        world.wait_for_state(build)
    # the soft limit only: raised again below
    subprocess.run(["prlimit", "--pid", str(proc.pid), "--nofile=7:"], check=True)
    launcher.wait(timeout=30)
    time.sleep(2)
    state = json.loads((world.build_dir(build) / "state.json").read_text())["state"]
    assert state == "RUNNING", state
    if proc.poll() is None:
        subprocess.run(["prlimit", "--pid", str(proc.pid), "--nofile=1024:"], check=True)
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 1:  # a come-back that could not even import: systemd would start it again
        assert wake == "auto", err
        again = world.start_watcher("--build-name", build)
        _, err = again.communicate(timeout=60)
        assert again.returncode == 0, err
    else:
        assert proc.returncode == 0 and "cannot read the run's evidence" in err, (proc.returncode, err)
    assert "TERMINATED" not in err and "finished: COMPLETED" in err, err
    assert len([p for p in world.receiver.posts if build in p["text"]]) == 1


def test_an_inotify_limit_is_named_for_the_operator():
    from atvm_watcher import wake
    from atvm_watcher.stop import StopRequest

    class Refused:
        def __init__(self):
            raise OSError(24, "inotify_init1: Too many open files")

    real = wake.Inotify
    wake.Inotify = Refused
    try:
        waiter = wake.Waiter(StopRequest(), 1.0)
    finally:
        wake.Inotify = real
    assert not waiter.on_events and "fs.inotify.max_user_instances" in waiter.describe()


def test_a_terminal_state_the_state_directory_refuses_never_ends_the_watcher_with_exit_0(tmp_path, monkeypatch):
    """The record of a run's end cannot be written (a full disk, say): no post, no exit 0 (systemd would not
    start it again and the run would stay RUNNING on disk): tried again each poll, then exit 1."""
    from atvm_watcher import settings as settings_mod
    from atvm_watcher.commands import watch as watch_mod
    from atvm_watcher.decide import Decision, Verdict
    from atvm_watcher.ledger import Ledger
    from atvm_watcher.request import Request
    from atvm_watcher.statedir import StateError
    from atvm_watcher.vocab import ExitCode

    env = {"ATVM_WATCHER_STATE_ROOT": str(tmp_path / "state"), "ATVM_LOG_DIR": str(tmp_path / "log"),
           "ATVM_REPORT_DIR": str(tmp_path / "reports"), "ATVM_WATCHER_ENV_FILE": str(tmp_path / "none.env"),
           "MATTERMOST_ATVM_WEBHOOK": "http://127.0.0.1:9/hooks/never-contacted", "ATVM_POLL_SECONDS": "0.01",
           "ATVM_WAKE": "poll"}
    posted = []
    w = watch_mod.Watcher(settings_mod.load(env), Request("B"))
    w.stop.install = lambda: None  # keep pytest's own signal handling
    w.deliverer.post = lambda *a, **k: posted.append(a)
    monkeypatch.setattr(watch_mod, "decide", lambda snap, limits, cancelled=False: Decision(
        Verdict("COMPLETED", "exit-code", "the run passed")))
    real_write = Ledger._write

    def refuse_terminal(self, run, record):
        if record.get("state") == "COMPLETED":
            raise StateError("No space left on device")
        return real_write(self, run, record)

    monkeypatch.setattr(Ledger, "_write", refuse_terminal)
    assert w.run() == ExitCode.INTERNAL
    assert not posted


def test_a_watcher_that_cannot_rest_says_so_once_and_waits_as_it_is(tmp_path, monkeypatch):
    """No memfd_create (an old kernel, a filter): the rest is not tried again, nothing else changes."""
    from atvm_watcher import settings as settings_mod
    from atvm_watcher.commands import watch as watch_mod
    from atvm_watcher.decide import Decision, Verdict
    from atvm_watcher.mattermost import PostOutcome
    from atvm_watcher.request import Request
    from atvm_watcher.vocab import ExitCode

    env = {"ATVM_WATCHER_STATE_ROOT": str(tmp_path / "state"), "ATVM_LOG_DIR": str(tmp_path / "log"),
           "ATVM_REPORT_DIR": str(tmp_path / "reports"), "ATVM_WATCHER_ENV_FILE": str(tmp_path / "none.env"),
           "MATTERMOST_ATVM_WEBHOOK": "http://127.0.0.1:9/hooks/never-contacted", "ATVM_REST_AFTER_SECONDS": "1"}
    (tmp_path / "log").mkdir()
    posted = []
    w = watch_mod.Watcher(settings_mod.load(env), Request("B"))
    w.may_rest = True
    w.stop.install = lambda: None  # keep pytest's own signal handling
    w.deliverer.post = lambda url, payload, timeout: posted.append(payload) or PostOutcome("posted", "HTTP 200 ok", 200)

    def no_memfd(*_a, **_k):
        raise OSError(38, "memfd_create: Function not implemented")

    monkeypatch.setattr(watch_mod.os, "memfd_create", no_memfd)
    monkeypatch.setattr(watch_mod, "decide", lambda snap, limits, cancelled=False: Decision(
        Verdict("RUNNING", "launcher-alive", "running") if w.rest_problem is None
        else Verdict("COMPLETED", "exit-code", "the run passed")))
    assert w.run() == ExitCode.OK
    assert "memfd_create" in w.rest_problem and len(posted) == 1
