"""deploy/ansible: ansible-lint (production profile, offline) and syntax checks, the role's
refusals before it touches anything, and the fleet table filter. The role and the playbooks
run for real, over SSH against two booted controllers, in tests/system/test_fleet.py.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict

import pytest
from needed import need_tool as tool

REPO = Path(__file__).resolve().parent.parent
ANSIBLE_DIR = REPO / "deploy" / "ansible"
PLAYBOOKS = ("install.yml", "status.yml")


@pytest.fixture
def ansible_env(tmp_path) -> Dict[str, str]:
    return {**os.environ, "ANSIBLE_HOME": str(tmp_path / "ansible"), "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"),
            "ANSIBLE_NOCOLOR": "1", "ANSIBLE_RETRY_FILES_ENABLED": "False", "NO_COLOR": "1",
            "LC_ALL": "C.UTF-8"}  # Ansible refuses to run without a UTF-8 locale


def test_ansible_lint_passes_with_the_production_profile(ansible_env):
    # the folder's .ansible-lint asks for the production profile and no network
    done = subprocess.run([tool("ansible-lint")], cwd=ANSIBLE_DIR, env=ansible_env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Profile 'production' was required, and it passed" in done.stdout + done.stderr


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_playbook_syntax(playbook, ansible_env, tmp_path):
    inventory = tmp_path / "inventory.yml"
    inventory.write_text((ANSIBLE_DIR / "inventory.example.yml").read_text())
    done = subprocess.run([tool("ansible-playbook"), "--syntax-check", "-i", str(inventory),
                           str(ANSIBLE_DIR / playbook)], env=ansible_env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def run_role_here(tmp_path: Path, env: Dict[str, str], **host_vars) -> subprocess.CompletedProcess:
    """install.yml against this machine, in check mode: only the role's first checks may run for
    real, and each of these cases must stop there, before anything is copied or installed."""
    inventory = {"atvm_controllers": {"hosts": {"here": {"ansible_connection": "local",
                                                         "ansible_python_interpreter": sys.executable,
                                                         **host_vars}}}}
    (tmp_path / "inventory.yml").write_text(json.dumps(inventory))
    return subprocess.run([tool("ansible-playbook"), "--check", "-i", str(tmp_path / "inventory.yml"),
                           str(ANSIBLE_DIR / "install.yml")], env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=120)


def test_the_role_refuses_a_renamed_bundle(tmp_path, ansible_env):
    done = run_role_here(tmp_path, ansible_env, atvm_watcher_bundle=str(tmp_path / "watcher.tgz"),
                         atvm_watcher_webhook="http://127.0.0.1:9/hooks/x")
    assert done.returncode != 0
    assert "must be a tarball made by tools/make-bundle.sh" in done.stdout, done.stdout
    assert "Copy the bundle" not in done.stdout


def test_the_role_refuses_to_write_an_env_file_without_the_webhook(tmp_path, ansible_env):
    done = run_role_here(tmp_path, ansible_env, atvm_watcher_bundle=str(tmp_path / "atvm-watcher-1.0.tar.gz"))
    assert done.returncode != 0
    # no_log hides the message, so the task's name says it
    assert "Check that atvm_watcher_webhook is set" in done.stdout and "censored" in done.stdout, done.stdout
    assert "Copy the bundle" not in done.stdout


@pytest.mark.parametrize("webhook", ["https://h.invalid/hooks/a\\b", "https://h.invalid/hooks/ab\\",
                                     'https://h.invalid/hooks/"ab"', "https://h.invalid/hooks/a b", "ftp://h/x",
                                     "https://h.invalid/hooks/$ab"])
def test_the_role_refuses_a_webhook_systemd_would_read_otherwise(tmp_path, ansible_env, webhook):
    """An unquoted value with a backslash, a quote, a $ or a space reads differently in systemd."""
    done = run_role_here(tmp_path, ansible_env, atvm_watcher_bundle=str(tmp_path / "atvm-watcher-1.0.tar.gz"),
                         atvm_watcher_webhook=webhook)
    assert done.returncode != 0 and "Check that atvm_watcher_webhook is set" in done.stdout, done.stdout
    assert "Copy the bundle" not in done.stdout and "h.invalid/hooks" not in done.stdout


def test_the_role_refuses_a_setting_that_would_break_the_env_file(tmp_path, ansible_env):
    done = run_role_here(tmp_path, ansible_env, atvm_watcher_bundle=str(tmp_path / "atvm-watcher-1.0.tar.gz"),
                         atvm_watcher_webhook="http://127.0.0.1:9/hooks/x",
                         atvm_watcher_settings={"ATVM_POLL_SECONDS": "1\nMATTERMOST_ATVM_WEBHOOK=elsewhere"})
    assert done.returncode != 0 and "upper-case names, one-line values" in done.stdout, done.stdout


# --- the fleet table ----------------------------------------------------------------------------
def load_filter():
    spec = importlib.util.spec_from_file_location("atvm_fleet", ANSIBLE_DIR / "filter_plugins" / "atvm_fleet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def status_result(*builds: dict) -> dict:
    return {"rc": 0, "stdout": json.dumps({"state_root": "/var/lib/atvm-run-watcher", "builds": list(builds)})}


def test_the_fleet_table_has_one_row_per_build_and_says_why_a_controller_has_none():
    plain = {"build_name": "e2e-a", "state": "COMPLETED", "subruns": [], "delivery": "posted", "watcher": "-"}
    grouped = {"build_name": "e2e-b", "state": "RUNNING", "delivery": "-", "watcher": "pid 42",
               "subruns": [{"group": "linux", "state": "COMPLETED", "delivery": "posted"},
                           {"group": "windows", "state": "RUNNING", "delivery": "-"}]}
    hostvars = {
        "ctl-1": {"atvm_status": status_result(plain, grouped)},
        "ctl-2": {"atvm_status": {"unreachable": True, "msg": "ssh: connect to host"}},
        "ctl-3": {"atvm_status": {"rc": 127, "stderr": "python3: can't open file", "stdout": ""}},
        "ctl-4": {"atvm_status": status_result()},
        "ctl-5": {},  # never reached at all
        "ctl-6": {"atvm_status": {"rc": 0, "stdout": "not json"}},
    }
    lines = load_filter().atvm_fleet_table(list(hostvars), hostvars)
    assert lines[0].split() == ["CONTROLLER", "BUILD", "STATE", "SUB-RUNS", "DELIVERY", "LIVE", "WATCHER"]
    assert lines[1].split() == ["ctl-1", "e2e-a", "COMPLETED", "-", "posted", "-"]
    assert lines[2].split() == ["ctl-1", "e2e-b", "RUNNING", "linux=COMPLETED/posted,", "windows=RUNNING/-", "-",
                                "pid", "42"]
    assert lines[3].split()[:3] == ["ctl-2", "-", "UNREACHABLE"]
    assert "STATUS FAILED (rc 127)" in lines[4] and lines[4].endswith("python3: can't open file")
    assert lines[5].split()[:2] == ["ctl-4", "-"] and "no watched builds" in lines[5]
    assert "UNREACHABLE" in lines[6] and "STATUS UNREADABLE" in lines[7]
    # columns line up: every row's second column starts where the header's does
    assert {line.index(line.split()[1], len(line.split()[0])) for line in lines} == {lines[0].index("BUILD")}
