"""Launcher liveness: argv token matching, the cached /proc scan, pid files (reuse, zombies).

Most cases run against a fake /proc tree in tmp_path (``procs.PROC`` points at it), so pid reuse,
zombies and exec-after-fork are plain file edits; a few use real processes to keep the fake honest.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import pytest

from atvm_watcher import procs
from atvm_watcher.layout import RunLayout
from atvm_watcher.procs import ArgvScanner, LauncherTracker, argv_has_token, is_candidate

B = "e2e-rh9-w2k25-fc"


# --- argv token matching ----------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [
    [B],
    ["launch", B],
    ["launch", f"--build-name={B}"],
    ["launch", f"/tmp/.log/{B}"],
    ["launch", f"name:{B}"],
    ["launch", f"a,{B},c"],
    ["launch", f"--x=/a/{B}:c"],
    ["sh", "-c", f"run {B} now"],
])
def test_build_name_as_a_whole_token_matches(argv):
    assert argv_has_token(b"\0".join(a.encode() for a in argv) + b"\0", B.encode())


@pytest.mark.parametrize("argv", [
    ["tail", "-f", f"/tmp/.log/{B}.log"],
    ["launch", f"{B}-2"],
    ["launch", f"x{B}"],
    ["launch", f"{B}_rerun"],
    ["launch", f"--build-name={B}.old"],
    ["launch", B[:-1]],
    [],
])
def test_build_name_inside_a_longer_token_does_not_match(argv):
    assert not argv_has_token(b"\0".join(a.encode() for a in argv), B.encode())


@pytest.mark.parametrize("argv", [
    ["python3", "/opt/atvm-watcher-service/atvm_run_watcher.py", "watch", "--build-name", B],
    ["/bin/sh", "/opt/atvm-watcher-service/start-atvm-run-watcher.sh", "--build-name", B],
    ["systemctl", "start", f"atvm-run-watcher@{B}.service"],
])
def test_the_watcher_and_its_helpers_are_never_the_launcher(argv):
    assert not is_candidate(b"\0".join(a.encode() for a in argv), B.encode())


@pytest.mark.parametrize("argv", [
    ["journalctl", f"ATVM_BUILD={B}", "-f"],
    ["/usr/bin/journalctl", "-u", f"atvm-run-watcher@{B}.service"],
    ["tail", "-f", f"/tmp/.log/{B}/linux.log", B],
    ["less", "+F", f"/tmp/.log/{B}.log", B],
    ["grep", "-r", B, "/tmp/.log"],
    ["watch", "-n1", "ls", f"/tmp/.log/{B}"],
])
def test_a_program_looking_at_the_run_is_never_the_launcher(argv):
    """The README's own journal command, a tail -f, a grep: an operator looking, not a run running."""
    assert not is_candidate(b"\0".join(a.encode() for a in argv), B.encode())


@pytest.mark.parametrize("argv", [
    ["bash", "/root/cdc-e2e-cyp-12.17.4/run-atvm.sh", "--build-name", B],
    ["npx", "cypress", "run", "--env", f"build={B}"],
])
def test_a_launcher_naming_the_build_is_found(argv):
    assert is_candidate(b"\0".join(a.encode() for a in argv), B.encode())


# --- a fake /proc ---------------------------------------------------------------------------------------


class FakeProc:
    """A /proc tree: ``uptime``, ``loadavg`` (its last field: the newest pid), and per pid a ``stat``
    (state, start ticks) and a ``cmdline``."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch):
        self.root = root
        root.mkdir()
        (root / "uptime").write_text("1000.00 1500.00\n")
        monkeypatch.setattr(procs, "PROC", str(root))
        self.boot = procs.boot_time()

    def add(self, pid: int, argv, started_at: float, state: str = "S", comm: str = "python3 (x)",
            announce: bool = True) -> None:
        if announce:  # as the kernel does when it hands out a pid
            (self.root / "loadavg").write_text(f"0.10 0.20 0.30 1/{pid} {pid}\n")
        folder = self.root / str(pid)
        folder.mkdir(exist_ok=True)
        ticks = round((started_at - self.boot) * procs.CLK_TCK)
        (folder / "stat").write_text(f"{pid} ({comm}) {state} " + " ".join(["0"] * 18) + f" {ticks} 0 0\n")
        (folder / "cmdline").write_bytes(b"".join(a.encode() + b"\0" for a in argv))

    def remove(self, pid: int) -> None:
        for f in (self.root / str(pid)).iterdir():
            f.unlink()
        (self.root / str(pid)).rmdir()


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeProc:
    return FakeProc(tmp_path / "proc", monkeypatch)


def pid_path(tmp_path: Path, build: str = B) -> Path:
    """Where the build's launcher writes its pid (the layout's pid file, with tmp_path as the log folder)."""
    return RunLayout(build, tmp_path, tmp_path).pid_file()


def pid_file(tmp_path: Path, pid: int, mtime: Optional[float] = None) -> Path:
    path = pid_path(tmp_path)
    path.write_text(f"{pid}\n")
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


# --- the argv scan -------------------------------------------------------------------------------------


def test_scan_finds_the_oldest_live_process_naming_the_build(fake):
    now = time.time()
    fake.add(4100300, ["launch", "--build-name", B], now - 50)
    fake.add(4100200, ["launch", "--build-name", B], now - 100)
    fake.add(4100100, ["launch", "--build-name", B], now - 500, state="Z")  # a zombie is not a launcher
    fake.add(4100150, ["tail", "-f", f"/tmp/.log/{B}.log"], now - 900)
    assert ArgvScanner(B).find(now) == 4100200


def test_scan_skips_excluded_pids(fake):
    now = time.time()
    fake.add(4100200, ["launch", B], now - 100)
    assert ArgvScanner(B, exclude=(4100200,)).find(now) is None


def test_an_argv_that_did_not_match_is_not_read_again_until_the_rescan(fake):
    now = time.time()
    fake.add(4100200, ["bash", "wrapper.sh"], now - 100)
    scanner = ArgvScanner(B)
    assert scanner.find(now) is None
    fake.add(4100200, ["launch", B], now - 100, announce=False)  # the same process rewrote its argv
    later = now + procs.RECHECK_NEW_SECONDS + 1
    assert scanner.find(later) is None  # ruled out: not read again on every poll
    assert scanner.find(later + 3600) is None  # nor after a long wait: no look reads every argv by itself
    assert scanner.find(later + 3601, full=True) == 4100200  # a full rescan, asked for, reads it again


def test_a_new_process_is_read_again_while_it_may_still_exec(fake):
    now = time.time()
    fake.add(4100200, ["python3", "-m", "pytest"], now)  # fork: the child still shows its parent's argv
    scanner = ArgvScanner(B)
    assert scanner.find(now) is None
    fake.add(4100200, ["launch", B], now, announce=False)  # exec: same pid
    assert scanner.find(now + 1) == 4100200


def test_a_reused_pid_is_read_afresh(fake):
    now = time.time()
    fake.add(4100200, ["sleep", "100"], now - 100)
    scanner = ArgvScanner(B)
    assert scanner.find(now) is None
    fake.remove(4100200)
    fake.add(4100201, ["true"], now + 4)  # pids are handed out in turn: others come before a reuse
    assert scanner.find(now + 5) is None
    fake.add(4100200, ["launch", B], now + 6)  # same pid, new process
    assert scanner.find(now + 6) == 4100200


def test_proc_is_not_listed_again_while_no_process_was_created(fake):
    now = time.time()
    fake.add(4100200, ["sleep", "100"], now - 100)
    scanner = ArgvScanner(B)
    assert scanner.find(now) is None
    fake.add(4100300, ["launch", B], now + 4, announce=False)  # invisible: loadavg still names 4100200
    assert scanner.find(now + 5) is None
    fake.add(4100301, ["true"], now + 6)
    assert scanner.find(now + 6) == 4100300


def test_each_argv_is_read_once_per_rescan(fake, monkeypatch):
    now = time.time()
    for pid in range(4100100, 4100150):
        fake.add(pid, ["sleep", "100"], now - 100)
    reads = []
    real = procs.read_cmdline
    monkeypatch.setattr(procs, "read_cmdline", lambda pid: reads.append(pid) or real(pid))
    scanner = ArgvScanner(B)
    scanner.find(now)
    scanner.find(now + 1)  # within RECHECK_NEW_SECONDS: read again, they might still exec
    scanner.find(now + 2)
    fake.add(4100150, ["sleep", "100"], now + 3)  # a new process: /proc is listed again
    scanner.find(now + 3)
    assert len(reads) == 50 + 50 + 1
    reads.clear()
    scanner.find(now + 30)
    scanner.find(now + 600)
    assert reads == []  # no periodic rescan: a look reads only what is new
    scanner.find(now + 601, full=True)
    scanner.find(now + 602)
    assert sorted(reads) == list(range(4100100, 4100151))  # the rescan reads each once, not again after


def counting(monkeypatch):
    reads, listings = [], []
    real_read, real_listdir = procs.read_cmdline, procs.os.listdir
    monkeypatch.setattr(procs, "read_cmdline", lambda pid: reads.append(pid) or real_read(pid))
    monkeypatch.setattr(procs.os, "listdir",
                        lambda path: (listings.append(path) if path == procs.PROC else None) or real_listdir(path))
    return reads, listings


def test_a_look_reads_the_argv_of_the_new_pids_only_among_500_processes(fake, monkeypatch):
    now = time.time()
    for pid in range(4100000, 4100500):
        fake.add(pid, ["sleep", "100"], now - 100)
    scanner = ArgvScanner(B)
    assert scanner.find(now) is None
    reads, listings = counting(monkeypatch)
    for look in range(1, 20):  # looks a safety wait apart, nothing created: nothing read, /proc not listed
        assert scanner.find(now + 60 * look) is None
    assert (reads, listings) == ([], [])
    fake.add(4100500, ["sleep", "1"], now + 1200)
    fake.remove(4100500)  # ended before the look: its number is read, and fails
    fake.add(4100502, ["launch", B], now + 1200)  # 4100501 went to a thread or a short-lived process
    assert scanner.find(now + 1260) == 4100502
    assert sorted(reads) == [4100500, 4100501, 4100502] and listings == []  # what was created, not all 500


def test_many_new_pids_or_pids_wrapped_around_list_proc_again(fake, monkeypatch):
    now = time.time()
    for pid in range(4100000, 4100100):
        fake.add(pid, ["sleep", "100"], now - 100)
    scanner = ArgvScanner(B)
    scanner.find(now)
    reads, listings = counting(monkeypatch)
    fake.add(4100100 + procs.PROBE_MOST + 10, ["sleep", "100"], now + 60)  # more new pids than PROBE_MOST
    scanner.find(now + 60)
    assert len(listings) == 1 and reads == [4100100 + procs.PROBE_MOST + 10]  # listed; the new one read
    reads.clear()
    fake.remove(4100050)
    fake.add(4100050, ["launch", B], now + 120)  # the pids wrapped around: 4100050 is another process now
    assert scanner.find(now + 120) == 4100050
    assert len(reads) == 101  # wrapped: every argv is read again


def test_a_thread_read_by_its_number_is_not_taken_for_the_launcher(fake):
    now = time.time()
    fake.add(4100200, ["python3", "worker.py"], now - 100)
    scanner = ArgvScanner(B)
    assert scanner.find(now) is None
    fake.add(4100201, ["launch", B], now + 1)  # a thread of a process naming the build: same argv
    (fake.root / "4100201" / "status").write_text("Name:\tlaunch\nUmask:\t0022\nState:\tS\nTgid:\t4100199\n")
    assert scanner.find(now + 1) is None
    (fake.root / "4100201" / "status").write_text("Name:\tlaunch\nTgid:\t4100201\nPid:\t4100201\n")
    assert scanner.find(now + 2) == 4100201  # its own thread group: a process


def test_a_decision_ending_the_run_on_the_launchers_absence_reads_every_argv_first(fake, tmp_path, monkeypatch):
    from atvm_watcher.evidence import Clock, EvidenceReader

    now = [time.time()]

    class Stepped(Clock):
        wall = staticmethod(lambda: now[0])
        mono = staticmethod(lambda: now[0])

    fake.add(4100100, ["sleep", "3600"], now[0] - 200)
    fake.add(4100200, ["bash", "wrapper.sh"], now[0] - 100)
    reader = EvidenceReader(RunLayout(B, tmp_path / "log", tmp_path / "reports"), False, clock=Stepped())
    assert not reader.snapshot().launcher.alive
    assert not reader.launcher_rescanned(["windows"])  # the first look read every argv already
    fake.add(4100200, ["launch", B], now[0] - 100, announce=False)  # the wrapper rewrote its argv
    now[0] += 120
    assert not reader.snapshot().launcher.alive  # a look reads no old argv again
    assert not reader.launcher_rescanned([])  # nothing ends: nothing read
    assert reader.launcher_rescanned([None])  # the run would end: every argv read, the launcher found
    assert reader.snapshot().launcher.alive
    fake.remove(4100200)
    now[0] += 120
    assert not reader.snapshot().launcher.alive
    reads, _ = counting(monkeypatch)
    assert not reader.launcher_rescanned([None, "linux"])  # read again: nothing found, the end stands
    assert reads == [4100100]
    reads.clear()
    assert not reader.launcher_rescanned(["linux"]) and reads == []  # once per scope


def test_without_loadavg_proc_is_listed_on_every_poll(fake):
    now = time.time()
    scanner = ArgvScanner(B)
    assert scanner.find(now) is None
    (fake.root / "loadavg").unlink(missing_ok=True)
    fake.add(4100300, ["launch", B], now + 4, announce=False)
    assert scanner.find(now + 5) == 4100300


def test_scan_without_proc_finds_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(procs, "PROC", str(tmp_path / "missing"))
    assert ArgvScanner(B).find(time.time()) is None


# --- the tracker: pid file first, then the scan; pid reuse and zombies -----------------------------------


def test_pid_file_names_the_launcher(fake, tmp_path):
    now = time.time()
    fake.add(4104242, ["launcher"], now - 30)
    live = LauncherTracker(B, pid_file(tmp_path, 4104242, now - 29)).check(now)
    assert (live.alive, live.pid, live.source) == (True, 4104242, "pid file")
    assert live.started_at == pytest.approx(now - 30, abs=0.05)


def test_pid_file_pointing_at_a_zombie_is_not_alive(fake, tmp_path):
    now = time.time()
    fake.add(4104242, ["launcher"], now - 30, state="Z")
    live = LauncherTracker(B, pid_file(tmp_path, 4104242, now - 29)).check(now)
    assert not live.alive


def test_pid_file_whose_pid_now_belongs_to_a_newer_process_is_not_trusted(fake, tmp_path):
    now = time.time()
    fake.add(4104242, ["postgres"], now - 10)  # started long after the pid file was written
    live = LauncherTracker(B, pid_file(tmp_path, 4104242, now - 3600)).check(now)
    assert not live.alive
    assert "pid reused" in live.note


def test_pid_file_with_garbage_falls_back_to_the_scan(fake, tmp_path):
    now = time.time()
    (pid_path(tmp_path)).write_text("not-a-pid\n")
    fake.add(4100300, ["launch", B], now - 5)
    live = LauncherTracker(B, pid_path(tmp_path)).check(now)
    assert (live.alive, live.pid, live.source) == (True, 4100300, "process scan")
    assert "not a pid" in live.note


def test_pid_file_that_is_a_fifo_is_not_read(tmp_path, fake):
    os.mkfifo(pid_path(tmp_path))
    signal.alarm(5)  # a blocking open would hang for ever: let SIGALRM end the test instead
    try:
        live = LauncherTracker(B, pid_path(tmp_path)).check(time.time())
    finally:
        signal.alarm(0)
    assert not live.alive
    assert "not a regular file" in live.note


def test_tracked_launcher_whose_pid_is_reused_is_gone(fake, tmp_path):
    now = time.time()
    fake.add(4100300, ["launch", B], now - 100)
    tracker = LauncherTracker(B, pid_path(tmp_path))
    assert tracker.check(now).alive
    fake.add(4100300, ["unrelated"], now + 10)  # the launcher died; its pid went to another process
    live = tracker.check(now + 20)
    assert not live.alive
    assert live.last_seen_alive == now
    assert live.started_at == pytest.approx(now - 100, abs=0.05)  # remembered: the run's start


def test_tracked_launcher_that_became_a_zombie_is_gone(fake, tmp_path):
    now = time.time()
    fake.add(4100300, ["launch", B], now - 100)
    tracker = LauncherTracker(B, pid_path(tmp_path))
    assert tracker.check(now).alive
    fake.add(4100300, ["launch", B], now - 100, state="Z")
    assert not tracker.check(now + 1).alive


# --- real processes ---------------------------------------------------------------------------------------


@pytest.fixture
def spawn():
    started = []

    def start(*argv: str) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", *argv])
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()
        proc.wait()


def _wait_state(pid: int, state: str) -> None:
    for _ in range(500):
        info = procs.process_start(pid)
        if info and info[1] == state:
            return
        time.sleep(0.01)
    raise AssertionError(f"pid {pid} never reached state {state}")


def test_real_process_is_found_by_its_argv_and_not_by_a_longer_token(spawn, tmp_path):
    build = f"bench-{os.getpid()}-real"
    spawn(f"--log=/tmp/.log/{build}.log")
    wanted = spawn("--build-name", build)
    tracker = LauncherTracker(build, pid_path(tmp_path, build))
    deadline = time.time() + 10
    live = tracker.check(time.time())
    while live.pid != wanted.pid and time.time() < deadline:  # until the child has exec'd
        time.sleep(0.02)
        live = tracker.check(time.time())
    assert (live.alive, live.pid, live.source) == (True, wanted.pid, "process scan")
    wanted.kill()
    wanted.wait()
    assert not tracker.check(time.time()).alive


def test_real_zombie_in_the_pid_file_is_not_alive(tmp_path):
    child = subprocess.Popen(["true"])
    try:
        _wait_state(child.pid, "Z")  # exited, not yet reaped
        assert not procs.alive(child.pid)
        live = LauncherTracker("zombie-build", pid_file(tmp_path, child.pid)).check(time.time())
        assert not live.alive
    finally:
        child.wait()


def test_own_process_is_excluded(tmp_path):
    tracker = LauncherTracker("x", pid_path(tmp_path, "x"))
    assert os.getpid() in tracker.exclude
