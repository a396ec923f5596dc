"""Deployment files: shell scripts lint clean, the unit verifies and is hardened, the installer
converges on the right tree (staged into a folder with a recording fake systemctl), and the
helpers drive systemctl and the watcher CLI the way the contract says.

The same pieces run for real, in a booted systemd, in tests/system/test_systemd_e2e.py.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, List

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from needed import need_tool  # noqa: E402

from atvm_watcher.vocab import RESTART_PREVENTED, RESTARTED  # noqa: E402

UNIT = REPO / "deploy" / "atvm-run-watcher@.service"
METRICS_UNITS = ("atvm-watcher-metrics.service", "atvm-watcher-metrics.timer")
INSTALL = REPO / "deploy" / "install.sh"
START = REPO / "start-atvm-run-watcher.sh"
CANCEL = REPO / "cancel-atvm-run-watcher.sh"
BUNDLE = REPO / "tools" / "make-bundle.sh"
ATVM_RUN = REPO / "atvm-run.sh"
INSTANCE = "atvm-run-watcher@e2e\\x2dredhat9.6\\x2dubuntu24.04\\x2dw2k25\\x2dfc.service"
EXPOSURE_THRESHOLD = 2.5  # systemd-analyze's scale: 0 (locked down) .. 10 (exposed)
SECRET = "https://mattermost.example.invalid/hooks/s3cr3tTOKENvalue"


def unit_settings(text: str) -> Dict[str, List[str]]:
    """Every Key=value of a unit file, in order (a key may repeat)."""
    out: Dict[str, List[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, value = line.split("=", 1)
            out.setdefault(key.strip(), []).append(value.strip())
    return out


# --- fakes --------------------------------------------------------------------------------------
FAKE_SYSTEMCTL = textwrap.dedent(
    """\
    #!/usr/bin/env python3
    # Records each call; answers from a JSON file: {"active": {unit: ExecStart text}, "is_active": state,
    # "unit": {property: value} for the unit the start helper started}
    import json, os, sys
    args = sys.argv[1:]
    with open(os.environ["FAKE_LOG"], "a") as log:
        log.write(json.dumps(["systemctl"] + args) + "\\n")
    world = json.load(open(os.environ["FAKE_WORLD"])) if os.path.exists(os.environ["FAKE_WORLD"]) else {}
    active = world.get("active", {})
    if args[:1] == ["list-units"]:
        for unit in active:
            print(f"{unit} loaded active running ATVM run watcher")
    elif args[:1] == ["show"] and args[1].startswith("--property=ActiveState"):
        unit = {"ActiveState": "active", "SubState": "running", "ExecMainStatus": "0", **world.get("unit", {})}
        print("\\n".join(f"{k}={v}" for k, v in unit.items()))
    elif args[:1] == ["show"]:
        print(active.get(args[-1], ""))
    elif args[:1] == ["is-active"]:
        state = world.get("is_active", "inactive")
        print(state)
        sys.exit(0 if state == "active" else 3)
    elif args[:1] == ["stop"]:
        sys.exit(world.get("stop_rc", 0))
    """
)

FAKE_PYTHON = textwrap.dedent(
    """\
    #!/usr/bin/env python3
    # Stands in for python3 running the watcher CLI: records argv, exits with FAKE_PY_RC
    # (check --preflight: with FAKE_PREFLIGHT_RC).
    import json, os, sys
    with open(os.environ["FAKE_LOG"], "a") as log:
        log.write(json.dumps(["python"] + sys.argv[1:]) + "\\n")
    preflight = sys.argv[2:4] == ["check", "--preflight"]
    sys.exit(int(os.environ.get("FAKE_PREFLIGHT_RC" if preflight else "FAKE_PY_RC", "0")))
    """
)


class Fakes:
    def __init__(self, tmp: Path):
        self.dir = tmp / "fakebin"
        self.dir.mkdir()
        self.log = tmp / "calls.jsonl"
        self.world = tmp / "world.json"
        self.systemctl = self._write("systemctl", FAKE_SYSTEMCTL)
        self.python = self._write("python", FAKE_PYTHON)

    def _write(self, name: str, text: str) -> Path:
        path = self.dir / name
        path.write_text(text)
        path.chmod(0o755)
        return path

    def set_world(self, **world) -> None:
        self.world.write_text(json.dumps(world))

    def calls(self, program: str = "") -> List[List[str]]:
        if not self.log.exists():
            return []
        rows = [json.loads(line) for line in self.log.read_text().splitlines()]
        return [r[1:] for r in rows if not program or r[0] == program]

    def env(self, **extra: str) -> Dict[str, str]:
        env = dict(os.environ, FAKE_LOG=str(self.log), FAKE_WORLD=str(self.world), SYSTEMCTL=str(self.systemctl),
                   ATVM_START_CHECK_SECONDS="0")
        env.update(extra)
        return env


@pytest.fixture
def fakes(tmp_path) -> Fakes:
    return Fakes(tmp_path)


def run(cmd, env=None, check=False) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, check=check, timeout=120)


# --- shell scripts ------------------------------------------------------------------------------
def shell_scripts() -> List[Path]:
    return sorted(p for pattern in ("*.sh", "deploy/*.sh", "tools/*.sh") for p in REPO.glob(pattern))


def test_every_deployment_script_is_found():
    assert {START, CANCEL, INSTALL, BUNDLE, ATVM_RUN} <= set(shell_scripts())


@pytest.mark.parametrize("script", shell_scripts(), ids=lambda p: str(p.relative_to(REPO)))
def test_shell_script_is_shellcheck_clean(script):
    done = run([need_tool("shellcheck"), "--external-sources", script])
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("script", [START, CANCEL, INSTALL, BUNDLE, ATVM_RUN], ids=lambda p: p.name)
def test_scripts_are_strict_and_executable(script):
    assert os.access(script, os.X_OK)
    assert "set -euo pipefail" in script.read_text()
    done = run([script, "--help"])
    assert done.returncode == 0 and "Usage:" in done.stdout


# --- the unit -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def staged_root(tmp_path_factory) -> Path:
    """A real install (from this checkout) into a folder, with systemctl skipped."""
    root = tmp_path_factory.mktemp("root")
    env = {k: v for k, v in os.environ.items() if k != "SYSTEMCTL"}
    done = run([INSTALL, "--root", root], env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return root


@pytest.mark.parametrize("name", ["atvm-run-watcher@.service", INSTANCE, *METRICS_UNITS],
                         ids=["template", "instance", "metrics-service", "metrics-timer"])
def test_unit_verifies_without_any_warning(staged_root, name):
    analyze = need_tool("systemd-analyze")
    done = run([analyze, "verify", staged_root / "etc/systemd/system" / name])
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_unit_runs_the_installed_watcher(staged_root):
    settings = unit_settings(UNIT.read_text())
    argv = settings["ExecStart"][0].split()
    interpreter, script = argv[0], argv[1]
    assert Path(interpreter).is_absolute() and os.access(staged_root / script.lstrip("/"), os.X_OK)
    # "=%I": the unescaped name, glued to its option so a leading '-' is never an option
    assert argv[2:] == ["watch", "--build-name=%I"]
    env_file = settings["EnvironmentFile"][0].lstrip("-")
    assert (staged_root / env_file.lstrip("/")).is_file()


def test_unit_restart_policy_matches_the_watcher_exit_codes():
    s = unit_settings(UNIT.read_text())
    assert s["Type"] == ["exec"] and s["Restart"] == ["on-failure"]
    never = {int(x) for v in s["RestartPreventExitStatus"] for x in v.split()}
    assert never == {int(c) for c in RESTART_PREVENTED}  # refused, config, rejected, uncertain, already watched
    assert never.isdisjoint(RESTARTED)
    assert "SuccessExitStatus" not in s  # RESTARTED codes (internal error, not sent) stay failures: restarted

    def seconds(value: str) -> float:
        units = {"ms": 0.001, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600}
        m = re.fullmatch(r"([\d.]+)\s*([a-z]*)", value)
        assert m, value
        return float(m.group(1)) * units[m.group(2) or "s"]

    burst = int(s["StartLimitBurst"][0])
    # the limit can only trip if `burst` restarts fit inside the interval
    assert burst * seconds(s["RestartSec"][0]) < seconds(s["StartLimitIntervalSec"][0])


def test_unit_keeps_what_the_watcher_must_read_and_tags_the_journal():
    s = unit_settings(UNIT.read_text())
    assert s.get("PrivateTmp", ["no"]) == ["no"]  # /tmp/.log is the run's evidence
    assert s["ProtectHome"] == ["read-only"]  # the automation root lives under /root
    assert s["ProtectSystem"] == ["strict"] and s["NoNewPrivileges"] == ["yes"]
    assert s["LogExtraFields"] == ["ATVM_BUILD=%I"]
    assert "PYTHONDONTWRITEBYTECODE=1" in " ".join(s["Environment"])
    assert s["StateDirectory"] == ["atvm-run-watcher/%I"]


def test_unit_exposure_score_is_low_and_recorded_in_install_md():
    analyze = need_tool("systemd-analyze")
    done = run([analyze, "security", "--offline=true", f"--threshold={int(EXPOSURE_THRESHOLD * 10)}", UNIT])
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d)", done.stdout)
    assert m, done.stdout + done.stderr
    assert done.returncode == 0 and float(m.group(1)) <= EXPOSURE_THRESHOLD, done.stdout
    assert f"exposure level {m.group(1)}" in (REPO / "INSTALL.md").read_text(), "update INSTALL.md's score"


def test_metrics_service_writes_the_textfile_and_the_timer_runs_it_every_minute(staged_root):
    service = unit_settings((staged_root / "etc/systemd/system" / METRICS_UNITS[0]).read_text())
    timer = unit_settings((staged_root / "etc/systemd/system" / METRICS_UNITS[1]).read_text())
    argv = service["ExecStart"][0].split()
    assert argv[1:] == ["/opt/atvm-watcher-service/atvm_run_watcher.py", "status", "--format=prometheus",
                        "--output=${ATVM_METRICS_DIR}/atvm_watcher.prom"]
    # the default folder is Debian's node_exporter's; the env file (read after it) may override it
    assert service["Environment"][0] == "ATVM_METRICS_DIR=/var/lib/prometheus/node-exporter"
    assert service["EnvironmentFile"] == ["-/etc/atvm-run-watcher.env"] and service["Type"] == ["oneshot"]
    assert timer["OnUnitActiveSec"] == ["1min"] and timer["WantedBy"] == ["timers.target"]


def test_metrics_service_exposure_score_is_low():
    analyze = need_tool("systemd-analyze")
    done = run([analyze, "security", "--offline=true", f"--threshold={int(EXPOSURE_THRESHOLD * 10)}",
                REPO / "deploy" / METRICS_UNITS[0]])
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d)", done.stdout)
    assert m and done.returncode == 0 and float(m.group(1)) <= EXPOSURE_THRESHOLD, done.stdout + done.stderr


# --- installer ----------------------------------------------------------------------------------
def install(root: Path, fakes: Fakes, *args: str) -> subprocess.CompletedProcess:
    return run([INSTALL, "--root", root, *args], env=fakes.env())


def tree(path: Path) -> Dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_fresh_install_lays_out_the_controller(tmp_path, fakes):
    root = tmp_path / "root"
    done = install(root, fakes)
    assert done.returncode == 0, done.stdout + done.stderr
    pkg = root / "opt/atvm-watcher-service"
    for name in ("atvm_run_watcher.py", "start-atvm-run-watcher.sh", "cancel-atvm-run-watcher.sh", "atvm-run.sh"):
        assert mode(pkg / name) == 0o755
    assert (pkg / "vm-inventory.md").read_bytes() == (REPO / "inventory/vm-inventory.md").read_bytes()
    modules = {p.name for p in (REPO / "atvm_watcher").glob("*.py")}
    assert {p.name for p in (pkg / "atvm_watcher").glob("*.py")} == modules
    assert list((pkg / "atvm_watcher/__pycache__").glob("settings.*.pyc")), "not precompiled"
    assert (root / "etc/systemd/system/atvm-run-watcher@.service").read_bytes() == UNIT.read_bytes()
    env_file = root / "etc/atvm-run-watcher.env"
    assert mode(env_file) == 0o600
    assert env_file.read_bytes() == (REPO / "deploy/atvm-run-watcher.env.example").read_bytes()
    assert (root / "var/lib/atvm-run-watcher").is_dir()
    assert ["daemon-reload"] in fakes.calls("systemctl")
    assert ["cat", "atvm-run-watcher@.service"] in fakes.calls("systemctl")
    for name in METRICS_UNITS:
        assert (root / "etc/systemd/system" / name).read_bytes() == (REPO / "deploy" / name).read_bytes()
    assert not [c for c in fakes.calls("systemctl") if c[0] in ("enable", "start")], "the timer stays off"
    assert done.stdout.splitlines()[-1].startswith("install: result: changed (package, env file created")


def result_line(done: subprocess.CompletedProcess) -> str:
    """The installer's closing line, which configuration management reads."""
    assert done.returncode == 0, done.stdout + done.stderr
    last = done.stdout.splitlines()[-1]
    assert re.fullmatch(r"install: result: (unchanged|changed \(.+\))", last), last
    return last


def test_a_second_install_reports_unchanged_and_a_change_is_reported(tmp_path, fakes):
    root = tmp_path / "root"
    assert result_line(install(root, fakes)).startswith("install: result: changed")
    assert result_line(install(root, fakes)) == "install: result: unchanged"

    (root / "etc/atvm-run-watcher.env").chmod(0o640)
    assert result_line(install(root, fakes)) == "install: result: changed (env file mode)"
    (root / "etc/systemd/system" / METRICS_UNITS[1]).write_text("[Timer]\n")
    assert result_line(install(root, fakes)) == f"install: result: changed ({METRICS_UNITS[1]})"
    (root / "opt/atvm-watcher-service/atvm_watcher/stale.py").write_text("# from an older release\n")
    assert result_line(install(root, fakes)) == "install: result: changed (package)"
    assert not (root / "opt/atvm-watcher-service/atvm_watcher/stale.py").exists()
    assert result_line(install(root, fakes)) == "install: result: unchanged"


def test_an_edited_inventory_is_kept_by_a_reinstall_with_the_shipped_one_beside_it(tmp_path, fakes):
    root = tmp_path / "root"
    assert install(root, fakes).returncode == 0
    pkg = root / "opt/atvm-watcher-service"
    inventory, dist = pkg / "vm-inventory.md", pkg / "vm-inventory.md.dist"
    assert not dist.exists()  # the shipped example itself is in use: nothing to compare
    lab = "| Token | VM |\n|---|---|\n| rhel9 | lab-rhel9-src |\n"
    inventory.write_text(lab)
    done = install(root, fakes)
    assert "kept /opt/atvm-watcher-service/vm-inventory.md (edited on this controller)" in done.stdout
    assert "the shipped example is beside it: /opt/atvm-watcher-service/vm-inventory.md.dist" in done.stdout
    assert result_line(done) == "install: result: changed (package)"  # the .dist file was added
    assert inventory.read_text() == lab and dist.read_bytes() == (REPO / "inventory/vm-inventory.md").read_bytes()
    assert result_line(install(root, fakes)) == "install: result: unchanged"
    assert inventory.read_text() == lab
    check = run([sys.executable, pkg / "atvm_run_watcher.py", "check"],
                env=fakes.env(ATVM_WATCHER_ENV_FILE=str(root / "etc/atvm-run-watcher.env")))
    assert "shipped example" not in check.stdout  # the lab's inventory is in use


def test_an_edited_env_file_is_kept_with_the_shipped_example_beside_it(tmp_path, fakes):
    root = tmp_path / "root"
    assert install(root, fakes).returncode == 0
    env_file, dist = root / "etc/atvm-run-watcher.env", root / "etc/atvm-run-watcher.env.dist"
    assert not dist.exists()
    env_file.write_text(f"MATTERMOST_ATVM_WEBHOOK={SECRET}\nATVM_POLL_SECONDS=2\n")
    done = install(root, fakes)
    assert "installed /etc/atvm-run-watcher.env.dist: the shipped example" in done.stdout
    assert result_line(done) == "install: result: changed (env example)"
    assert env_file.read_text() == f"MATTERMOST_ATVM_WEBHOOK={SECRET}\nATVM_POLL_SECONDS=2\n"
    assert dist.read_bytes() == (REPO / "deploy/atvm-run-watcher.env.example").read_bytes() and mode(dist) == 0o600
    assert result_line(install(root, fakes)) == "install: result: unchanged"
    assert SECRET not in done.stdout + done.stderr


def test_the_installer_names_a_bad_option(tmp_path, fakes):
    done = install(tmp_path / "root", fakes, "--prefix=/usr")
    assert done.returncode == 2 and done.stderr.startswith("install: unknown option: --prefix=/usr\n")
    assert "--help" in done.stderr and not (tmp_path / "root/opt").exists()


def test_a_staged_install_points_at_its_own_paths(tmp_path, fakes):
    root = tmp_path / "root"
    done = install(root, fakes)  # a fresh env file has no webhook yet: check fails, and says what next
    hint = [line for line in done.stdout.splitlines() if "then run:" in line]
    assert len(hint) == 1 and f"ATVM_WATCHER_ENV_FILE={root}/etc/atvm-run-watcher.env" in hint[0]
    assert f"python3 {root}/opt/atvm-watcher-service/atvm_run_watcher.py check" in hint[0]
    assert f"(edit {root}/etc/atvm-run-watcher.env)" in done.stdout


def test_reinstall_is_idempotent_and_never_touches_the_secret(tmp_path, fakes):
    root = tmp_path / "root"
    assert install(root, fakes).returncode == 0
    pkg, env_file = root / "opt/atvm-watcher-service", root / "etc/atvm-run-watcher.env"
    env_file.write_text(f"MATTERMOST_ATVM_WEBHOOK={SECRET}\n")
    env_file.chmod(0o644)  # an operator's slip: group/others could read the secret
    state = root / "var/lib/atvm-run-watcher/some-build/state.json"
    state.parent.mkdir(parents=True)
    state.write_text('{"state": "COMPLETED"}')
    first = tree(pkg)

    done = install(root, fakes)
    assert done.returncode == 0, done.stdout + done.stderr
    assert SECRET not in done.stdout + done.stderr
    assert env_file.read_text() == f"MATTERMOST_ATVM_WEBHOOK={SECRET}\n" and mode(env_file) == 0o600
    assert "644 -> 600" in done.stdout
    assert tree(pkg) == first
    assert state.read_text() == '{"state": "COMPLETED"}'
    assert not list(pkg.parent.glob("atvm-watcher-service.*")), "staging leftovers"


def test_legacy_root_install_is_stopped_and_kept_as_a_dated_backup(tmp_path, fakes):
    root = tmp_path / "root"
    legacy = root / "root/atvm-watcher-service"
    legacy.mkdir(parents=True)
    (legacy / "atvm_run_watcher.py").write_text("# legacy\n")
    (root / "root/other-file").write_text("untouched\n")
    old_unit, new_unit = "atvm-run-watcher@old\\x2dbuild.service", "atvm-run-watcher@new.service"
    fakes.set_world(active={
        old_unit: "{ path=/usr/bin/python3 ; argv[]=/usr/bin/python3 /root/atvm-watcher-service/atvm_run_watcher.py }",
        new_unit: "{ path=/usr/bin/python3 ; argv[]=/usr/bin/python3 /opt/atvm-watcher-service/atvm_run_watcher.py }",
    })
    done = install(root, fakes)
    assert done.returncode == 0, done.stdout + done.stderr

    stops = [c for c in fakes.calls("systemctl") if c[0] == "stop"]
    assert stops == [["stop", "--", old_unit]]  # only the watcher running the legacy code
    backups = list((root / "root").glob("atvm-watcher-service.bak-*"))
    assert len(backups) == 1 and re.fullmatch(r"atvm-watcher-service\.bak-\d{8}-\d{6}", backups[0].name)
    assert (backups[0] / "atvm_run_watcher.py").read_text() == "# legacy\n"
    assert not legacy.exists()
    assert sorted(p.name for p in (root / "root").iterdir()) == [backups[0].name, "other-file"]
    assert (root / "root/other-file").read_text() == "untouched\n"
    assert old_unit in done.stdout  # the operator is told what to start again
    assert (root / "opt/atvm-watcher-service/atvm_run_watcher.py").exists()


def test_uninstall_keeps_state_and_secrets_purge_removes_them(tmp_path, fakes):
    root = tmp_path / "root"
    assert install(root, fakes).returncode == 0
    state = root / "var/lib/atvm-run-watcher/b1/state.json"
    state.parent.mkdir(parents=True)
    state.write_text("{}")
    fakes.set_world(active={"atvm-run-watcher@b1.service": "/opt/atvm-watcher-service/atvm_run_watcher.py"})

    done = install(root, fakes, "--uninstall")
    assert done.returncode == 0, done.stdout + done.stderr
    assert not (root / "opt/atvm-watcher-service").exists()
    assert not (root / "etc/systemd/system/atvm-run-watcher@.service").exists()
    assert state.exists() and (root / "etc/atvm-run-watcher.env").exists()
    calls = fakes.calls("systemctl")
    assert ["stop", "--", "atvm-run-watcher@b1.service"] in calls
    assert calls.index(["stop", "--", "atvm-run-watcher@b1.service"]) < len(calls) - 1
    assert ["disable", "--now", "atvm-watcher-metrics.timer"] in calls
    assert calls[-1] == ["daemon-reload"]
    assert not [p for p in (root / "etc/systemd/system").iterdir() if p.name.startswith("atvm-")]

    done = install(root, fakes, "--uninstall", "--purge")
    assert done.returncode == 0, done.stdout + done.stderr
    assert not (root / "var/lib/atvm-run-watcher").exists()
    assert not (root / "etc/atvm-run-watcher.env").exists()


def test_purge_alone_is_refused(tmp_path, fakes):
    done = install(tmp_path / "root", fakes, "--purge")
    assert done.returncode != 0 and "--uninstall" in done.stderr
    assert not (tmp_path / "root/opt").exists()


# --- bundle -------------------------------------------------------------------------------------
def unpacked_bundle(tmp_path: Path, version: str) -> Path:
    done = run([BUNDLE, "--out", tmp_path, "--version", version], check=True)
    tarball = Path(done.stdout.strip().splitlines()[-1])
    assert tarball == tmp_path / f"atvm-watcher-{version}.tar.gz"
    subprocess.run(["tar", "-xzf", str(tarball), "-C", str(tmp_path)], check=True)
    return tmp_path / f"atvm-watcher-{version}"


def test_bundle_holds_everything_the_installer_needs(tmp_path):
    top = unpacked_bundle(tmp_path, "t1")
    assert (top / "VERSION").read_text() == "t1\n"
    for name in ("atvm_run_watcher.py", "start-atvm-run-watcher.sh", "cancel-atvm-run-watcher.sh", "atvm-run.sh",
                 "deploy/install.sh", "deploy/atvm-run-watcher@.service", "deploy/atvm-run-watcher.env.example",
                 *(f"deploy/{name}" for name in METRICS_UNITS), "inventory/vm-inventory.md", "INSTALL.md",
                 "README.md"):
        assert (top / name).is_file(), name
    assert not list(top.rglob("__pycache__")) and not list(top.rglob("tests"))
    # the unpacked bundle installs on its own
    fakes = Fakes(tmp_path)
    done = run([top / "deploy/install.sh", "--root", tmp_path / "root"], env=fakes.env())
    assert done.returncode == 0, done.stdout + done.stderr
    pkg = tmp_path / "root/opt/atvm-watcher-service"
    assert (pkg / "VERSION").read_text() == "t1\n"
    assert (pkg / "README.md").read_bytes() == (REPO / "README.md").read_bytes() and (pkg / "INSTALL.md").is_file()
    version = run([sys.executable, pkg / "atvm_run_watcher.py", "--version"])
    assert version.stdout.strip().endswith("(bundle t1)")  # --version and the installed VERSION agree


def test_bundle_leaves_out_the_development_tools_and_demo_says_so(tmp_path):
    top = unpacked_bundle(tmp_path, "t2")
    names = {p.name for p in top.rglob("*")}
    assert not names & {"atvm_dev", "receiver.py", "simulate.py"}, "a test double or the fake launcher is shipped"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ATVM_", "MATTERMOST_", "PYTHON"))}
    done = subprocess.run([sys.executable, str(top / "atvm_run_watcher.py"), "demo"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode != 0 and done.stdout == ""
    assert "needs a checkout" in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_bundle_is_reproducible(tmp_path):
    a = run([BUNDLE, "--out", tmp_path / "a", "--version", "r"], check=True).stdout.strip()
    b = run([BUNDLE, "--out", tmp_path / "b", "--version", "r"], check=True).stdout.strip()
    assert Path(a).read_bytes() == Path(b).read_bytes()


# --- helpers ------------------------------------------------------------------------------------
REQUEST_ARGS = ["--template", "T1", "--config-family", "fc", "--migration-style", "live",
                "--integration-plugin", "vmware", "--scope-description", "a scope, with spaces"]


def helper(script: Path, fakes: Fakes, *args: str, rc: int = 0, env=None) -> subprocess.CompletedProcess:
    return run([script, *args], env=fakes.env(PYTHON=str(fakes.python), FAKE_PY_RC=str(rc), **(env or {})))


def test_start_records_the_request_then_starts_the_escaped_instance(fakes):
    done = helper(START, fakes, "--build-name", "e2e-redhat9.6-ubuntu24.04-w2k25-fc", *REQUEST_ARGS, "--categorize")
    assert done.returncode == 0, done.stdout + done.stderr
    preflight, record = fakes.calls("python")
    assert preflight == [str(START.parent / "atvm_run_watcher.py"), "check", "--preflight"]
    assert record[0] == str(START.parent / "atvm_run_watcher.py") and record[1] == "record-request"
    assert record[2:] == ["--build-name=e2e-redhat9.6-ubuntu24.04-w2k25-fc", "--template=T1", "--config-family=fc",
                          "--migration-style=live", "--integration-plugin=vmware",
                          "--scope-description=a scope, with spaces", "--categorize"]
    unit = INSTANCE
    assert fakes.calls("systemctl") == [["is-active", unit], ["reset-failed", unit], ["start", unit],
                                        ["show", "--property=ActiveState,SubState,ExecMainStatus", "--", unit]]
    assert f"Started {unit}" in done.stdout and f"journalctl -u '{unit}' -f" in done.stdout


def test_start_refuses_a_configuration_that_cannot_post_and_starts_nothing(fakes):
    done = helper(START, fakes, "--build-name", "b1", *REQUEST_ARGS, env={"FAKE_PREFLIGHT_RC": "3"})
    assert done.returncode == 3 and "Not started" in done.stderr and "Started" not in done.stdout
    assert [c[1] for c in fakes.calls("python")] == ["check"]  # nothing recorded
    assert [c[0] for c in fakes.calls("systemctl")] == ["is-active"]


@pytest.mark.parametrize("unit, status", [({"ActiveState": "failed", "SubState": "failed", "ExecMainStatus": "3"}, "3"),
                                          ({"ActiveState": "activating", "SubState": "auto-restart",
                                            "ExecMainStatus": "1"}, "1")])
def test_start_reports_a_unit_that_failed_at_once(fakes, unit, status):
    fakes.set_world(unit=unit)
    done = helper(START, fakes, "--build-name", "b1", *REQUEST_ARGS)
    assert done.returncode == 1 and "Started" not in done.stdout
    assert done.stderr.strip() == (f"atvm-run-watcher@b1.service failed at once (exit status {status}); "
                                   "read why with: journalctl -u 'atvm-run-watcher@b1.service'")


def test_start_watches_the_unit_for_the_time_it_is_given(fakes):
    import time

    began = time.monotonic()
    done = helper(START, fakes, "--build-name", "b1", *REQUEST_ARGS, env={"ATVM_START_CHECK_SECONDS": "1"})
    assert done.returncode == 0 and time.monotonic() - began >= 0.9
    assert len([c for c in fakes.calls("systemctl") if c[0] == "show"]) >= 2
    bad = helper(START, fakes, "--build-name", "b1", *REQUEST_ARGS, env={"ATVM_START_CHECK_SECONDS": "soon"})
    assert bad.returncode == 2 and "ATVM_START_CHECK_SECONDS" in bad.stderr


@pytest.mark.parametrize("state", ["active", "activating"])
def test_start_refuses_a_second_watcher(fakes, state):
    fakes.set_world(is_active=state)
    done = helper(START, fakes, "--build-name", "b1", *REQUEST_ARGS)
    assert done.returncode == 6 and "already" in done.stdout
    assert fakes.calls("python") == [] and ["start", "atvm-run-watcher@b1.service"] not in fakes.calls("systemctl")


@pytest.mark.parametrize("rc", [2, 6, 7])
def test_start_stops_when_the_request_is_refused(fakes, rc):
    done = helper(START, fakes, "--build-name", "b1", *REQUEST_ARGS, rc=rc)
    assert done.returncode == rc and done.stdout == ""  # record-request says why, once
    assert [c[0] for c in fakes.calls("systemctl")] == ["is-active"]


def test_start_says_an_already_finished_build_once(tmp_path, fakes):
    state_root = tmp_path / "state"
    (state_root / "b1").mkdir(parents=True)
    (state_root / "b1" / "state.json").write_text('{"state": "COMPLETED"}')
    env = fakes.env(ATVM_WATCHER_STATE_ROOT=str(state_root), ATVM_WATCHER_ENV_FILE=str(tmp_path / "none.env"),
                    MATTERMOST_ATVM_WEBHOOK="http://127.0.0.1:9/hooks/x", PYTHON=sys.executable)
    done = run([START, "--build-name", "b1", *REQUEST_ARGS], env=env)
    assert done.returncode == 7 and (done.stdout + done.stderr).count("already finished") == 1, done.stdout


def test_start_never_takes_a_name_for_an_option(fakes):
    done = helper(START, fakes, "--build-name", "-rf", *REQUEST_ARGS, rc=2)
    assert done.returncode == 2
    assert fakes.calls("python")[1][2] == "--build-name=-rf"
    assert fakes.calls("systemctl") == [["is-active", "atvm-run-watcher@\\x2drf.service"]]


@pytest.mark.parametrize("args", [[], ["--build-name"], ["--build-name", ""], ["--bogus"]])
def test_start_usage_errors(fakes, args):
    done = helper(START, fakes, *args)
    assert done.returncode == 2 and "--help" in done.stderr
    assert fakes.calls() == []


def test_cancel_marks_then_stops_a_running_instance(fakes):
    fakes.set_world(is_active="active")
    done = helper(CANCEL, fakes, "--build-name", "b1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert fakes.calls("python") == [[str(CANCEL.parent / "atvm_run_watcher.py"), "cancel", "--build-name=b1"]]
    assert fakes.calls("systemctl") == [["is-active", "atvm-run-watcher@b1.service"],
                                        ["stop", "atvm-run-watcher@b1.service"]]
    with open(fakes.log) as log:  # the marker is written before the stop, so nothing can post in between
        assert json.loads(log.readline())[0] == "python"


def test_cancel_leaves_a_stopped_instance_alone(fakes):
    done = helper(CANCEL, fakes, "--build-name", "b1")
    assert done.returncode == 0 and "not running" in done.stdout
    assert [c[0] for c in fakes.calls("systemctl")] == ["is-active"]


def test_cancel_refused_name_changes_nothing(fakes):
    done = helper(CANCEL, fakes, "--build-name", "../etc", rc=2)
    assert done.returncode == 2 and fakes.calls("systemctl") == []


@pytest.mark.parametrize("rc", [3, 1])
@pytest.mark.parametrize("state", ["active", "inactive"])
def test_cancel_stops_the_unit_even_when_the_marker_could_not_be_written(fakes, rc, state):
    """A configuration error (3) or a broken state folder (1) in ``atvm_run_watcher.py cancel``: no marker,
    but the unit is stopped all the same (a stopped watcher posts nothing), the helper says plainly what it
    did and did not do, and exits non-zero, with the cancel's own code."""
    fakes.set_world(is_active=state)
    done = helper(CANCEL, fakes, "--build-name", "b1", rc=rc)
    assert done.returncode == rc, done.stdout + done.stderr
    stops = [c for c in fakes.calls("systemctl") if c[0] == "stop"]
    assert stops == ([["stop", "atvm-run-watcher@b1.service"]] if state == "active" else [])
    assert "NOT written" in done.stderr and "NOT marked cancelled" in done.stderr
    assert ("its watcher is stopped" if state == "active" else "its watcher is not running") in done.stderr
    assert ("Stopped atvm-run-watcher@b1.service" if state == "active" else "is not running") in done.stdout


def test_cancel_says_so_when_the_unit_cannot_be_stopped(fakes):
    fakes.set_world(is_active="active", stop_rc=5)
    done = helper(CANCEL, fakes, "--build-name", "b1")
    assert done.returncode == 1 and "marked cancelled, but its watcher is NOT stopped" in done.stderr, done.stderr


def test_cancel_helper_with_a_broken_env_file_cancels_a_running_watcher(world, fakes):
    """End to end: a real watcher on a real run, then a broken tuning line and a bad webhook in the env
    file; the cancel helper (the real CLI, a fake systemctl that stops nothing) still writes the marker,
    and the watcher, which re-checks it every poll, ends CANCELLED: the run that then finishes is never
    posted. It used to fail with a configuration error, write no marker and stop nothing."""
    build = "e2e-cancel-broken-env"
    world.cli("record-request", "--build-name", build, check=True)
    launcher = world.launch(build, "--outcome", "pass", "--step-seconds", "0.4")
    watcher = world.start_watcher("--build-name", build)
    world.wait_for_state(build)
    env_file = Path(world.env["ATVM_WATCHER_ENV_FILE"])
    env_file.write_text("ATVM_HUNG_AFTER_SECONDS=2h\nMATTERMOST_ATVM_WEBHOOK=mattermost.example/hooks/x\n")
    env_file.chmod(0o600)
    env = {k: v for k, v in world.env.items() if k not in ("ATVM_HUNG_AFTER_SECONDS", "MATTERMOST_ATVM_WEBHOOK")}
    fakes.set_world(is_active="active")
    done = run([CANCEL, "--build-name", build], env={**fakes.env(**env), "PYTHON": sys.executable})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "cancelled.marker written" in done.stdout
    assert "warning: configuration: ATVM_HUNG_AFTER_SECONDS" in done.stderr
    assert watcher.wait(timeout=30) == 0
    launcher.wait(timeout=60)
    state = json.loads((world.build_dir(build) / "state.json").read_text())
    assert state["state"] == "CANCELLED" and (world.build_dir(build) / "cancelled.marker").exists()
    assert world.receiver.requests == []


def test_start_with_the_real_cli_refuses_a_bad_name_before_writing(tmp_path, fakes):
    state_root = tmp_path / "state"
    env = fakes.env(ATVM_WATCHER_STATE_ROOT=str(state_root), ATVM_WATCHER_ENV_FILE=str(tmp_path / "none.env"),
                    MATTERMOST_ATVM_WEBHOOK="http://127.0.0.1:9/hooks/x", PYTHON=sys.executable)
    done = run([START, "--build-name", "bad name", *REQUEST_ARGS], env=env)
    assert done.returncode == 2 and "refused" in (done.stdout + done.stderr)
    assert not state_root.exists() or not any(state_root.iterdir())
    assert ["start", "atvm-run-watcher@bad\\x20name.service"] not in fakes.calls("systemctl")


def test_start_passes_request_fields_through_and_the_real_cli_refuses_an_unknown_one(tmp_path, fakes):
    """The helper knows no field list: a new field of the request needs no change in the shell."""
    state_root = tmp_path / "state"
    env = fakes.env(ATVM_WATCHER_STATE_ROOT=str(state_root), ATVM_WATCHER_ENV_FILE=str(tmp_path / "none.env"),
                    MATTERMOST_ATVM_WEBHOOK="http://127.0.0.1:9/hooks/x", PYTHON=sys.executable)
    done = run([START, "--build-name", "b1", *REQUEST_ARGS, "--no-such-field", "x"], env=env)
    assert done.returncode == 2 and "--no-such-field" in done.stderr, done.stdout + done.stderr
    assert not (state_root / "b1" / "request.json").exists()
    assert [c[0] for c in fakes.calls("systemctl")] == ["is-active"]
    done = run([START, "--build-name", "b1", *REQUEST_ARGS], env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads((state_root / "b1" / "request.json").read_text())["scope_description"] == "a scope, with spaces"
