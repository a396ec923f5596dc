"""Shared by the reliability tests (issue 4): finished-run evidence, exits, and the secret scan.

Every helper that runs the CLI or collects a watcher's output checks it for the webhook token,
so "the token never appears" is asserted in every scenario without each test remembering to.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

import pytest
from conftest import HOOK_TOKEN, World

from atvm_dev.simulate import BAR, mochawesome_report
from atvm_watcher.layout import RunLayout, ScopePaths

TOKEN = HOOK_TOKEN.encode()
WATCH_TIMEOUT = 30.0  # only a hung watcher (a bug) ever gets near this


def assert_no_token(*texts: object) -> None:
    for text in texts:
        if text is None:
            continue
        data = text if isinstance(text, bytes) else str(text).encode("utf-8", "surrogateescape")
        assert TOKEN not in data, f"webhook token leaked into output: {data[:400]!r}"


def world_files(root: Path, allowed: Iterable[str] = (".env",)) -> Iterator[Tuple[Path, bytes]]:
    """Every regular file under root with its content (its first 64 MiB), env files excepted."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            if name.endswith(tuple(allowed)) or path.is_symlink() or not path.is_file():
                continue
            try:
                with path.open("rb") as fh:
                    yield path, fh.read(64 * 1024 * 1024)
            except OSError:
                continue


def token_leaks(root: Path, allowed: Iterable[str] = (".env",)) -> List[str]:
    """Files under root holding the token (env files, which hold it on purpose, excepted)."""
    return [str(path) for path, data in world_files(root, allowed) if TOKEN in data]


def token_runs(data: object, secret: str = HOOK_TOKEN, run: int = 8) -> List[str]:
    """The runs of ``run`` characters of the secret found in data, ASCII case ignored: any one is a leak,
    however the secret was cut or wherever it was echoed."""
    if isinstance(data, bytes):
        data = data.decode("utf-8", "surrogateescape")
    text = str(data).lower()
    return [secret[i:i + run] for i in range(len(secret) - run + 1) if secret[i:i + run].lower() in text]


def run_leaks(root: Path) -> Dict[str, List[str]]:
    """Files under root holding any run of the token (env files, which hold it on purpose, excepted)."""
    return {str(path): token_runs(data) for path, data in world_files(root) if token_runs(data)}


@pytest.fixture
def no_token_left(tmp_path):
    """After the test: no file the watcher world holds (state, markers, events, logs) has the token."""
    yield
    assert token_leaks(tmp_path) == []


# --- running the CLI --------------------------------------------------------------------------


def cli(world: World, *args: str, env: Optional[Dict[str, str]] = None,
        timeout: float = 60) -> subprocess.CompletedProcess:
    result = world.cli(*args, env=env, timeout=timeout)
    assert_no_token(result.stdout, result.stderr)
    return result


def finish(proc: subprocess.Popen, timeout: float = WATCH_TIMEOUT) -> Tuple[int, str, str]:
    """Wait for a watcher started with world.start_watcher; returns (code, stdout, stderr)."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"watcher still running after {timeout}s:\n{err[-3000:]}") from None
    assert_no_token(out, err)
    return proc.returncode, out, err


def watch(world: World, build: str, *args: str, env: Optional[Dict[str, str]] = None,
          timeout: float = WATCH_TIMEOUT) -> Tuple[int, str, str]:
    return finish(world.start_watcher("--build-name", build, *args, env=env), timeout)


def status(world: World, build: str) -> Dict:
    result = cli(world, "status", "--build-name", build, "--json")
    assert result.returncode == 0, result.stderr
    builds = json.loads(result.stdout)["builds"]
    return builds[0] if builds else {}


def read_json(path: Path) -> Dict:
    return json.loads(path.read_text(encoding="utf-8"))


# --- evidence of a run that already finished ----------------------------------------------------


def _write_scope(paths: ScopePaths, label: str, passing: bool) -> None:
    titles = ["discovers the source VM", "replicates the disks", "cuts over and boots the target"]
    paths.reports.mkdir(parents=True, exist_ok=True)
    report = mochawesome_report(f"{label}.cy.js", f"{label} migration", titles, fail_last=not passing)
    (paths.reports / "mochawesome.json").write_text(json.dumps(report), encoding="utf-8")
    paths.log.parent.mkdir(parents=True, exist_ok=True)
    summary = ("    ✔  All specs passed!   00:03   3   3   -   -   -" if passing
               else "    ✖  1 of 1 failed (100%)   00:03   3   2   1   -   -")
    paths.log.write_text(f"\n{BAR}\n\n  (Run Starting)\n\n  Running:  {label}.cy.js\n\n{BAR}\n\n"
                         f"  (Run Finished)\n{summary}\n", encoding="utf-8")
    paths.exit.write_text("0\n" if passing else "1\n", encoding="utf-8")


def finished_run(layout: RunLayout, passing: bool = True, groups: Tuple[Tuple[str, bool], ...] = ()) -> None:
    """Leave a run's complete evidence on disk, so a watcher decides it on its first poll."""
    for name, ok in groups:
        _write_scope(layout.group(name), name, ok)
        time.sleep(0.01)  # groups are ordered by when their files appeared
    if not groups:
        _write_scope(layout.run(), "main", passing)
    else:
        all_ok = passing and all(ok for _, ok in groups)
        layout.run().exit.write_text("0\n" if all_ok else "1\n", encoding="utf-8")


def finished(world: World, build: str, passing: bool = True, groups: Tuple[Tuple[str, bool], ...] = ()) -> None:
    finished_run(world.layout(build), passing, groups)


def wait_for(predicate, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)
