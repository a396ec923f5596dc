"""The deployment in a real systemd: bundle -> installer -> unit -> helpers -> one post per run.

A minimal Debian (cached under /var/cache/atvm-watcher) boots with systemd-nspawn; the release
bundle is unpacked and installed inside exactly as INSTALL.md says; simulated ATVM runs are
launched inside, and the watcher posts to a Mattermost double on the host's 127.0.0.1 (the
container shares the host's network). Needs root and systemd-nspawn: elsewhere it skips
loudly, and under CI (env CI set) it fails instead, so CI can never pass it by skipping.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, List

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nspawn_container import Container, ContainerError, ensure_rootfs, missing_tools  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from atvm_dev.receiver import Fault, MattermostDouble  # noqa: E402

pytestmark = pytest.mark.system

PKG = "/opt/atvm-watcher-service"
DEV = "/usr/local/lib/atvm-dev"  # the simulated launcher: a development tool, so not in the bundle
WATCHER = f"{PKG}/atvm_run_watcher.py"
START = f"{PKG}/start-atvm-run-watcher.sh"
CANCEL = f"{PKG}/cancel-atvm-run-watcher.sh"
STATE_ROOT = "/var/lib/atvm-run-watcher"
AUTOMATION_ROOT = "/root/cdc-e2e-cyp-12.17.4"
REPORT_DIR = f"{AUTOMATION_ROOT}/cypress/cmcReporter"
LOG_DIR = "/tmp/.log"
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TERMINATED", "HUNG", "UNKNOWN"}
REQUEST = ["--template", "rhel-to-ubuntu", "--config-family", "fc", "--migration-style", "live",
           "--integration-plugin", "vmware", "--scope-description", "system test of the unit"]
# Short intervals: the unit's own RestartSec=15s is only shortened (drop-in) to keep this quick.
TEST_ENV = """\
MATTERMOST_ATVM_WEBHOOK={url}
MATTERMOST_ATVM_CHANNEL=atvm-e2e
ATVM_POLL_SECONDS=0.2
ATVM_GONE_GRACE_SECONDS=1
ATVM_SETTLE_SECONDS=0.2
ATVM_START_TIMEOUT_SECONDS=120
ATVM_HUNG_AFTER_SECONDS=600
ATVM_POST_TIMEOUT_SECONDS=10
ATVM_POST_ATTEMPTS=2
ATVM_POST_BACKOFF_SECONDS=0.2
"""
FAST_RESTART = "[Service]\nRestartSec=1s\n"
LEGACY_BUILD = "legacy-build-rhel8"
LEGACY_UNIT = """\
[Service]
ExecStart=/usr/bin/python3 /root/atvm-watcher-service/atvm_run_watcher.py --build-name %I
"""


def _cannot_run(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"system test cannot run under CI: {reason}", pytrace=False)
    pytest.skip(f"SYSTEM TEST NOT RUN (the unit is untested in a real systemd): {reason}")


def wait_until(what: str, probe: Callable[[], object], timeout: float = 30.0, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


# --- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def receiver():
    with MattermostDouble() as double:
        yield double


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run([str(REPO / "tools" / "make-bundle.sh"), "--out", str(out), "--version", "e2e"],
                          capture_output=True, text=True, check=True)
    return Path(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def box(request, tmp_path_factory):
    """A booted container with the bundle installed and configured; always shut down after."""
    if os.geteuid() != 0:
        _cannot_run("needs root (systemd-nspawn)")
    if missing_tools():
        _cannot_run(f"missing {', '.join(missing_tools())} (apt-get install systemd-container debootstrap)")
    try:
        rootfs = ensure_rootfs()
    except ContainerError as exc:
        _cannot_run(f"cannot build the Debian root filesystem: {exc}")
    receiver, bundle = request.getfixturevalue("receiver"), request.getfixturevalue("bundle")
    container = Container(rootfs, tmp_path_factory.mktemp("nspawn") / "console.log")
    try:
        container.boot()
        install_bundle(container, bundle, receiver.url)
        yield container
    finally:
        container.shutdown()


def make_legacy_install(box: Container) -> None:
    """The old way: code under /root, a unit running it, one watcher alive."""
    box.write_file("/root/atvm-watcher-service/atvm_run_watcher.py", "import time\nwhile True:\n    time.sleep(1)\n")
    box.write_file("/etc/systemd/system/atvm-run-watcher@.service", LEGACY_UNIT)
    box.run("systemctl", "daemon-reload")
    box.run("systemctl", "start", unit_of(box, LEGACY_BUILD))


def install_bundle(box: Container, bundle: Path, url: str) -> None:
    """What INSTALL.md tells an operator to do, then the test's own settings."""
    make_legacy_install(box)
    box.run("mkdir", "-p", "/root/bundle")
    box.run("tar", "-xzf", "-", "-C", "/root/bundle", input=bundle.read_bytes())
    done = box.run("/root/bundle/atvm-watcher-e2e/deploy/install.sh", timeout=120)
    assert "validating" in done.stdout, done.stdout
    box.install_output = done.stdout  # type: ignore[attr-defined]
    box.sh(f"mkdir -p {LOG_DIR} {REPORT_DIR}")  # /tmp is a fresh tmpfs after boot
    for name in ("__init__.py", "simulate.py"):
        box.run("install", "-D", "-m", "0644", "/dev/stdin", f"{DEV}/atvm_dev/{name}",
                input=(REPO / "atvm_dev" / name).read_bytes())
    box.write_file("/etc/atvm-run-watcher.env", TEST_ENV.format(url=url), mode="0600")
    box.write_file("/etc/systemd/system/atvm-run-watcher@.service.d/zz-test-fast-restart.conf", FAST_RESTART)
    box.run("systemctl", "daemon-reload")


# --- helpers ------------------------------------------------------------------------------------
def unit_of(box: Container, build: str) -> str:
    return box.run("systemd-escape", "--template=atvm-run-watcher@.service", "--", build).stdout.strip()


def start_watcher(box: Container, build: str, *extra: str) -> subprocess.CompletedProcess:
    return box.run(START, "--build-name", build, *REQUEST, *extra, check=False)


def launch_run(box: Container, build: str, *args: str) -> str:
    """The simulated launcher as its own transient unit, like a real run started from a shell."""
    sim_unit = f"atvm-sim-{abs(hash(build)) % 10**8}"
    # PYTHONPATH: the simulator takes the run layout from the installed atvm_watcher package.
    box.run("systemd-run", "--quiet", "--collect", f"--unit={sim_unit}", f"--setenv=PYTHONPATH={PKG}", "--",
            "python3", f"{DEV}/atvm_dev/simulate.py", "--build-name", build, "--log-dir", LOG_DIR,
            "--report-dir", REPORT_DIR, "--step-seconds", "0.3", *args)
    return sim_unit


def posts_for(receiver: MattermostDouble, build: str) -> List[dict]:
    return [p for p in receiver.posts if build in json.dumps(p)]


def state_of(box: Container, build: str) -> dict:
    text = box.read_file(f"{STATE_ROOT}/{build}/state.json")
    return json.loads(text) if text else {}


def wait_unit_done(box: Container, unit: str, timeout: float = 30.0) -> dict:
    names = ["ActiveState", "SubState", "Result", "ExecMainStatus", "NRestarts"]

    def settled():
        props = box.unit_props(unit, names)
        # auto-restart counts as "activating": only a unit that stays down is done
        return props if props.get("ActiveState") in ("inactive", "failed") else None

    return wait_until(f"{unit} to stop", settled, timeout=timeout)


def journal_of(box: Container, build: str) -> str:
    return box.run("journalctl", "-b", "0", "--no-pager", "-o", "cat", f"ATVM_BUILD={build}").stdout


# --- tests --------------------------------------------------------------------------------------
def test_installed_layout_and_check_pass(box):
    check = box.run("python3", WATCHER, "check", check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    modes = box.run("stat", "-c", "%a %U %n", WATCHER, START, CANCEL, "/etc/atvm-run-watcher.env").stdout
    assert modes.split("\n")[:4] == [f"755 root {WATCHER}", f"755 root {START}", f"755 root {CANCEL}",
                                     "600 root /etc/atvm-run-watcher.env"]
    assert box.run("systemctl", "cat", "atvm-run-watcher@.service").returncode == 0
    assert box.run(START, "--help").returncode == 0
    # precompiled: the unit's read-only /opt cannot take caches later
    assert box.sh(f"ls {PKG}/atvm_watcher/__pycache__/ | grep -c '\\.pyc$'").stdout.strip() != "0"


def test_legacy_install_was_stopped_and_kept_as_a_backup(box):
    legacy_unit = unit_of(box, LEGACY_BUILD)
    assert legacy_unit in box.install_output  # listed, to be started again
    assert box.unit_props(legacy_unit, ["ActiveState"])["ActiveState"] in ("inactive", "failed")
    listing = box.run("ls", "/root").stdout.split()
    assert "atvm-watcher-service" not in listing
    assert [n for n in listing if n.startswith("atvm-watcher-service.bak-")], listing
    unit = box.run("systemctl", "cat", "atvm-run-watcher@.service").stdout
    assert f"{PKG}/atvm_run_watcher.py" in unit and "/root/atvm-watcher-service" not in unit


def test_started_run_posts_once_and_unit_ends_inactive(box, receiver):
    build = "e2e-redhat9.6-ubuntu24.04-w2k25-fc"  # '-' would become '/' with %i: proves %I
    unit = unit_of(box, build)
    started = start_watcher(box, build)
    assert started.returncode == 0, started.stdout + started.stderr
    assert unit in started.stdout and f"journalctl -u '{unit}' -f" in started.stdout
    launch_run(box, build)

    assert receiver.wait_for_posts(1, timeout=60) and wait_until("the post", lambda: posts_for(receiver, build))
    props = wait_unit_done(box, unit)
    assert (props["ActiveState"], props["Result"], props["NRestarts"]) == ("inactive", "success", "0"), props
    assert len(posts_for(receiver, build)) == 1
    assert state_of(box, build)["state"] == "COMPLETED"
    assert box.run("test", "-e", f"{STATE_ROOT}/{build}/posted.marker", check=False).returncode == 0


def test_restarting_a_finished_build_posts_nothing(box, receiver):
    build = "e2e-redhat9.6-ubuntu24.04-w2k25-fc"
    unit = unit_of(box, build)
    if not posts_for(receiver, build):
        pytest.skip("needs the finished run of the previous test")
    box.run("systemctl", "start", unit)
    props = wait_unit_done(box, unit)
    assert (props["ActiveState"], props["Result"]) == ("inactive", "success"), props
    assert len(posts_for(receiver, build)) == 1


def test_journal_carries_the_build_name(box):
    build = "e2e-redhat9.6-ubuntu24.04-w2k25-fc"
    lines = wait_until("journal lines with ATVM_BUILD", lambda: journal_of(box, build).strip(), timeout=10)
    assert lines


def test_categorized_run_posts_once_per_group(box, receiver):
    build = "e2e-cat-sles15-w2k22-lnx"
    unit = unit_of(box, build)
    started = start_watcher(box, build, "--categorize")
    assert started.returncode == 0, started.stdout + started.stderr
    launch_run(box, build, "--group", "linux:pass", "--group", "windows:fail")

    wait_until("two group posts", lambda: len(posts_for(receiver, build)) >= 2, timeout=60)
    props = wait_unit_done(box, unit)
    assert (props["ActiveState"], props["Result"]) == ("inactive", "success"), props
    posts = posts_for(receiver, build)
    assert len(posts) == 2
    assert "linux" in json.dumps(posts[0]) and "windows" in json.dumps(posts[1])
    assert state_of(box, build)["state"] in TERMINAL


def test_cancelled_run_posts_nothing(box, receiver):
    build = "e2e-cancel-rhel8-w2k19"
    unit = unit_of(box, build)
    assert start_watcher(box, build).returncode == 0
    sim_unit = launch_run(box, build, "--hang")
    wait_until("the watcher to see the run", lambda: state_of(box, build).get("state") not in (None, ""))

    again = start_watcher(box, build)
    assert again.returncode == 6 and "already" in again.stdout, again.stdout + again.stderr

    cancelled = box.run(CANCEL, "--build-name", build)
    # The marker comes first; the watcher may see it and exit by itself before the helper stops it.
    assert "Stopped" in cancelled.stdout or "not running" in cancelled.stdout, cancelled.stdout
    props = wait_unit_done(box, unit)
    assert props["ActiveState"] == "inactive", props  # stopped on purpose: not "failed"
    box.run("systemctl", "stop", sim_unit, check=False)
    assert state_of(box, build)["state"] == "CANCELLED"
    assert box.run("test", "-e", f"{STATE_ROOT}/{build}/cancelled.marker", check=False).returncode == 0
    assert posts_for(receiver, build) == []


def test_install_md_smoke_test(box, receiver):
    """INSTALL.md step 5: a fake build started and cancelled, an already-finished build inspected."""
    fake = "smoke-test-do-not-post"
    assert start_watcher(box, fake).returncode == 0
    wait_until("the fake build's watcher", lambda: state_of(box, fake).get("state"))
    assert journal_of(box, fake).strip()
    out = box.run(CANCEL, "--build-name", fake).stdout
    assert "cancelled build" in out and ("Stopped" in out or "not running" in out), out
    assert "CANCELLED" in box.run("python3", WATCHER, "status", "--build-name", fake).stdout
    assert wait_unit_done(box, unit_of(box, fake))["ActiveState"] == "inactive"

    finished = "e2e-finished-before-watch-ol9"
    sim = launch_run(box, finished, "--outcome", "fail")
    wait_until("the run to end", lambda: box.unit_props(sim, ["ActiveState"]).get("ActiveState") != "active")
    assert "FAILED" in box.run("python3", WATCHER, "inspect", "--build-name", finished).stdout
    dry = box.run("python3", WATCHER, "watch", "--build-name", finished, "--dry-run", *REQUEST, check=False)
    assert dry.returncode == 0 and "FAILED" in dry.stdout, dry.stdout + dry.stderr
    assert posts_for(receiver, fake) == [] and posts_for(receiver, finished) == []

    again = start_watcher(box, "e2e-redhat9.6-ubuntu24.04-w2k25-fc")  # watched and posted earlier
    assert again.returncode == 7 and "--rerun" in again.stdout, again.stdout + again.stderr


def test_sigkill_after_the_post_is_restarted_and_never_posts_twice(box, receiver):
    """The post is made, the answer is late, the watcher dies: the restarted one must not resend."""
    build = "e2e-sigkill-ubuntu22.04-w2k16"
    unit = unit_of(box, build)
    receiver.queue(Fault.post_then_delay(4.0))
    assert start_watcher(box, build).returncode == 0
    launch_run(box, build)

    wait_until("the post", lambda: posts_for(receiver, build), timeout=60)
    pid = box.unit_props(unit, ["MainPID"])["MainPID"]
    assert pid != "0"
    box.sh(f"kill -9 {shlex.quote(pid)}")  # minbase has no /usr/bin/kill

    wait_until("systemd to restart the watcher",
               lambda: int(box.unit_props(unit, ["NRestarts"])["NRestarts"] or 0) >= 1, timeout=20)
    props = wait_unit_done(box, unit)
    # at-most-once: the restarted watcher finds the sent-but-unconfirmed post and does not resend;
    # it ends either done (0) or reporting the uncertain delivery (5), which is never restarted.
    assert props["ExecMainStatus"] in ("0", "5"), props
    assert props["NRestarts"] == "1", props
    assert len(posts_for(receiver, build)) == 1


def test_start_helper_refuses_a_configuration_that_cannot_post(box, receiver):
    """An empty webhook: the helper says why and how to fix it, and records and starts nothing."""
    build = "e2e-nowebhook-rhel9-w2k25"
    unit = unit_of(box, build)
    box.write_file("/etc/atvm-run-watcher.env", TEST_ENV.format(url=""), mode="0600")
    try:
        refused = start_watcher(box, build)
        assert refused.returncode == 3, refused.stdout + refused.stderr
        assert "MATTERMOST_ATVM_WEBHOOK is not set" in refused.stderr and "sudoedit /etc/atvm-run-watcher.env" in \
            refused.stderr and "Not started" in refused.stderr
        assert "Started" not in refused.stdout
        assert box.unit_props(unit, ["ActiveState"])["ActiveState"] == "inactive"
        assert box.run("test", "-e", f"{STATE_ROOT}/{build}", check=False).returncode != 0  # nothing recorded
        box.write_file("/etc/atvm-run-watcher.env", TEST_ENV.format(url=receiver.url), mode="0644")
        unsafe = start_watcher(box, build)
        assert unsafe.returncode == 3 and "refused (mode 0644)" in unsafe.stderr, unsafe.stderr
    finally:
        box.write_file("/etc/atvm-run-watcher.env", TEST_ENV.format(url=receiver.url), mode="0600")


def test_configuration_error_is_not_restarted(box):
    """A setting only the unit sees (a drop-in): the helper reports the unit that failed at once."""
    build = "e2e-badconfig-rhel9-w2k25"
    unit = unit_of(box, build)
    box.write_file(f"/etc/systemd/system/{unit}.d/bad.conf", "[Service]\nEnvironment=ATVM_DELIVERY=sometimes\n")
    box.run("systemctl", "daemon-reload")
    try:
        started = start_watcher(box, build)
        assert started.returncode == 1 and "Started" not in started.stdout, started.stdout + started.stderr
        assert f"{unit} failed at once (exit status 3); read why with: journalctl -u '{unit}'" in started.stderr
        props = wait_unit_done(box, unit)
        assert (props["ActiveState"], props["ExecMainStatus"], props["NRestarts"]) == ("failed", "3", "0"), props
        said = box.run("journalctl", "-b", "0", "--no-pager", "-o", "cat", "-u", unit).stdout
        assert "ATVM_DELIVERY" in said  # where the helper pointed: it says why
    finally:
        box.run("rm", "-rf", f"/etc/systemd/system/{unit}.d")
        box.run("systemctl", "daemon-reload")


def test_a_quiet_watcher_rests_under_the_units_sandbox_and_posts_once(box, receiver):
    """The unit's system-call filter and MemoryDenyWriteExecute allow what waiting needs: inotify (ctypes), the
    launcher's pidfd, memfd_create and exec() of the light waiter (rest.py) in the same process."""
    build = "e2e-rest-rhel9-w2k22"
    unit = unit_of(box, build)
    box.write_file(f"/etc/systemd/system/{unit}.d/rest.conf", "[Service]\nEnvironment=ATVM_REST_AFTER_SECONDS=1\n")
    box.run("systemctl", "daemon-reload")
    try:
        started = start_watcher(box, build)
        assert started.returncode == 0, started.stdout + started.stderr
        main_pid = box.unit_props(unit, ["MainPID"])["MainPID"]
        launch_run(box, build, "--step-seconds", "2.5")

        def resting():
            cmd = box.run("cat", f"/proc/{main_pid}/cmdline", check=False).stdout
            return "resting" in cmd and "--spec-fd=" in cmd and f"--build-name={build}" in cmd
        wait_until("the watcher to rest", resting, timeout=30, every=0.2)
        assert box.unit_props(unit, ["MainPID"])["MainPID"] == main_pid  # the same process: systemd sees no change
        wait_until("the post", lambda: posts_for(receiver, build), timeout=60)
        props = wait_unit_done(box, unit)
        assert (props["ActiveState"], props["Result"], props["NRestarts"]) == ("inactive", "success", "0"), props
        assert len(posts_for(receiver, build)) == 1
        said = journal_of(box, build)
        assert "waiting on file events (inotify)" in said and "resting (the same process" in said, said
        assert "cannot rest" not in said and "polling every" not in said, said
    finally:
        box.run("rm", "-rf", f"/etc/systemd/system/{unit}.d")
        box.run("systemctl", "daemon-reload")


def test_a_crash_loop_trips_the_start_limit(box):
    """Exit 75 (retryable) for ever must end in a failed unit, not restart for ever."""
    build = "e2e-crashloop-rhel7-w2k12"
    unit = unit_of(box, build)
    box.write_file(f"/etc/systemd/system/{unit}.d/loop.conf",
                   "[Service]\nExecStart=\nExecStart=/bin/sh -c 'exit 75'\n")
    box.run("systemctl", "daemon-reload")
    try:
        box.run("systemctl", "start", unit, check=False)
        props = wait_unit_done(box, unit)  # "activating (auto-restart)" until the limit trips
        assert (props["ActiveState"], props["ExecMainStatus"], props["NRestarts"]) == ("failed", "75", "5"), props
        log = box.run("journalctl", "-b", "0", "--no-pager", "-u", unit).stdout
        assert "Start request repeated too quickly" in log
    finally:
        box.run("rm", "-rf", f"/etc/systemd/system/{unit}.d")
        box.run("systemctl", "daemon-reload")
        box.run("systemctl", "reset-failed", unit, check=False)
