"""A fleet of two controllers, driven by Ansible from the host: install, runs, status, metrics.

Two Debian containers boot with systemd (each on its own writable copy of a cached root
filesystem that has an SSH server) and run sshd on their own port of 127.0.0.1 (they share the
host's network). `ansible-playbook` on the host runs deploy/ansible/install.yml over SSH with a
key made here, the webhook coming from an Ansible Vault file; a run is started on each
controller and must give exactly one post at the Mattermost double on the host's 127.0.0.1;
deploy/ansible/status.yml prints the fleet table; the metrics timer's service writes its file,
which a real node_exporter on the host reads; a second run of the role changes nothing; the
webhook never appears in Ansible's output.

Needs root, systemd-nspawn and ansible-playbook: elsewhere it skips loudly, and under CI it fails.
Runs by itself with:  python3 -m pytest -q -p no:cacheprovider tests/system/test_fleet.py
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(REPO))
from needed import need_tool  # noqa: E402
from nspawn_container import Container, ContainerError, WritableCopy, ensure_ssh_rootfs, missing_tools  # noqa: E402
from test_metrics import free_port, parse, scrape_node_exporter, series  # noqa: E402
from test_systemd_e2e import (  # noqa: E402
    CANCEL,
    LEGACY_BUILD,
    LOG_DIR,
    PKG,
    REPORT_DIR,
    REQUEST,
    START,
    TEST_ENV,
    WATCHER,
    _cannot_run,
    bundle,  # noqa: F401 - the module's bundle fixture
    make_legacy_install,
    posts_for,
    state_of,
    unit_of,
    wait_unit_done,
    wait_until,
)

from atvm_dev.receiver import MattermostDouble  # noqa: E402

pytestmark = pytest.mark.system

ANSIBLE_DIR = REPO / "deploy" / "ansible"
SIMULATOR = REPO / "atvm_dev" / "simulate.py"  # a development tool: copied in, never installed
SIMULATOR_INSIDE = "/usr/local/lib/atvm-dev/simulate.py"
HOOK_ID = "atvmfleethooksecret5b2d8e61c4"  # the secret part of the URL: must never reach Ansible's output
BUNDLE_DIR = "/root/atvm-watcher-bundles"
TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"  # as Debian's prometheus-node-exporter makes it
EDITED_INVENTORY = "| Token | VM |\n|---|---|\n| sles15 | lab-sles15-src |\n"
OPERATOR_NOTE = "# edited by hand on this controller\n"
BUILDS = {"atvm-ctl-1": ("e2e-fleet-rhel9.6-w2k25", "pass"), "atvm-ctl-2": ("e2e-fleet-sles15-w2k22", "fail")}
LIVE_BUILD = "e2e-fleet-live-ol9"  # stays running on atvm-ctl-1: its watcher is alive


@dataclass
class Controller:
    name: str
    port: int
    copy: WritableCopy
    box: Container


@dataclass
class Fleet:
    tmp: Path
    controllers: Dict[str, Controller]
    env: Dict[str, str]
    outputs: List[str] = field(default_factory=list)  # every Ansible output, scanned for the secret
    first_install: Optional[subprocess.CompletedProcess] = None

    def playbook(self, name: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        cmd = [need_tool("ansible-playbook"), "-i", str(self.tmp / "inventory.yml"), str(ANSIBLE_DIR / name),
               *args]
        done = subprocess.run(cmd, cwd=self.tmp, env=self.env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        self.outputs.append(done.stdout + done.stderr)
        assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
        return done

    def install(self) -> subprocess.CompletedProcess:
        # -v and --diff: what the operator could see; the webhook must not be in it
        return self.playbook("install.yml", "-v", "--diff", "-e", "@secrets.yml",
                             "--vault-password-file", "vault-password")


def recap(output: str) -> Dict[str, Dict[str, int]]:
    """PLAY RECAP lines: {host: {"ok": n, "changed": n, ...}}."""
    out = {}
    for m in re.finditer(r"^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$", output, re.MULTILINE):
        out[m.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
    return out


def wait_for_port(port: int, timeout: float = 30) -> None:
    def accepting() -> bool:
        with socket.socket() as s:
            s.settimeout(1)
            return s.connect_ex(("127.0.0.1", port)) == 0

    wait_until(f"sshd on 127.0.0.1:{port}", accepting, timeout=timeout)


def put(root: Path, path: str, text: str, mode: int = 0o644) -> None:
    """A file in a container's tree before it boots."""
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    target.chmod(mode)


# --- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def receiver():
    with MattermostDouble(hook_id=HOOK_ID) as double:
        yield double


@pytest.fixture(scope="module")
def fleet(request, tmp_path_factory, receiver, bundle):  # noqa: F811 - bundle is the imported fixture
    if os.geteuid() != 0:
        _cannot_run("needs root (systemd-nspawn)")
    if missing_tools():
        _cannot_run(f"missing {', '.join(missing_tools())} (bash tools/install-test-deps.sh)")
    for name in ("ssh", "ssh-keygen", "ansible-playbook", "ansible-vault"):
        need_tool(name)
    try:
        rootfs = ensure_ssh_rootfs()
    except (ContainerError, subprocess.CalledProcessError) as exc:
        _cannot_run(f"cannot build the Debian root filesystem with sshd: {exc}")
    tmp = tmp_path_factory.mktemp("fleet")
    subprocess.run([need_tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C", "atvm-fleet-test",
                    "-f", str(tmp / "key")], check=True)
    settings = {k: v for k, v in (line.split("=", 1) for line in TEST_ENV.splitlines()) if k.startswith("ATVM_")}

    controllers: Dict[str, Controller] = {}
    try:
        for name in BUILDS:
            port = free_port()
            copy = WritableCopy(rootfs, tmp / name)
            controllers[name] = Controller(name, port, copy, Container(copy.root, tmp / f"{name}.console.log",
                                                                       machine=name, volatile=False))
            put(copy.root, "/etc/hostname", f"{name}\n")  # the cached tree has the host's name
            put(copy.root, "/root/.ssh/authorized_keys", (tmp / "key.pub").read_text(), 0o600)
            (copy.root / "root/.ssh").chmod(0o700)
            put(copy.root, "/etc/ssh/sshd_config.d/atvm-fleet-test.conf",
                f"Port {port}\nListenAddress 127.0.0.1\nPasswordAuthentication no\n")
            (copy.root / TEXTFILE_DIR.lstrip("/")).mkdir(parents=True)
        # atvm-ctl-2 was set up by hand before: its own env file (too open) and the lab's inventory
        ctl2 = controllers["atvm-ctl-2"].copy.root
        put(ctl2, "/etc/atvm-run-watcher.env", OPERATOR_NOTE + TEST_ENV.format(url=receiver.url), 0o644)
        put(ctl2, f"{PKG}/vm-inventory.md", EDITED_INVENTORY)

        for c in controllers.values():
            c.box.boot()
            c.box.sh(f"mkdir -p {LOG_DIR} {REPORT_DIR}")  # /tmp is a fresh tmpfs after boot
            c.box.write_file(SIMULATOR_INSIDE, SIMULATOR.read_text())
        make_legacy_install(controllers["atvm-ctl-1"].box)
        for c in controllers.values():
            wait_for_port(c.port)

        inventory = {"atvm_controllers": {
            "hosts": {name: {"ansible_port": c.port} for name, c in controllers.items()},
            "vars": {"ansible_host": "127.0.0.1", "ansible_user": "root",
                     "ansible_ssh_private_key_file": str(tmp / "key"),
                     "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
                     "ansible_python_interpreter": "/usr/bin/python3",
                     "atvm_watcher_bundle": str(bundle), "atvm_watcher_channel": "atvm-e2e",
                     "atvm_watcher_settings": settings, "atvm_watcher_metrics": True}}}
        inventory["atvm_controllers"]["hosts"]["atvm-ctl-2"]["atvm_watcher_manage_env_file"] = False
        (tmp / "inventory.yml").write_text(json.dumps(inventory, indent=2))
        env = {**os.environ, "LC_ALL": "C.UTF-8",  # Ansible refuses to run without a UTF-8 locale
               "ANSIBLE_HOST_KEY_CHECKING": "False", "ANSIBLE_PIPELINING": "True",
               "ANSIBLE_NOCOLOR": "1", "ANSIBLE_RETRY_FILES_ENABLED": "False", "ANSIBLE_HOME": str(tmp / "ansible"),
               "ANSIBLE_LOCAL_TEMP": str(tmp / "ansible" / "tmp"), "ANSIBLE_SSH_CONTROL_PATH_DIR": str(tmp / "cp")}
        (tmp / "vault-password").write_text("fleet-test-vault-password\n")
        (tmp / "secrets.yml").write_text(f"atvm_watcher_webhook: {receiver.url}\n")
        subprocess.run([need_tool("ansible-vault"), "encrypt", "--vault-password-file", "vault-password",
                        "secrets.yml"], cwd=tmp, env=env, check=True, capture_output=True)
        assert HOOK_ID not in (tmp / "secrets.yml").read_text()

        fleet = Fleet(tmp, controllers, env)
        fleet.first_install = fleet.install()
        yield fleet
    finally:
        for c in controllers.values():
            try:
                c.box.shutdown()
            finally:
                c.copy.release()


def start_run(box: Container, build: str, *args: str) -> None:
    """The start helper, as an operator runs it, then the simulated launcher as its own unit."""
    started = box.run(START, "--build-name", build, *REQUEST, check=False)
    assert started.returncode == 0, started.stdout + started.stderr
    box.run("systemd-run", "--quiet", "--collect", f"--unit=atvm-sim-{build}", f"--setenv=PYTHONPATH={PKG}", "--",
            "python3", SIMULATOR_INSIDE, "--build-name", build, "--log-dir", LOG_DIR, "--report-dir", REPORT_DIR,
            "--step-seconds", "0.3", *args)


# --- tests --------------------------------------------------------------------------------------
def test_the_role_installs_every_controller_as_the_installer_does(fleet, receiver):
    assert all(r["changed"] > 0 and r["failed"] == 0 for r in recap(fleet.first_install.stdout).values()), (
        fleet.first_install.stdout[-3000:])
    assert set(recap(fleet.first_install.stdout)) == set(BUILDS)
    for name, c in fleet.controllers.items():
        box = c.box
        check = box.run("python3", WATCHER, "check", check=False)
        assert check.returncode == 0, check.stdout + check.stderr
        assert box.run("stat", "-c", "%a %U", "/etc/atvm-run-watcher.env").stdout.split() == ["600", "root"]
        assert box.run("test", "-x", f"{BUNDLE_DIR}/atvm-watcher-e2e/deploy/install.sh", check=False).returncode == 0
        assert box.run("systemctl", "is-enabled", "atvm-watcher-metrics.timer").stdout.strip() == "enabled"
        assert box.run("systemctl", "is-active", "atvm-watcher-metrics.timer").stdout.strip() == "active"
        assert box.run("systemctl", "cat", "atvm-run-watcher@.service").returncode == 0, name

    ctl1, ctl2 = fleet.controllers["atvm-ctl-1"].box, fleet.controllers["atvm-ctl-2"].box
    # atvm-ctl-1: env file written from the variables (the webhook from the vault); legacy replaced
    env1 = ctl1.read_file("/etc/atvm-run-watcher.env")
    assert f"MATTERMOST_ATVM_WEBHOOK={receiver.url}\n" in env1 and "ATVM_POLL_SECONDS=0.2\n" in env1
    assert [n for n in ctl1.run("ls", "/root").stdout.split() if n.startswith("atvm-watcher-service.bak-")]
    assert ctl1.unit_props(unit_of(ctl1, LEGACY_BUILD), ["ActiveState"])["ActiveState"] in ("inactive", "failed")
    # atvm-ctl-2: the operator's env file and inventory kept; only the env file's mode fixed
    assert ctl2.read_file("/etc/atvm-run-watcher.env") == OPERATOR_NOTE + TEST_ENV.format(url=receiver.url)
    assert ctl2.read_file(f"{PKG}/vm-inventory.md") == EDITED_INVENTORY
    assert "fixed permissions of /etc/atvm-run-watcher.env: 644 -> 600" in fleet.first_install.stdout


def test_each_controller_posts_once_per_run(fleet, receiver):
    for name, (build, outcome) in BUILDS.items():
        start_run(fleet.controllers[name].box, build, "--outcome", outcome)
    start_run(fleet.controllers["atvm-ctl-1"].box, LIVE_BUILD, "--hang")

    for name, (build, outcome) in BUILDS.items():
        box = fleet.controllers[name].box
        wait_until(f"the post for {build}", lambda b=build: posts_for(receiver, b), timeout=90)
        props = wait_unit_done(box, unit_of(box, build), timeout=60)
        assert (props["ActiveState"], props["Result"]) == ("inactive", "success"), props
        assert state_of(box, build)["state"] == {"pass": "COMPLETED", "fail": "FAILED"}[outcome]
        posts = posts_for(receiver, build)
        assert len(posts) == 1 and name in json.dumps(posts[0]), posts  # the controller's hostname is in it
    assert posts_for(receiver, LIVE_BUILD) == []


def test_the_fleet_status_is_one_table(fleet):
    ctl1 = fleet.controllers["atvm-ctl-1"].box
    wait_until("the live run's watcher", lambda: state_of(ctl1, LIVE_BUILD).get("state") == "RUNNING", timeout=60)
    out = fleet.playbook("status.yml").stdout
    lines = [json.loads(m) for m in re.findall(r'^\s+("(?:[^"\\]|\\.)*"),?$', out, re.MULTILINE)]
    header = lines[0].split()
    assert header == ["CONTROLLER", "BUILD", "STATE", "SUB-RUNS", "DELIVERY", "LIVE", "WATCHER"], out
    rows = {(r.split()[0], r.split()[1]): r.split()[2:] for r in lines[1:]}
    rhel, sles = BUILDS["atvm-ctl-1"][0], BUILDS["atvm-ctl-2"][0]
    assert rows[("atvm-ctl-1", rhel)] == ["COMPLETED", "-", "posted", "-"], lines
    assert rows[("atvm-ctl-2", sles)] == ["FAILED", "-", "posted", "-"], lines
    live = rows[("atvm-ctl-1", LIVE_BUILD)]
    assert live[:3] == ["RUNNING", "-", "-"], lines
    assert live[3] == "pid" and live[4].isdigit(), lines  # its watcher is alive
    assert set(rows) == {("atvm-ctl-1", rhel), ("atvm-ctl-1", LIVE_BUILD), ("atvm-ctl-2", sles)}, lines
    assert recap(out)["atvm-ctl-1"]["changed"] == 0


def test_the_metrics_timer_output_reaches_node_exporter(fleet):
    c = fleet.controllers["atvm-ctl-1"]
    prom = c.copy.root / TEXTFILE_DIR.lstrip("/") / "atvm_watcher.prom"
    # the timer ran once when the role enabled it; its service now writes the current state
    wait_until("the timer's first file", prom.exists, timeout=30)
    c.box.run("systemctl", "start", "atvm-watcher-metrics.service")
    assert c.box.unit_props("atvm-watcher-metrics.service", ["Result"])["Result"] == "success"
    assert c.box.run("stat", "-c", "%a", f"{TEXTFILE_DIR}/atvm_watcher.prom").stdout.strip() == "644"

    families = parse(scrape_node_exporter(prom.parent))
    rhel = BUILDS["atvm-ctl-1"][0]
    assert series(families, "run_state", build=rhel, group="", state="COMPLETED") == 1
    assert series(families, "delivery", build=rhel, group="", delivery="posted") == 1
    assert series(families, "run_state", build=LIVE_BUILD, group="", state="RUNNING") == 1
    assert series(families, "watcher_alive", build=LIVE_BUILD) == 1 and series(families, "live_watchers") == 1
    assert series(families, "last_post_timestamp_seconds", build=rhel, group="") > time.time() - 600


def test_a_second_run_of_the_role_changes_nothing(fleet):
    ctl1 = fleet.controllers["atvm-ctl-1"].box
    pid_before = ctl1.unit_props(unit_of(ctl1, LIVE_BUILD), ["MainPID"])["MainPID"]
    again = fleet.install()
    assert {h: (r["changed"], r["failed"]) for h, r in recap(again.stdout).items()} == {h: (0, 0) for h in BUILDS}, (
        again.stdout[-4000:])
    assert "install: result: unchanged" in again.stdout and "install: result: changed" not in again.stdout
    # the running watcher was left alone
    assert ctl1.unit_props(unit_of(ctl1, LIVE_BUILD), ["MainPID"])["MainPID"] == pid_before != "0"
    ctl1.run(CANCEL, "--build-name", LIVE_BUILD)
    ctl1.run("systemctl", "stop", f"atvm-sim-{LIVE_BUILD}", check=False)


def test_the_webhook_never_appears_in_ansible_output(fleet, receiver):
    assert len(fleet.outputs) >= 3  # two installs with -v, one status
    for output in fleet.outputs:
        assert HOOK_ID not in output
    assert receiver.url.rsplit("/", 1)[-1] == HOOK_ID
