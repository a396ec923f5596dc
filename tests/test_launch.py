"""The launch wrapper (atvm-run.sh -> atvm_run_watcher.py launch), run for real on real commands.

It must leave exact evidence: the earlier outcome gone and the pid file written before the command
starts, every byte of output in the log, the real exit status in .exit (TERMINATED in .status for a
signal), its own exit status the command's, and memory that does not grow with the output.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import REPO

ATVM_RUN = REPO / "atvm-run.sh"


def launch(world, *args: str, env=None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(ATVM_RUN), *args], env={**world.env, **(env or {})}, capture_output=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def files(world) -> dict:
    return {str(p.relative_to(world.root)): p.read_bytes() for p in sorted(world.root.rglob("*")) if p.is_file()}


def py(code: str) -> list:
    return [sys.executable, "-c", textwrap.dedent(code)]


def test_a_passing_command(world):
    run = world.layout("e2e-pass").run()
    run.log.write_text("an earlier run's log\n")
    run.status.write_text("FAILED\n")  # an earlier run's outcome: must never be taken for this one's
    run.exit.write_text("1\n")
    command = py("import sys; print('out'); print('err', file=sys.stderr)")
    done = launch(world, "--build-name", "e2e-pass", "--", *command)
    assert done.returncode == 0, done.stderr
    assert run.exit.read_text() == "0\n" and not run.status.exists()
    assert sorted(run.log.read_text().splitlines()) == ["err", "out"]
    assert b"out" in done.stdout  # shown as well as logged
    assert int(world.layout("e2e-pass").pid_file().read_text()) > 0


def test_a_failing_command_records_its_exit_status(world):
    done = launch(world, "--build-name", "e2e-fail", "--no-echo", "--", *py("import sys; print('x'); sys.exit(3)"))
    assert done.returncode == 3 and done.stdout == b""
    assert world.layout("e2e-fail").run().exit.read_text() == "3\n"


def test_a_command_killed_by_a_signal_is_terminated(world):
    done = launch(world, "--build-name", "e2e-killed", "--", *py("import os, signal; os.kill(os.getpid(), 9)"))
    run = world.layout("e2e-killed").run()
    assert done.returncode == 128 + 9
    assert run.status.read_text() == "TERMINATED\n" and not run.exit.exists()


def test_a_command_that_cannot_start_is_exit_127(world):
    done = launch(world, "--build-name", "e2e-nothing", "--", str(world.root / "no-such-program"))
    run = world.layout("e2e-nothing").run()
    assert done.returncode == 127 and run.exit.read_text() == "127\n"
    assert "cannot run" in run.log.read_text()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_to_the_wrapper_stops_the_whole_command_and_is_recorded(world, sig):
    build = f"e2e-sig{int(sig)}"
    grandchild = world.root / "grandchild.pid"
    # a child that leaves a grandchild behind, as npm leaves Cypress and Cypress the browser
    command = py(f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        open({str(grandchild)!r}, "w").write(str(child.pid))
        print("started", flush=True)
        time.sleep(120)
    """)
    proc = subprocess.Popen([str(ATVM_RUN), "--build-name", build, "--no-echo", "--", *command], env=world.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    world.procs.append(proc)
    log = world.layout(build).run().log
    deadline = time.monotonic() + 20
    while not (grandchild.exists() and grandchild.read_text() and log.exists() and "started" in log.read_text()):
        assert time.monotonic() < deadline, "the command never started"
        time.sleep(0.05)
    proc.send_signal(sig)
    assert proc.wait(timeout=20) == 128 + sig
    assert world.layout(build).run().status.read_text() == "TERMINATED\n"
    pid = int(grandchild.read_text())
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and b"Z" not in Path(f"/proc/{pid}/stat").read_bytes().split(b")")[-1][:3]:
        assert time.monotonic() < deadline, "the grandchild outlived the signal"
        time.sleep(0.05)


@pytest.mark.parametrize("trap", ["exit", "exit 0", "exit 1"])
def test_a_stopped_command_that_traps_the_signal_is_terminated_whatever_it_exits(world, trap):
    """A launcher cleaning up on SIGTERM ('trap ... exit') exits 0 or 1 afterwards: still a stopped run."""
    build = f"e2e-trap{len(trap)}"
    script = f"tmp=$(mktemp -d); trap 'rm -rf \"$tmp\"; {trap}' TERM INT; echo started; sleep 120 & wait $!"
    proc = subprocess.Popen([str(ATVM_RUN), "--build-name", build, "--no-echo", "--", "bash", "-c", script],
                            env=world.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    world.procs.append(proc)
    run = world.layout(build).run()
    deadline = time.monotonic() + 20
    while not (run.log.exists() and "started" in run.log.read_text()):
        assert time.monotonic() < deadline, "the command never started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 128 + signal.SIGTERM
    assert run.status.read_text() == "TERMINATED\n" and not run.exit.exists()
    assert b"stopped by signal" in proc.stderr.read()


def test_a_lot_of_output_is_all_logged_and_memory_stays_flat(world):
    """The largest resident size of the wrapper is the same for 1 MiB and for 256 MiB of output."""
    def peak(build: str, mib: int) -> int:
        writer = py(f"""
            import os
            block = (b"x" * 1023 + b"\\n") * 1024
            for _ in range({mib}):
                os.write(1, block)
        """)
        # ru_maxrss of RUSAGE_CHILDREN: the largest of the wrapper and the writer, both waited for
        harness = py(f"""
            import resource, subprocess, sys
            subprocess.run({[str(ATVM_RUN), "--build-name", build, "--", *writer]!r}, stdout=subprocess.DEVNULL,
                           check=True)
            print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
        """)
        done = subprocess.run(harness, env=world.env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert world.layout(build).run().log.stat().st_size == mib * 1024 * 1024
        assert world.layout(build).run().exit.read_text() == "0\n"
        return int(done.stdout)

    small, big = peak("e2e-small", 1), peak("e2e-big", 256)
    print(f"peak resident size: {small} KiB for 1 MiB of output, {big} KiB for 256 MiB")
    assert big - small < 8 * 1024, (small, big)  # KiB


def test_bad_names_and_a_missing_command_are_refused_before_anything_is_written(world):
    before = files(world)
    for args in (["--build-name", "../x", "--", "true"], ["--build-name", "ok", "--group", "../x", "--", "true"],
                 ["--build-name", "ok", "--group", "-rf", "--", "true"], ["--build-name", "ok"],
                 ["--build-name", "ok", "--template", "t", "--", "true"]):
        done = launch(world, *args)
        assert done.returncode == 2, (args, done.stderr)
        assert b"error:" in done.stderr
    assert files(world) == before
    assert launch(world).returncode == 2 and b"Usage:" in launch(world).stderr


def test_the_commands_own_flags_are_its_own(world):
    """--group after the command (with or without '--' before it) is the command's, not the wrapper's."""
    show = py("import sys; print(' '.join(sys.argv[1:]))")
    for build, sep in (("e2e-own", ["--"]), ("e2e-own-nosep", [])):
        done = launch(world, "--build-name", build, "--no-echo", *sep, *show, "--group", "smoke", "--", "x")
        assert done.returncode == 0, done.stderr
        layout = world.layout(build)
        assert layout.run().log.read_text() == "--group smoke -- x\n"
        assert layout.run().exit.read_text() == "0\n" and not layout.group("smoke").exit.exists()


def test_a_bad_layout_setting_is_refused_before_anything_is_written(world):
    before = files(world)
    done = launch(world, "--build-name", "ok", "--", "true", env={"ATVM_EXIT_FILE": "{log_dir}/../{build}.exit"})
    assert done.returncode == 3 and b"ATVM_EXIT_FILE" in done.stderr
    assert files(world) == before


def test_a_group_writes_its_own_files_and_leaves_the_pid_file_to_the_parent(world):
    layout = world.layout("e2e-cat")
    done = launch(world, "--build-name", "e2e-cat", "--group", "linux", "--", *py("print('linux spec')"))
    assert done.returncode == 0
    g = layout.group("linux")
    assert g.exit.read_text() == "0\n" and g.log.read_text() == "linux spec\n"
    assert not layout.pid_file().exists() and not layout.run().log.exists()


def test_the_files_go_where_the_templates_say(world):
    env = {"ATVM_LOG_FILE": "{log_dir}/runs/{build}/cypress.log", "ATVM_EXIT_FILE": "{log_dir}/runs/{build}/rc",
           "ATVM_PID_FILE": "{log_dir}/runs/{build}/pid"}
    world.env.update(env)
    done = launch(world, "--build-name", "e2e-tpl", "--", *py("print('hello')"))
    assert done.returncode == 0
    folder = world.log_dir / "runs" / "e2e-tpl"
    assert sorted(p.name for p in folder.iterdir()) == ["cypress.log", "pid", "rc"]
    assert (folder / "rc").read_text() == "0\n"


FAKE_SYSTEMCTL = """\
#!/usr/bin/env python3
import json, os, sys
exit_file = os.environ["FAKE_EXIT_FILE"]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps({"argv": sys.argv[1:], "old_exit_present": os.path.exists(exit_file)}) + "\\n")
if sys.argv[1:2] == ["is-active"]:
    print("inactive")
    sys.exit(3)
"""


def test_start_watcher_starts_it_after_the_old_outcome_is_gone_and_before_the_command(world):
    build = "e2e-start"
    fakebin = world.root / "fakebin"
    fakebin.mkdir()
    (fakebin / "systemctl").write_text(FAKE_SYSTEMCTL)
    (fakebin / "systemctl").chmod(0o755)
    calls = world.root / "calls.jsonl"
    run = world.layout(build).run()
    run.exit.write_text("0\n")
    env = {"SYSTEMCTL": str(fakebin / "systemctl"), "FAKE_LOG": str(calls), "FAKE_EXIT_FILE": str(run.exit),
           "PYTHON": sys.executable, "ATVM_START_CHECK_SECONDS": "0"}
    marker = world.root / "ran-after"
    command = py(f"import os; open({str(marker)!r}, 'w').write(str(os.path.getsize({str(calls)!r})))")
    done = launch(world, "--build-name", build, "--start-watcher", "--template", "tmpl", "--scope-description",
                  "a scope", "--categorize", "--groups", "2", "--", *command, env=env)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in calls.read_text().splitlines()]
    start = [r for r in rows if r["argv"][:1] == ["start"]]
    assert start and not start[0]["old_exit_present"]
    assert int(marker.read_text()) == calls.stat().st_size  # the command ran after the unit was started
    request = json.loads((world.build_dir(build) / "request.json").read_text())
    assert (request["template"], request["scope_description"], request["categorize"], request["groups"]) == (
        "tmpl", "a scope", True, 2)


def test_start_watcher_refused_means_the_command_is_not_run(world):
    build = "e2e-finished"
    world.build_dir(build).mkdir(parents=True)
    (world.build_dir(build) / "state.json").write_text(json.dumps({"state": "COMPLETED"}))
    marker = world.root / "ran"
    done = launch(world, "--build-name", build, "--start-watcher", "--", "touch", str(marker),
                  env={"SYSTEMCTL": "/bin/true", "PYTHON": sys.executable})
    assert done.returncode == 7 and not marker.exists()
    assert b"not run" in done.stderr


def test_help(world):
    done = launch(world, "--help")
    assert done.returncode == 0 and b"--start-watcher" in done.stdout
    res = world.cli("launch", "--help")
    assert res.returncode == 0 and "--group" in res.stdout


def test_the_wrapper_does_not_need_the_watcher_running(world):
    """No systemd, no watcher: the command still runs and its evidence is complete."""
    done = launch(world, "--build-name", "e2e-alone", "--", *py("print('ok')"))
    assert done.returncode == 0 and os.path.exists(world.layout("e2e-alone").run().exit)
