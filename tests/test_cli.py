"""The pinned command-line surface, as a user meets it: help, refusals, record/cancel/status/check."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, WATCHER

from atvm_watcher.settings import ConfigError, load, parse_env_file

COMMANDS = ["watch", "inspect", "status", "cancel", "check", "demo", "record-request", "launch"]


def test_top_level_help_from_any_directory(tmp_path):
    res = subprocess.run([sys.executable, str(WATCHER), "--help"], cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0
    for command in COMMANDS:
        assert command in res.stdout
    assert "75" in res.stdout  # exit codes are documented


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_has_help(world, command):
    res = world.cli(command, "--help")
    assert res.returncode == 0 and "usage:" in res.stdout


def test_watch_help_lists_the_pinned_flags(world):
    text = world.cli("watch", "--help").stdout
    for flag in ("--build-name", "--categorize", "--template", "--config-family", "--migration-style",
                 "--integration-plugin", "--scope-description", "--dry-run"):
        assert flag in text


@pytest.mark.parametrize("command", ["watch", "inspect", "cancel", "record-request", "status", "launch"])
def test_bad_build_name_refused_before_anything_is_written(world, command):
    res = world.cli(command, "--build-name", "../../etc")
    assert res.returncode == 2 and "refused" in res.stderr
    assert list(world.state_root.iterdir()) == []


def test_record_request_then_finished_then_rerun(world):
    build = "e2e-cli-rec"
    assert world.cli("record-request", "--build-name", build, "--template", "t1").returncode == 0
    recorded = json.loads((world.build_dir(build) / "request.json").read_text())
    assert recorded["template"] == "t1" and recorded["categorize"] is False
    (world.build_dir(build) / "state.json").write_text(json.dumps({"state": "COMPLETED"}))
    res = world.cli("record-request", "--build-name", build)
    assert res.returncode == 7 and "already finished (COMPLETED)" in res.stdout
    res = world.cli("record-request", "--build-name", build, "--rerun", "--template", "t2")
    assert res.returncode == 0 and "archived" in res.stdout
    assert json.loads((world.build_dir(build) / "request.json").read_text())["template"] == "t2"
    assert not (world.build_dir(build) / "state.json").exists()
    assert list((world.state_root / ".archive").iterdir())


def test_two_reruns_in_the_same_second_keep_both_archives(world):
    build = "e2e-cli-twice"
    for template in ("t1", "t2", "t3"):
        res = world.cli("record-request", "--build-name", build, "--rerun", "--template", template)
        assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
        (world.build_dir(build) / "state.json").write_text(json.dumps({"state": "COMPLETED"}))
    archived = sorted(p.name for p in (world.state_root / ".archive").iterdir())
    assert len(archived) == 2 and all(name.startswith(build + ".") for name in archived), archived


def test_cancel_unknown_and_finished_builds_change_nothing(world):
    res = world.cli("cancel", "--build-name", "never-seen")
    assert res.returncode == 0 and "unknown" in res.stdout
    assert not world.build_dir("never-seen").exists()
    done = world.build_dir("done-build")
    done.mkdir()
    (done / "state.json").write_text(json.dumps({"state": "FAILED"}))
    res = world.cli("cancel", "--build-name", "done-build")
    assert res.returncode == 0 and "already finished (FAILED)" in res.stdout
    assert not (done / "cancelled.marker").exists()
    assert json.loads((done / "state.json").read_text())["state"] == "FAILED"


def test_cancel_before_the_watcher_starts_means_it_never_posts(world):
    build = "e2e-cancel-first"
    world.cli("record-request", "--build-name", build, check=True)
    world.cli("cancel", "--build-name", build, check=True)
    world.launch(build, "--outcome", "pass", "--step-seconds", "0.02").wait(20)
    res = world.cli("watch", "--build-name", build)
    assert res.returncode == 0 and world.receiver.requests == []
    assert json.loads((world.build_dir(build) / "state.json").read_text())["state"] == "CANCELLED"


def test_status_shows_uncertain_delivery(world):
    bd = world.build_dir("e2e-unsure")
    bd.mkdir()
    (bd / "state.json").write_text(json.dumps({"state": "COMPLETED"}))
    (bd / "delivery.json").write_text(json.dumps({"phase": "sending"}))
    assert "DELIVERY-UNCERTAIN" in world.cli("status", check=True).stdout
    (bd / "state.json").write_text("{corrupt")
    row = json.loads(world.cli("status", "--json", check=True).stdout)["builds"][0]
    assert row["state"] == "CORRUPT" and row["delivery"] == "DELIVERY-UNCERTAIN"


def test_status_with_nothing_watched(world):
    assert "no watched builds" in world.cli("status", check=True).stdout


# --- check ------------------------------------------------------------------------------------


def installed_world(world):
    units = Path(world.env["ATVM_UNIT_DIR"])
    units.mkdir(exist_ok=True)
    shutil.copy(REPO / "deploy" / "atvm-run-watcher@.service", units)
    env_file = Path(world.env["ATVM_WATCHER_ENV_FILE"])
    env_file.write_text(f"MATTERMOST_ATVM_WEBHOOK={world.receiver.url}\n")
    env_file.chmod(0o600)
    return env_file


def test_check_passes_on_a_good_install(world):
    installed_world(world)
    res = world.cli("check", env={"MATTERMOST_ATVM_WEBHOOK": ""})
    # the process environment wins: an empty webhook there hides the file's value
    assert res.returncode == 3 and "MATTERMOST_ATVM_WEBHOOK is not set" in res.stdout
    env = {k: v for k, v in world.env.items() if k != "MATTERMOST_ATVM_WEBHOOK"}
    res = subprocess.run([sys.executable, str(WATCHER), "check"], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout
    assert "check: all good" in res.stdout and world.receiver.hook_id not in res.stdout + res.stderr


def test_check_fails_on_a_readable_env_file_and_says_how_to_fix_it(world):
    env_file = installed_world(world)
    env_file.chmod(0o644)
    res = world.cli("check")
    assert res.returncode == 3 and "chmod 600" in res.stdout


def test_check_fails_without_the_unit(world):
    res = world.cli("check")
    assert res.returncode == 3 and "not installed" in res.stdout


# --- settings ---------------------------------------------------------------------------------


def test_env_file_parsing():
    text = "# comment\nexport A=1\nB='two words'\nC=\"3\"\n bad line\nD=\nE = 5\n"
    assert parse_env_file(text) == {"A": "1", "B": "two words", "C": "3", "D": "", "E": "5"}


def test_process_environment_wins_over_env_file(tmp_path):
    env_file = tmp_path / "env"
    env_file.write_text("MATTERMOST_ATVM_CHANNEL=from-file\nATVM_POLL_SECONDS=0.5\n")
    env_file.chmod(0o600)
    s = load({"ATVM_WATCHER_ENV_FILE": str(env_file), "MATTERMOST_ATVM_CHANNEL": "from-env"})
    assert s.channel == "from-env" and s.poll_seconds == 0.5


@pytest.mark.parametrize("name,value", [("ATVM_POLL_SECONDS", "fast"), ("ATVM_HUNG_AFTER_SECONDS", "-1"),
                                        ("ATVM_GONE_GRACE_SECONDS", "nan"), ("ATVM_POST_ATTEMPTS", "0"),
                                        ("ATVM_DELIVERY", "twice"), ("MATTERMOST_ATVM_WEBHOOK", "ftp://x/y")])
def test_bad_settings_are_configuration_errors(tmp_path, name, value):
    with pytest.raises(ConfigError) as err:
        load({"ATVM_WATCHER_ENV_FILE": str(tmp_path / "none"), name: value})
    assert name in str(err.value)


def test_bad_setting_exits_3_with_a_clear_message(world):
    res = world.cli("watch", "--build-name", "b1", env={"ATVM_POLL_SECONDS": "soon"})
    assert res.returncode == 3 and "ATVM_POLL_SECONDS" in res.stderr


def test_fractional_seconds_are_accepted(tmp_path):
    s = load({"ATVM_WATCHER_ENV_FILE": str(tmp_path / "none"), "ATVM_POLL_SECONDS": "0.25",
              "ATVM_HUNG_AFTER_SECONDS": "1.5", "ATVM_START_TIMEOUT_SECONDS": "2.5", "ATVM_GONE_GRACE_SECONDS": "0.75"})
    assert (s.poll_seconds, s.hung_after_seconds, s.start_timeout_seconds, s.gone_grace_seconds) == (
        0.25, 1.5, 2.5, 0.75)


def test_defaults_are_the_contracts(tmp_path):
    s = load({"ATVM_WATCHER_ENV_FILE": str(tmp_path / "none")})
    assert str(s.state_root) == "/var/lib/atvm-run-watcher" and str(s.log_dir) == "/tmp/.log"
    assert str(s.report_dir) == "/root/cdc-e2e-cyp-12.17.4/cypress/cmcReporter"
    assert (s.hung_after_seconds, s.start_timeout_seconds, s.gone_grace_seconds) == (3600, 1800, 60)
    assert s.inventory.name == "vm-inventory.md" and s.inventory.exists()


def test_demo_runs_end_to_end(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ATVM_", "MATTERMOST_"))}
    res = subprocess.run([sys.executable, str(WATCHER), "demo", "--speed", "10"], capture_output=True, text=True,
                         env=env, cwd=tmp_path, timeout=120, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("=== Mattermost post #") == 2
    assert "2 post(s) received" in res.stdout


def test_watch_refuses_an_env_file_readable_by_others_even_with_the_values_in_the_environment(world):
    env_file = Path(world.env["ATVM_WATCHER_ENV_FILE"])
    env_file.write_text(f"MATTERMOST_ATVM_WEBHOOK={world.receiver.url}\n")
    env_file.chmod(0o644)
    res = world.cli("watch", "--build-name", "e2e-unsafe-env")  # the webhook is also in the environment
    assert res.returncode == 3 and "chmod 600" in res.stderr
    assert world.receiver.hook_id not in res.stderr + res.stdout
    assert not world.build_dir("e2e-unsafe-env").exists()


def test_every_setting_is_documented_in_the_readme_and_the_env_example():
    import re

    source = (REPO / "atvm_watcher" / "settings.py").read_text()
    names = set(re.findall(r'"((?:ATVM|MATTERMOST)_[A-Z_]+)"', source))
    assert {"MATTERMOST_ATVM_WEBHOOK", "ATVM_POLL_SECONDS", "ATVM_GONE_GRACE_SECONDS"} <= names
    readme = (REPO / "README.md").read_text()
    example = (REPO / "deploy" / "atvm-run-watcher.env.example").read_text()
    for name in names:
        assert f"`{name}`" in readme, name
        assert name in example, name


def test_a_bad_layout_template_is_a_configuration_error(world):
    res = world.cli("inspect", "--build-name", "e2e-template", env={"ATVM_GROUP_LOG_FILE": "{log_dir}/{build}.log"})
    assert res.returncode == 3 and "ATVM_GROUP_LOG_FILE" in res.stderr and "{group}" in res.stderr, res.stderr
    res = world.cli("check", env={"ATVM_LOG_FILE": "{log_dir}{build}.log"})
    assert res.returncode == 3 and "ATVM_LOG_FILE" in res.stdout


def test_inspect_discover_names_the_settings_that_would_read_a_real_run(world):
    """The first real run tells the operator what to set: set what --discover suggests, and every file is read."""
    build = "e2e-discover"
    runs = world.log_dir / "runs" / build
    runs.mkdir(parents=True)
    (runs / "cypress.log").write_text("  (Run Starting)\n")
    (runs / "rc").write_text("0\n")
    (world.report_dir / "mocha" / build).mkdir(parents=True)
    (world.report_dir / "mocha" / build / "mochawesome.json").write_text("{}")
    (world.log_dir / f"{build}.pid").write_text("1\n")  # where the default layout reads it
    (world.log_dir / f"{build}2.log").write_text("another build\n")  # B2 is not B
    (world.log_dir / "launcher.out").write_text(f"launching {build}\n")  # named in its first line only

    res = world.cli("inspect", "--build-name", build, "--discover", "--json", check=True)
    info = json.loads(res.stdout)
    by_path = {Path(f["path"]).relative_to(world.root).as_posix(): f for f in info["files"]}
    assert sorted(by_path) == ["log/e2e-discover.pid", "log/launcher.out", f"log/runs/{build}/cypress.log",
                               f"log/runs/{build}/rc", f"reports/mocha/{build}/mochawesome.json"]
    assert by_path[f"log/{build}.pid"]["settings"] == ["ATVM_PID_FILE"]
    assert by_path["log/launcher.out"]["why"] == "first line" and by_path["log/launcher.out"]["suggestion"] is None
    assert info["suggested"] == ["ATVM_EXIT_FILE={log_dir}/runs/{build}/rc",
                                 "ATVM_LOG_FILE={log_dir}/runs/{build}/cypress.log",
                                 "ATVM_REPORT_FOLDER={report_dir}/mocha/{build}"]

    env = dict(line.split("=", 1) for line in info["suggested"])
    again = json.loads(world.cli("inspect", "--build-name", build, "--discover", "--json", env=env, check=True).stdout)
    assert again["suggested"] == []
    assert all(f["settings"] for f in again["files"] if f["why"] == "path")
    text = world.cli("inspect", "--build-name", build, env=env, check=True).stdout
    assert f"log {runs / 'cypress.log'}" in text and "(Run Starting) without (Run Finished)" in text
    assert "exit-0-but-unfinished" in text  # the exit code 0 is read, and the log contradicts it
    human = world.cli("inspect", "--build-name", build, "--discover", check=True).stdout
    assert "ATVM_LOG_FILE={log_dir}/runs/{build}/cypress.log" in human and "read as ATVM_PID_FILE" in human


def test_cancel_of_a_posted_build_with_a_damaged_state_changes_nothing(world):
    build = "posted-damaged"
    bd = world.build_dir(build)
    bd.mkdir(parents=True)
    (bd / "posted.marker").write_text(json.dumps({"state": "COMPLETED"}))
    (bd / "state.json").write_text("{garbage")
    res = world.cli("cancel", "--build-name", build)
    assert res.returncode == 0 and "already finished (posted)" in res.stdout, res.stdout
    assert not (bd / "cancelled.marker").exists() and (bd / "state.json").read_text() == "{garbage"


def test_a_build_whose_watcher_stopped_part_way_needs_rerun_or_resume(world):
    """A new run must not inherit what an earlier watcher decided; the same run must keep it."""
    build = "stopped-part-way"
    sub = world.build_dir(build) / "subruns" / "linux"
    sub.mkdir(parents=True)
    (world.build_dir(build) / "state.json").write_text(json.dumps({"state": "RUNNING", "categorized": True,
                                                                   "groups": ["linux"]}))
    (sub / "state.json").write_text(json.dumps({"state": "COMPLETED", "group": "linux", "delivery": "posted"}))
    (sub / "posted.marker").write_text("{}")
    res = world.cli("record-request", "--build-name", build, "--categorize")
    assert res.returncode == 7 and "--rerun" in res.stdout and "--resume" in res.stdout, res.stdout
    assert not (world.build_dir(build) / "request.json").exists()
    res = world.cli("record-request", "--build-name", build, "--categorize", "--resume")
    assert res.returncode == 0 and (sub / "posted.marker").exists()
    res = world.cli("record-request", "--build-name", build, "--categorize", "--rerun")
    assert res.returncode == 0 and "archived" in res.stdout and not sub.exists()
    res = world.cli("record-request", "--build-name", build, "--rerun", "--resume")
    assert res.returncode == 2
