"""Pieces the benchmark is built from: a world in a temp folder, process accounting, a timing receiver.

Nothing here is imported by the watcher; it may use anything in the standard library.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from atvm_dev.receiver import MattermostDouble  # noqa: E402
from atvm_dev.simulate import mochawesome_report  # noqa: E402
from atvm_watcher.layout import RunLayout  # noqa: E402

WATCHER = REPO / "atvm_run_watcher.py"
SIMULATE = REPO / "atvm_dev" / "simulate.py"
NAIVE = REPO / "bench" / "naive_watch.sh"
CLK_TCK = os.sysconf("SC_CLK_TCK")
SUBJECT = re.compile(r"(\[naive\] )?ATVM run (\w+): (\S+)")


# --- the world: folders, environment, processes -----------------------------------------------------


@dataclass
class World:
    """One benchmark's controller in a temp folder: state root, log dir, report dir, default settings."""

    root: Path
    webhook: str
    python: str  # the interpreter the watcher runs under
    procs: List[subprocess.Popen] = field(default_factory=list)

    @classmethod
    def make(cls, parent: Path, name: str, webhook: str, python: str) -> World:
        root = parent / name
        for sub in ("state", "log", "reports"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        return cls(root, webhook, python)

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    @property
    def report_dir(self) -> Path:
        return self.root / "reports"

    def layout(self, build: str) -> RunLayout:
        return RunLayout(build, self.log_dir, self.report_dir)

    def env(self) -> Dict[str, str]:
        """Default settings (poll 1 s and the rest): only the paths and the webhook are set."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("ATVM_", "MATTERMOST_")) and k != "PYTHONDONTWRITEBYTECODE"}
        env.update({
            "ATVM_WATCHER_ENV_FILE": str(self.root / "no-env-file"),
            "ATVM_WATCHER_STATE_ROOT": str(self.root / "state"),
            "ATVM_AUTOMATION_ROOT": str(self.root / "automation"),
            "ATVM_REPORT_DIR": str(self.report_dir),
            "ATVM_LOG_DIR": str(self.log_dir),
            "MATTERMOST_ATVM_WEBHOOK": self.webhook,
        })
        return env

    def spawn(self, argv: Sequence[str], env: Optional[Dict[str, str]] = None) -> subprocess.Popen:
        proc = subprocess.Popen(list(argv), env=env or self.env(), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def launcher(self, build: str, *args: str) -> subprocess.Popen:
        return self.spawn([sys.executable, str(SIMULATE), "--build-name", build, "--log-dir", str(self.log_dir),
                           "--report-dir", str(self.report_dir), *args])

    def watcher(self, build: str, python: Optional[str] = None, env: Optional[Dict[str, str]] = None
                ) -> subprocess.Popen:
        """The installed watcher; ``env`` adds settings."""
        installed = self.root.parent / "opt" / WATCHER.name  # see install()
        return self.spawn([python or self.python, str(installed), "watch", "--build-name", build,
                           "--template", "bench", "--config-family", "bench", "--migration-style", "live",
                           "--integration-plugin", "bench", "--scope-description", "benchmark run"],
                          env={**self.env(), **(env or {})})

    def bare_python(self, python: Optional[str] = None) -> subprocess.Popen:
        """The reference for a waiting watcher's cost: an interpreter that only sleeps, in one-second steps."""
        return self.spawn([python or self.python, "-c", "import time\nwhile True:\n    time.sleep(1)"])

    def naive(self, build: str, every: float = 1.0) -> subprocess.Popen:
        # The build name travels in the environment: in argv it would look like a launcher to the watcher.
        env = {**self.env(), "NAIVE_LOG": str(self.layout(build).run().log), "NAIVE_URL": self.webhook,
               "NAIVE_BUILD": build, "NAIVE_EVERY": f"{every:g}"}
        return self.spawn(["/bin/bash", str(NAIVE)], env=env)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.returncode is None and proc.poll() is None:
                proc.kill()
        for proc in self.procs:
            if proc.returncode is None:
                proc.wait(timeout=30)


def install(parent: Path, pythons: Sequence[str]) -> Path:
    """The package laid out as the installer does (``<parent>/opt``), byte-compiled by each interpreter.

    The watchers run from this copy: like an installed watcher they find their modules compiled and
    never compile at start-up, and nothing is written into the checkout.
    """
    opt = parent / "opt"
    shutil.copytree(REPO / "atvm_watcher", opt / "atvm_watcher", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(WATCHER, opt / WATCHER.name)
    shutil.copy2(REPO / "inventory" / "vm-inventory.md", opt / "vm-inventory.md")
    for python in pythons:
        subprocess.run([python, "-m", "compileall", "-q", str(opt / "atvm_watcher")], check=True,
                       stdout=subprocess.DEVNULL)
    return opt


def reap(proc: subprocess.Popen, timeout: float) -> Tuple[int, float, int]:
    """Wait for a child and return (exit code, CPU seconds incl. its reaped children, peak RSS in KiB)."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.returncode is not None:  # already reaped by poll(): its usage is lost
            return proc.returncode, float("nan"), 0
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage.ru_utime + usage.ru_stime, usage.ru_maxrss
        if time.monotonic() > deadline:
            proc.kill()
        time.sleep(0.02)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- what a process costs ---------------------------------------------------------------------------


def cpu_seconds(pid: int, children: bool = False) -> float:
    """CPU time so far. Own time from schedstat (nanoseconds, all threads); with children, /proc/<pid>/stat."""
    if not children:
        total = 0
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/schedstat") as fh:
                    total += int(fh.read().split()[0])
            return total / 1e9
        except (OSError, ValueError):
            pass
    with open(f"/proc/{pid}/stat", "rb") as fh:
        raw = fh.read()
    fields = raw[raw.rindex(b")") + 2:].split()
    ticks = sum(int(x) for x in fields[11:15 if children else 13])  # utime stime [cutime cstime]
    return ticks / CLK_TCK


def status_kib(pid: int, key: str) -> int:
    return read_kib(f"/proc/{pid}/status", key)


def read_kib(path: str, key: str) -> int:
    with open(path) as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def uses_inotify(pid: int) -> bool:
    """Does this process hold an inotify instance (it waits on file events, not polling)?"""
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:inotify" for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


def pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


# --- the receiver, with a clock -----------------------------------------------------------------------


class TimedReceiver:
    """The loopback Mattermost double; notes when each build's post arrived, by who, and how many."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.arrived: Dict[Tuple[str, str], float] = {}  # (who, build) -> first arrival (epoch)
        # (who, build) -> when the connection that brought that first post was accepted: arrived - accepted
        # is the double's own time (its thread, reading, parsing, storing) plus the sender's, an upper bound
        # of what the bench itself adds to a latency (it shares the cores with the watchers).
        self.accepted: Dict[Tuple[str, str], float] = {}
        self._accepted_at: Dict[int, float] = {}  # id(connection) -> accepted (epoch)
        self._serving = threading.local()  # the connection a handler thread serves
        self.double = MattermostDouble(log=self._line)

    def __enter__(self) -> TimedReceiver:
        self.double.start()
        server = self.double._server  # the double's ThreadingHTTPServer: one thread per connection
        process_request, process_request_thread = server.process_request, server.process_request_thread

        def accepted(request, address) -> None:  # in the accepting thread, right after accept()
            self._accepted_at[id(request)] = time.time()
            process_request(request, address)

        def serving(request, address) -> None:  # the connection's own thread
            self._serving.since = self._accepted_at.pop(id(request), None)
            process_request_thread(request, address)

        server.process_request, server.process_request_thread = accepted, serving
        return self

    def __exit__(self, *exc: object) -> None:
        self.double.stop()

    @property
    def url(self) -> str:
        return self.double.url

    def _line(self, line: str) -> None:
        # Called once the post exists on the server, before the answer goes back.
        now = time.time()
        m = SUBJECT.search(line) if line.startswith("  | ") else None
        if m:
            key = ("naive" if m.group(1) else "watcher", m.group(3))
            with self.lock:
                if key not in self.arrived:
                    self.arrived[key] = now
                    self.accepted[key] = getattr(self._serving, "since", None) or now

    def counts(self) -> Dict[Tuple[str, str], int]:
        """(who, build) -> number of posts."""
        out: Dict[Tuple[str, str], int] = {}
        for post in self.double.posts:
            m = SUBJECT.search(str(post.get("text") or ""))
            if m:
                key = ("naive" if m.group(1) else "watcher", m.group(3))
                out[key] = out.get(key, 0) + 1
        return out

    def wait_for(self, keys: Sequence[Tuple[str, str]], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if all(k in self.arrived for k in keys):
                    return True
            time.sleep(0.02)
        return False


# --- evidence on disk --------------------------------------------------------------------------------------


def write_reports(folder: Path, count: int, failing: int, mtimes: Tuple[float, float]) -> None:
    """``count`` mochawesome reports, the last ``failing`` with one failed test, mtimes spread over a range."""
    folder.mkdir(parents=True, exist_ok=True)
    passing = json.dumps(mochawesome_report("spec.cy.js", "suite", ["a", "b", "c"], False), indent=2).encode()
    failed = json.dumps(mochawesome_report("spec.cy.js", "suite", ["a", "b", "c"], True), indent=2).encode()
    start, end = mtimes
    for i in range(count):
        path = folder / f"mochawesome_{i:05d}.json"
        path.write_bytes(failed if i >= count - failing else passing)
        t = start + (end - start) * i / max(1, count - 1)
        os.utime(path, (t, t))


LOG_LINES = [
    "  Running:  linux-migration-{n}.cy.js                                        ({n} of 900)\n",
    "    ✓ discovers the source VM (1532ms)\n",
    "    ✓ replicates the disks (48213ms)\n",
    "    ✓ cuts over and boots the target (21877ms)\n",
    "  cy:command ✔  visit /migrations/{n}\n",
    "  cy:xhr ➟  GET https://cmc.example.invalid/api/v1/jobs/{n}/status  Status: 200\n",
]


def write_log(path: Path, size: int) -> None:
    """A Cypress-like console log of about ``size`` bytes, without the finish banner."""
    block = "".join(line.format(n=n) for n in range(1, 400) for line in LOG_LINES).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        fh.write(b"  (Run Starting)\n")
        written = 0
        while written < size:
            piece = block[: size - written]
            fh.write(piece)
            written += len(piece)


def fill_process_table(target: int) -> List[subprocess.Popen]:
    """Idle ``sleep`` processes until /proc lists about ``target`` processes."""
    present = sum(1 for n in os.listdir("/proc") if n.isdigit())
    return [subprocess.Popen(["sleep", "3600"], stdin=subprocess.DEVNULL) for _ in range(max(0, target - present))]


def load_average() -> str:
    """The 1-minute load average: how busy the machine was with other work too."""
    with open("/proc/loadavg") as fh:
        return fh.read().split()[0]


def process_count() -> int:
    return sum(1 for n in os.listdir("/proc") if n.isdigit())


# --- numbers and words ------------------------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), by linear interpolation between closest ranks."""
    data = sorted(values)
    if not data:
        return float("nan")
    if len(data) == 1:
        return data[0]
    pos = (len(data) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (pos - low)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def machine(python: str) -> Dict[str, str]:
    model = ""
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = read_kib("/proc/meminfo", "MemTotal")
    return {"cpu": f"{os.cpu_count()} x {model or platform.machine()}", "memory": f"{mem_kib / 1048576:.1f} GiB",
            "kernel": platform.release(), "python": f"{python} {python_version(python)}",
            "bench_python": f"{sys.executable} {platform.python_version()}"}


def python_version(python: str) -> str:
    out = subprocess.run([python, "-c", "import platform; print(platform.python_version())"], capture_output=True,
                         text=True, timeout=30)
    return out.stdout.strip()


def filesystem_of(path: Path) -> str:
    best = ("", "?", "?")
    with open("/proc/mounts") as fh:
        for line in fh:
            device, mount, fstype = line.split()[:3]
            if str(path).startswith(mount.rstrip("/") + "/") and len(mount) > len(best[0]):
                best = (mount, fstype, device)
    return f"{best[1]} on {best[2]} (mounted at {best[0]})"


def temp_root(parent: Optional[str]) -> Path:
    return Path(tempfile.mkdtemp(prefix="atvm-bench-", dir=parent))


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "atvm_watcher",
                                "atvm_run_watcher.py"], capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + (" (with uncommitted changes in atvm_watcher/)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
