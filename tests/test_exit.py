"""How a watch ends its process: cli.leave skips the interpreter's teardown once everything is flushed.

The entry script (atvm_run_watcher.py) ends a ``watch`` with os._exit after flushing; these tests
show that the exit code, the journal lines and what is printed are those of a normal exit, and that
it falls back to the normal exit whenever a flush fails or another thread would be waited for.
"""

from __future__ import annotations

import io
import subprocess
import sys
import threading

import pytest
from conftest import REPO, WATCHER

from atvm_dev.receiver import Fault
from atvm_watcher import cli, log

# The same CLI, ended by the interpreter's normal teardown (what the entry script did before).
NORMAL_EXIT = [sys.executable, "-c",
               f"import sys; sys.path.insert(0, {str(REPO)!r}); from atvm_watcher.cli import main; sys.exit(main())"]


class Exited(Exception):
    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


@pytest.fixture
def exits(monkeypatch):
    """os._exit as cli.leave calls it, recorded instead of ending the test process."""
    def fake_exit(code: int) -> None:
        raise Exited(code)

    monkeypatch.setattr(cli.os, "_exit", fake_exit)


@pytest.fixture
def buffered_stdout():
    """A stream (the atvm log's) that holds what it is given until flushed, to be set as sys.stdout."""
    raw = io.BytesIO()
    stream = io.TextIOWrapper(io.BufferedWriter(raw, buffer_size=1 << 16), encoding="utf-8")
    log.setup("", stream=stream)
    yield raw, stream
    log.setup("")


def test_leave_flushes_what_is_printed_then_exits_with_the_code(exits, buffered_stdout, monkeypatch):
    raw, stream = buffered_stdout
    monkeypatch.setattr(sys, "stdout", stream)  # here: pytest sets its own for the test's call
    sys.stdout.write('{"text": "the payload a dry run prints"}\n')
    assert raw.getvalue() == b""  # still buffered (a pipe's stdout is)
    log.get("b").info("finished: COMPLETED; exit 4")  # the log handler flushes the stream it writes to
    sys.stdout.write("after the log line\n")
    with pytest.raises(Exited) as ended:
        cli.leave(4)
    assert ended.value.code == 4
    assert raw.getvalue() == (b'{"text": "the payload a dry run prints"}\nINFO build=b finished: COMPLETED; exit 4\n'
                              b"after the log line\n")


def test_leave_returns_when_a_flush_fails(exits, buffered_stdout, monkeypatch):
    _, stream = buffered_stdout

    def broken() -> None:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(stream, "flush", broken)
    assert cli.leave(0) is None  # the normal exit then reports the failure as it always did


def test_leave_returns_while_another_thread_would_be_waited_for(exits):
    release = threading.Event()
    other = threading.Thread(target=release.wait)
    other.start()
    try:
        assert cli.leave(0) is None
    finally:
        release.set()
        other.join()
    with pytest.raises(Exited):
        cli.leave(0)


def test_only_watch_leaves_early(exits, world, monkeypatch, capsys):
    for name, value in world.env.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["status"], fast_exit=True) == 0
    with pytest.raises(Exited) as ended:
        cli.main(["watch", "--build-name", "bad/name"], fast_exit=True)
    assert ended.value.code == 2
    assert "bad/name" in capsys.readouterr().err
    assert cli.main(["watch", "--build-name", "bad/name"]) == 2  # without fast_exit: returned


def finished_run(world, build: str, *args: str) -> None:
    launcher = world.launch(build, "--step-seconds", "0.02", *args)
    assert launcher.wait(30) == (1 if "fail" in args else 0)


def both_ways(world, builds, *args: str):
    """The watcher of builds[0] ended by the entry script, of builds[1] by the normal teardown; the journal
    lines (JOURNAL_STREAM set: each with its priority) read with the build names made alike."""
    env = {**world.env, "JOURNAL_STREAM": "8:12345"}
    out = []
    for argv, build in (([sys.executable, str(WATCHER)], builds[0]), (NORMAL_EXIT, builds[1])):
        res = subprocess.run([*argv, "watch", "--build-name", build, *args], env=env, capture_output=True,
                             text=True, timeout=60, stdin=subprocess.DEVNULL)
        out.append((res.returncode, res.stderr.replace(build, "B").splitlines(), res.stdout.replace(build, "B")))
    return out


def test_a_posting_watcher_exits_as_before(world):
    builds = ("exit-fast-ok", "exit-normal-ok")
    for b in builds:
        finished_run(world, b)
    fast, normal = both_ways(world, builds)
    assert fast == normal
    code, lines, _ = fast
    assert code == 0 and lines[0].startswith("<6>INFO build=B ")
    assert any("delivery posted" in line for line in lines)
    assert lines[-1] == "<6>INFO build=B finished: COMPLETED; exit 0"
    assert len(world.receiver.posts) == 2


def test_a_rejected_post_exits_4_as_before(world):
    builds = ("exit-fast-rejected", "exit-normal-rejected")
    for b in builds:
        finished_run(world, b, "--outcome", "fail")
    world.receiver.queue(Fault.error(403, "web.incoming_webhook.channel_locked.app_error"),
                         Fault.error(403, "web.incoming_webhook.channel_locked.app_error"))
    fast, normal = both_ways(world, builds)
    assert fast == normal
    code, lines, _ = fast
    assert code == 4 and any(line.startswith("<3>ERROR build=B delivery rejected") for line in lines)


def test_a_dry_run_prints_everything_before_it_exits(world):
    builds = ("exit-fast-dry", "exit-normal-dry")
    for b in builds:
        finished_run(world, b)
    fast, normal = both_ways(world, builds, "--dry-run")
    assert fast == normal
    code, _, out = fast
    assert code == 0 and '"attachments"' in out and out.endswith("\n")
    assert world.receiver.posts == []


def test_the_entry_script_asks_for_the_early_exit():
    assert "main(fast_exit=True)" in WATCHER.read_text(encoding="utf-8")
