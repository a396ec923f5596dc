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

from atvm_watcher.settings import BOUNDS, PATH_SETTINGS, ConfigError, load, parse_env_file

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


@pytest.mark.parametrize("setting, label", [("ATVM_LOG_DIR", "log folder"), ("ATVM_REPORT_DIR", "report folder")])
def test_check_warns_about_an_evidence_folder_a_local_user_can_write(world, setting, label):
    """The watcher runs as root and takes what it finds there as the run's outcome: a folder writable by
    others (the default /tmp/.log made world-writable) or not owned by root is a WARN that says what to do."""
    installed_world(world)
    folder = Path(world.env[setting])
    assert f"WARN {label}" not in world.cli("check").stdout  # root-owned 0755: nothing to say
    folder.chmod(0o1777)
    res = world.cli("check")
    assert f"WARN {label} {folder} is writable by others (mode 1777)" in res.stdout, res.stdout
    assert f"install -d -m 0755 -o root {folder}" in res.stdout and f"set {setting}" in res.stdout
    folder.chmod(0o755)
    os.chown(folder, 65534, 65534)
    res = world.cli("check")
    assert f"WARN {label} {folder} is owned by uid 65534, not root" in res.stdout, res.stdout
    assert res.returncode == 0  # a warning, not a failure: the install works


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
                                        ("ATVM_DELIVERY", "twice"), ("MATTERMOST_ATVM_WEBHOOK", "ftp://x/y"),
                                        ("ATVM_WAKE", "sometimes"), ("ATVM_REST_AFTER_SECONDS", "0")])
def test_bad_settings_are_configuration_errors(tmp_path, name, value):
    with pytest.raises(ConfigError) as err:
        load({"ATVM_WATCHER_ENV_FILE": str(tmp_path / "none"), name: value})
    assert name in str(err.value)


HOSTILE = ["1e10", "nan", "inf", "-inf", "-1", "1e400", "9" * 30, "2h"]


@pytest.mark.parametrize("name", sorted(BOUNDS))
def test_every_number_setting_has_bounds_and_refuses_hostile_values(tmp_path, name):
    """A duration past its maximum (a week at most), NaN, infinity, a negative value or an absurd count is a
    configuration error naming the setting and its range; the bounds themselves are accepted."""
    low, high = BOUNDS[name]
    base = {"ATVM_WATCHER_ENV_FILE": str(tmp_path / "none")}
    assert 0 <= low < high <= 7 * 86400
    for value in HOSTILE + [repr(high * 2)]:
        with pytest.raises(ConfigError) as err:
            load({**base, name: value})
        text = str(err.value)
        assert name in text and f"{high:g}" in text and f"{low:g}" in text, text
    for value in (low, high):
        typed = int(value) if name == "ATVM_POST_ATTEMPTS" else value
        assert getattr(load({**base, name: str(typed)}), name[len("ATVM_"):].lower()) == typed


@pytest.mark.parametrize("name", sorted(BOUNDS))
def test_hostile_number_settings_are_refused_at_start_by_the_real_cli(world, name):
    """``ATVM_POLL_SECONDS=1e10`` used to pass the load and crash at the first poll (an overflow in the sleep),
    which systemd restarts for ever; ``ATVM_POST_TIMEOUT_SECONDS=1e10`` crashed after the intent record.
    Now ``watch`` and ``check`` exit 3 before anything is written, naming the setting and its range."""
    for value in ("1e10", "nan", "-1"):
        res = world.cli("watch", "--build-name", "b-hostile", env={name: value})
        assert res.returncode == 3 and name in res.stderr and "from" in res.stderr, (value, res.stderr)
        assert "Traceback" not in res.stderr
    assert not world.build_dir("b-hostile").exists()
    res = world.cli("check", env={name: "1e10"})
    assert res.returncode == 3 and f"FAIL configuration: {name}=" in res.stdout, res.stdout


@pytest.mark.parametrize("name", sorted(PATH_SETTINGS.values()))
@pytest.mark.parametrize("value", ["relative/path", "/tmp/with\x00nul"])
def test_path_settings_must_be_absolute_without_nul(world, name, value):
    env_file = Path(world.env["ATVM_WATCHER_ENV_FILE"])
    env_file.write_text(f"{name}={value}\n")
    env_file.chmod(0o600)
    env = {k: v for k, v in world.env.items() if k != name}
    res = subprocess.run([sys.executable, str(WATCHER), "watch", "--build-name", "b-path"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 3 and name in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_check_lists_every_bad_setting_not_only_the_first(world):
    installed_world(world)
    res = world.cli("check", env={"ATVM_POLL_SECONDS": "1e10", "ATVM_POST_ATTEMPTS": "0",
                                  "ATVM_SETTLE_SECONDS": "soon"})
    assert res.returncode == 3
    for name in ("ATVM_POLL_SECONDS", "ATVM_POST_ATTEMPTS", "ATVM_SETTLE_SECONDS"):
        assert f"FAIL configuration: {name}" in res.stdout, res.stdout


@pytest.mark.parametrize("url", ["http://" + "a" * 64 + ".example/hooks/x", "http://mattermost..example/hooks/x",
                                 "http://127.0.0.1:0/hooks/x", "http://127.0.0.1:65536/hooks/x"])
def test_a_webhook_the_post_could_not_use_is_refused_at_start(world, url):
    res = world.cli("watch", "--build-name", "b-url", env={"MATTERMOST_ATVM_WEBHOOK": url})
    assert res.returncode == 3 and "MATTERMOST_ATVM_WEBHOOK" in res.stderr, res.stderr
    assert not world.build_dir("b-url").exists()


def test_read_only_commands_and_cancel_warn_about_a_broken_line_and_go_on(world):
    """``status``, ``inspect`` and ``cancel`` need no webhook and no tuning: a bad line is a warning naming it
    (its default is used for that command), never a refusal; ``watch`` stays strict."""
    env_file = Path(world.env["ATVM_WATCHER_ENV_FILE"])
    env_file.write_text("ATVM_HUNG_AFTER_SECONDS=2h\nATVM_POLL_SECONDS=1e10\nMATTERMOST_ATVM_WEBHOOK=ftp://x/y\n")
    env_file.chmod(0o600)
    env = {k: v for k, v in world.env.items() if k not in ("ATVM_HUNG_AFTER_SECONDS", "ATVM_POLL_SECONDS",
                                                           "MATTERMOST_ATVM_WEBHOOK")}
    world.env = env
    world.cli("record-request", "--build-name", "b-lenient", env={"ATVM_WATCHER_ENV_FILE": "/nonexistent"}, check=True)
    for command in (["status"], ["status", "--json"], ["inspect", "--build-name", "b-lenient"],
                    ["cancel", "--build-name", "b-lenient"]):
        res = world.cli(*command)
        assert res.returncode == 0, (command, res.stderr)
        for name in ("ATVM_HUNG_AFTER_SECONDS", "ATVM_POLL_SECONDS", "MATTERMOST_ATVM_WEBHOOK"):
            assert f"warning: configuration: {name}" in res.stderr, (command, res.stderr)
    assert (world.build_dir("b-lenient") / "cancelled.marker").exists()
    res = world.cli("watch", "--build-name", "b-lenient")
    assert res.returncode == 3 and "ATVM_" in res.stderr


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
    res = subprocess.run([sys.executable, str(WATCHER), "demo", "--speed", "10", "--preview", str(tmp_path / "p")],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("=== Mattermost post #") == 2
    assert "2 post(s) received" in res.stdout
    # the demo's posts carry what the channel acts on: n of N, the group's VMs, paths, link, flaky, error line
    first, second = res.stdout.split("=== Mattermost post #")[1:3]
    assert "sub-run linux (1 of 2)" in first and "sub-run windows (2 of 2)" in second
    assert "VMs of sub-run linux: rh96-src" in first and "VMs of sub-run windows: w2k25-src" in second
    assert "Log: `/" in second and "/windows.log`" in second and "Reports: `/" in second
    assert "HTML report: [open the report](https://" in second
    assert "Flaky: passed on a retry (1): - `replicates the disks`" in first and "1 flaky" in first
    assert ": AssertionError: expected 'Migrated' to equal 'Ready'" in second
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["post-1.html", "post-2.html"]


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


def test_every_bound_is_documented_in_the_readme():
    rows = {line.split("|")[1].strip(): line for line in (REPO / "README.md").read_text().splitlines()
            if line.startswith("| `ATVM_")}
    for name, (low, high) in BOUNDS.items():
        assert f"{low:g}-{high:g}" in rows[f"`{name}`"], name


# --- errors and help point the right way ------------------------------------------------------------


@pytest.mark.parametrize("command", ["watch", "inspect", "status", "cancel", "check", "record-request"])
def test_an_unknown_flag_shows_the_commands_own_usage(world, command):
    res = world.cli(command, "--build-name", "b1", "--no-such-flag")
    assert res.returncode == 2 and "--no-such-flag" in res.stderr
    assert res.stderr.startswith(f"usage: atvm_run_watcher.py {command} ")
    assert f"atvm_run_watcher.py {command}: error:" in res.stderr


@pytest.mark.parametrize("command", ["watch", "inspect", "status", "cancel", "record-request", "launch"])
def test_the_build_name_is_explained_everywhere(world, command):
    text = world.cli(command, "--help").stdout
    assert "--build-name" in text and ("build name" in text or "only this build" in text)


def test_watch_help_says_where_left_out_flags_come_from(world):
    text = world.cli("watch", "--help").stdout
    assert "taken from the request the start" in text and "request.json" in text


def test_version_names_the_bundle_when_installed_from_one(tmp_path):
    from atvm_watcher import __version__

    res = subprocess.run([sys.executable, str(WATCHER), "--version"], capture_output=True, text=True)
    assert res.stdout.strip() == f"atvm-watcher {__version__}"  # a checkout has no VERSION file
    copy = tmp_path / "pkg"
    shutil.copytree(REPO / "atvm_watcher", copy / "atvm_watcher", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(WATCHER, copy)
    (copy / "VERSION").write_text("v9-3-gabc\n")
    res = subprocess.run([sys.executable, str(copy / WATCHER.name), "--version"], capture_output=True, text=True)
    assert res.stdout.strip() == f"atvm-watcher {__version__} (bundle v9-3-gabc)"


# --- the request's number of sub-runs -----------------------------------------------------------------


def test_groups_is_recorded_and_a_bad_number_is_refused(world):
    assert world.cli("record-request", "--build-name", "b-groups", "--categorize", "--groups", "3").returncode == 0
    assert json.loads((world.build_dir("b-groups") / "request.json").read_text())["groups"] == 3
    for bad in ("0", "three", "-1", "100000"):
        res = world.cli("record-request", "--build-name", "b-groups", "--groups", bad)
        assert res.returncode == 2 and "--groups" in res.stderr and "record-request" in res.stderr


# --- ATVM_REPORT_URL ------------------------------------------------------------------------------------


def test_the_report_url_template_is_filled_in(tmp_path):
    s = load({"ATVM_WATCHER_ENV_FILE": str(tmp_path / "none"),
              "ATVM_REPORT_URL": "https://ci.example.invalid/atvm/{build}/{group}/index.html"})
    assert s.report_link("b1", "linux") == "https://ci.example.invalid/atvm/b1/linux/index.html"
    assert s.report_link("b1") == "https://ci.example.invalid/atvm/b1//index.html"
    assert load({"ATVM_WATCHER_ENV_FILE": str(tmp_path / "none")}).report_link("b1") == ""


@pytest.mark.parametrize("value", ["ftp://x/{build}", "https://x/{bad}", "https://x/{build", "https://x/{build!r}",
                                   "https:///{build}", "https://x/a b/{build}", "javascript:alert(1)//{build}"])
def test_a_bad_report_url_is_a_configuration_error(tmp_path, value):
    with pytest.raises(ConfigError) as err:
        load({"ATVM_WATCHER_ENV_FILE": str(tmp_path / "none"), "ATVM_REPORT_URL": value})
    assert "ATVM_REPORT_URL" in str(err.value)


# --- check: every row, the right words, a test post only on demand ----------------------------------------


def test_check_shows_every_row_and_every_bad_setting(world):
    installed_world(world)
    res = world.cli("check", env={"ATVM_POLL_SECONDS": "soon", "ATVM_DELIVERY": "twice"})
    assert res.returncode == 3
    assert "ATVM_POLL_SECONDS" in res.stdout and "ATVM_DELIVERY" in res.stdout
    for row in ("webhook set", "state root", "log folder", "inventory", "atvm-run.sh", "unit"):
        assert row in res.stdout, row  # still checked, with the two bad settings at their defaults
    assert "the rows below take ATVM_DELIVERY, ATVM_POLL_SECONDS at the default" in res.stdout


def test_check_says_the_env_file_was_refused_not_that_the_webhook_is_unset(world):
    env_file = installed_world(world)
    env_file.chmod(0o644)
    env = {k: v for k, v in world.env.items() if k != "MATTERMOST_ATVM_WEBHOOK"}  # only in the file
    res = subprocess.run([sys.executable, str(WATCHER), "check"], env=env, capture_output=True, text=True)
    assert res.returncode == 3
    assert f"env file {env_file} refused (mode 0644)" in res.stdout and f"chmod 600 {env_file}" in res.stdout
    assert "is not set" not in res.stdout
    assert "unit" in res.stdout and "inventory" in res.stdout


def test_check_warns_while_the_shipped_example_inventory_is_in_use(world):
    installed_world(world)
    res = world.cli("check")  # the checkout's inventory/vm-inventory.md is the shipped example
    assert res.returncode == 0 and "WARN inventory" in res.stdout and "is the shipped example" in res.stdout
    lab = world.root / "lab-inventory.md"
    lab.write_text("| Token | VM |\n|---|---|\n| rhel9 | lab-rhel9 |\n")
    res = world.cli("check", env={"ATVM_INVENTORY": str(lab)})
    assert "shipped example" not in res.stdout and "check: all good" in res.stdout


def test_check_never_posts_without_send_test(world):
    installed_world(world)
    assert world.cli("check").returncode == 0
    assert world.receiver.requests == []


def test_check_send_test_posts_exactly_one_test_message(world):
    installed_world(world)
    res = world.cli("check", "--send-test", env={"MATTERMOST_ATVM_CHANNEL": "atvm-ops"})
    assert res.returncode == 0, res.stdout + res.stderr
    assert "OK   test post delivered to channel atvm-ops (HTTP 200 ok)" in res.stdout
    assert len(world.receiver.requests) == 1 and len(world.receiver.posts) == 1
    post = world.receiver.posts[0]
    assert post["channel"] == "atvm-ops" and "TEST post" in post["text"]
    assert "TEST" in post["attachments"][0]["title"] and world.receiver.hook_id not in res.stdout


@pytest.mark.parametrize("fault, says", [
    (("error", 404, "web.incoming_webhook.invalid.app_error"), "test post rejected: HTTP 404"),
    (("proxy_status", 502), "test post uncertain: HTTP 502"),
])
def test_check_send_test_fails_with_the_reason(world, fault, says):
    from atvm_dev.receiver import Fault

    installed_world(world)
    world.receiver.queue(getattr(Fault, fault[0])(*fault[1:]))
    res = world.cli("check", "--send-test")
    assert res.returncode == 3 and says in res.stdout, res.stdout
    assert len(world.receiver.requests) == 1  # one attempt: never repeated


def test_check_send_test_sends_nothing_when_the_webhook_cannot_be_used(world):
    installed_world(world).chmod(0o644)
    res = world.cli("check", "--send-test")
    assert res.returncode == 3 and "test post not sent" in res.stdout and world.receiver.requests == []


def test_preflight_is_silent_when_a_watcher_could_run(world):
    installed_world(world)
    res = world.cli("check", "--preflight")
    assert (res.returncode, res.stdout, res.stderr) == (0, "", "")


@pytest.mark.parametrize("env, says", [
    ({"MATTERMOST_ATVM_WEBHOOK": ""}, "MATTERMOST_ATVM_WEBHOOK is not set"),
    ({"MATTERMOST_ATVM_WEBHOOK": "http://[::1/hooks/x"}, "value not shown"),
    ({"ATVM_POLL_SECONDS": "soon"}, "ATVM_POLL_SECONDS"),
])
def test_preflight_refuses_what_the_watcher_would_refuse(world, env, says):
    res = world.cli("check", "--preflight", env=env)
    assert res.returncode == 3 and says in res.stderr and res.stdout == ""
    assert len([line for line in res.stderr.splitlines() if says in line]) == 1  # said once
    watch = world.cli("watch", "--build-name", "b-pre", env=env)
    assert watch.returncode == 3
