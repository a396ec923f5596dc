"""Shared test fixtures: a whole watcher world in tmp_path, a loopback Mattermost, a real launcher.

Nothing here touches /var/lib, /tmp/.log, /root or /etc: every path comes from ATVM_* variables.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from atvm_dev.receiver import MattermostDouble  # noqa: E402
from atvm_watcher.layout import RunLayout  # noqa: E402
from atvm_watcher.settings import load  # noqa: E402

WATCHER = REPO / "atvm_run_watcher.py"
# The same CLI with a crash point armed by ATVM_TEST_PAUSE_AT / ATVM_TEST_PAUSE_FILE (see the file).
CRASHPOINT_WATCHER = REPO / "atvm_dev" / "atvm_run_watcher_crashpoint.py"
SIMULATE = REPO / "atvm_dev" / "simulate.py"
FIXTURES = REPO / "tests" / "fixtures"
HOOK_TOKEN = "atvmtesthooktoken0123456789"


def entry(env: Optional[Dict[str, str]]) -> Path:
    """The watcher's CLI; with a crash point armed when the test asks for one."""
    return CRASHPOINT_WATCHER if "ATVM_TEST_PAUSE_AT" in (env or {}) else WATCHER


@dataclass
class World:
    """A controller in a folder: state root, log dir, report dir, env file, and a Mattermost."""

    root: Path
    receiver: MattermostDouble
    env: Dict[str, str] = field(default_factory=dict)
    procs: List[subprocess.Popen] = field(default_factory=list)

    @property
    def state_root(self) -> Path:
        return Path(self.env["ATVM_WATCHER_STATE_ROOT"])

    @property
    def log_dir(self) -> Path:
        return Path(self.env["ATVM_LOG_DIR"])

    @property
    def report_dir(self) -> Path:
        return Path(self.env["ATVM_REPORT_DIR"])

    def layout(self, build: str) -> RunLayout:
        """Where a run of this build leaves its evidence, as the watcher will look for it (templates included).

        Only the world's environment counts here: a test may break the env file on purpose."""
        return load({**self.env, "ATVM_WATCHER_ENV_FILE": str(self.root / "no-such.env")}).layout(build)

    def build_dir(self, build: str) -> Path:
        return self.state_root / build

    def cli(self, *args: str, timeout: float = 60, env: Optional[Dict[str, str]] = None,
            check: bool = False) -> subprocess.CompletedProcess:
        """Run atvm_run_watcher.py as a user would, capturing everything it prints."""
        result = subprocess.run([sys.executable, str(entry(env)), *args], env={**self.env, **(env or {})},
                                capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if check:
            assert result.returncode == 0, result.stderr + result.stdout
        return result

    def start_watcher(self, *args: str, env: Optional[Dict[str, str]] = None) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, str(entry(env)), "watch", *args], env={**self.env, **(env or {})},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                stdin=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def launch(self, build: str, *args: str, env: Optional[Dict[str, str]] = None,
               in_argv: bool = True) -> subprocess.Popen:
        """A real launcher process (the simulator) writing the run's evidence.

        ``in_argv=False`` passes the build name through the environment, so no process scan finds it."""
        named = ["--build-name", build] if in_argv else []
        env = {**self.env, **(env or {}), **({} if in_argv else {"SIMULATE_BUILD_NAME": build})}
        proc = subprocess.Popen([sys.executable, str(SIMULATE), *named, "--log-dir", str(self.log_dir),
                                 "--report-dir", str(self.report_dir), *args], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def outcome(self, build: str, launcher_args: Sequence[str], watcher_args: Sequence[str],
                env: Optional[Dict[str, str]], timeout: float = 90) -> Tuple[int, Dict[str, str], List[str], str]:
        """A run (the simulator with ``launcher_args``; none when empty) watched to its end: the watcher's exit
        code, every state.json's state by folder, the posts (the build name written B) and the watcher's log."""
        launcher = self.launch(build, *launcher_args) if launcher_args else None
        proc = self.start_watcher("--build-name", build, *watcher_args, env=env)
        _, err = proc.communicate(timeout=timeout)
        if launcher is not None and launcher.poll() is None:
            launcher.kill()
        states = {}
        for path in sorted(self.build_dir(build).rglob("state.json")):
            states[str(path.parent.relative_to(self.build_dir(build)))] = json.loads(path.read_text())["state"]
        posts = sorted(p["text"].replace(build, "B") for p in self.receiver.posts if build in p["text"])
        return proc.returncode, states, posts, err

    def wait_for_state(self, build: str, timeout: float = 20) -> None:
        """Until the watcher has written its first state.json (it holds its lock by then)."""
        path = self.build_dir(build) / "state.json"
        deadline = time.monotonic() + timeout
        while not path.exists():
            assert time.monotonic() < deadline, f"no {path} after {timeout}s"
            time.sleep(0.05)

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)


def world_env(root: Path, webhook: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ATVM_", "MATTERMOST_", "JOURNAL_STREAM"))}
    for name in ("state", "log", "reports", "automation"):
        (root / name).mkdir(parents=True, exist_ok=True)
    env.update({
        "ATVM_WATCHER_ENV_FILE": str(root / "atvm-run-watcher.env"),  # absent unless a test writes it
        "ATVM_WATCHER_STATE_ROOT": str(root / "state"),
        "ATVM_AUTOMATION_ROOT": str(root / "automation"),
        "ATVM_REPORT_DIR": str(root / "reports"),
        "ATVM_LOG_DIR": str(root / "log"),
        "ATVM_UNIT_DIR": str(root / "units"),
        "MATTERMOST_ATVM_WEBHOOK": webhook,
        "ATVM_POLL_SECONDS": "0.1",
        "ATVM_SETTLE_SECONDS": "0.3",
        "ATVM_GONE_GRACE_SECONDS": "1",
        "ATVM_START_TIMEOUT_SECONDS": "3",
        "ATVM_HUNG_AFTER_SECONDS": "30",
        "ATVM_POST_TIMEOUT_SECONDS": "3",
        "ATVM_POST_BACKOFF_SECONDS": "0.05",
        "ATVM_POST_ATTEMPTS": "3",
        "PYTHONDONTWRITEBYTECODE": "1",
    })
    return env


@pytest.fixture
def no_hang():
    """A blocking open would hang the test for ever: make it fail after a few seconds instead."""
    def expired(signum, frame):
        raise TimeoutError("blocked on a FIFO")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(5)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.fixture
def receiver():
    with MattermostDouble(hook_id=HOOK_TOKEN) as r:
        yield r


@pytest.fixture
def world(tmp_path: Path, receiver: MattermostDouble):
    w = World(tmp_path, receiver, world_env(tmp_path, receiver.url))
    try:
        yield w
    finally:
        w.cleanup()
