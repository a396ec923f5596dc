"""End to end: the real watcher (a subprocess) against a real launcher process writing real files.

Every state of the contract's table is reached from files on disk, categorized and not, and
handled as the table says: one post for COMPLETED/FAILED, none for the rest, exit 0.
"""

from __future__ import annotations

import json
import os
import signal
import time

from conftest import HOOK_TOKEN

REQUEST = ["--template", "tmpl-a", "--config-family", "fam-b", "--migration-style", "live",
           "--integration-plugin", "plug-c", "--scope-description", "scope d"]


def finish(proc, timeout: float = 60):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def state_of(world, build, group=None):
    path = world.build_dir(build) / ("subruns/" + group if group else "") / "state.json"
    return json.loads(path.read_text())


def test_completed_run_posts_once_and_exits_0(world):
    build = "e2e-redhat9.6-ubuntu24.04-w2k25-fc"
    launcher = world.launch(build, "--outcome", "pass", "--step-seconds", "0.1")
    code, _, err = finish(world.start_watcher("--build-name", build, *REQUEST))
    assert code == 0, err
    assert launcher.wait(10) == 0
    posts = world.receiver.posts
    assert len(posts) == 1
    post = posts[0]
    assert "COMPLETED" in post["text"] and build in post["text"]
    att = post["attachments"][0]
    assert att["color"] == "#2eb886" and "COMPLETED" in att["fallback"]
    fields = {f["title"]: f["value"] for f in att["fields"]}
    assert fields["Template"] == "`tmpl-a`" and fields["Integration plugin"] == "`plug-c`"
    assert fields["Tests"].startswith("9 passed, 0 failed")
    assert "rh96-src" in fields["VMs of the whole build"] and "w2k25-tgt" in fields["VMs of the whole build"]
    assert fields["Log"] == f"`{world.log_dir / build}.log`" and fields["Reports"] == f"`{world.report_dir / build}`"
    st = state_of(world, build)
    assert st["state"] == "COMPLETED" and st["delivery"] == "posted"
    assert (world.build_dir(build) / "posted.marker").exists()
    assert "state COMPLETED" in err and "delivery posted" in err


def test_failed_run_posts_failed_with_titles(world):
    build = "e2e-ubuntu22.04-fail"
    world.launch(build, "--outcome", "fail", "--step-seconds", "0.1")
    code, _, err = finish(world.start_watcher("--build-name", build))
    assert code == 0, err
    (post,) = world.receiver.posts
    att = post["attachments"][0]
    assert "FAILED" in post["text"] and att["color"] == "#d00000"
    fields = {f["title"]: f["value"] for f in att["fields"]}
    assert fields["Failed tests (1)"].startswith("- `main migration 3 cuts over")
    assert state_of(world, build)["state"] == "FAILED"


def test_categorized_run_posts_once_per_subrun_then_exits(world):
    build = "e2e-cat-redhat9.6-w2k25"
    world.launch(build, "--group", "linux:pass", "--group", "windows:fail", "--flaky", "--step-seconds", "0.1")
    code, _, err = finish(world.start_watcher("--build-name", build, "--categorize", "--groups", "2",
                                              env={"ATVM_REPORT_URL": "https://ci.example.invalid/{build}/{group}/"}))
    assert code == 0, err
    posts = world.receiver.posts
    assert len(posts) == 2
    assert "COMPLETED" in posts[0]["text"] and posts[0]["text"].endswith("sub-run linux (1 of 2)")
    assert "FAILED" in posts[1]["text"] and posts[1]["text"].endswith("sub-run windows (2 of 2)")
    linux, windows = ({f["title"]: f["value"] for f in p["attachments"][0]["fields"]} for p in posts)
    # what the channel acts on: where to look, why it failed, what was flaky, which VMs (the shipped inventory)
    assert windows["Log"] == f"`{world.log_dir / build / 'windows.log'}`"
    assert windows["Reports"] == f"`{world.report_dir / build / 'windows'}`"
    assert posts[1]["attachments"][0]["title_link"] == f"https://ci.example.invalid/{build}/windows/"
    assert windows["Failed tests (1)"] == ("- `windows migration 3 cuts over and boots the target`: "
                                           "AssertionError: expected 'Migrated' to equal 'Ready'")
    assert linux["Flaky: passed on a retry (1)"] == "- `replicates the disks`" and linux["Tests"].endswith("1 flaky")
    assert linux["VMs of sub-run linux"].startswith("rh96-src") and "w2k25" not in linux["VMs of sub-run linux"]
    assert windows["VMs of sub-run windows"].startswith("w2k25-src")
    assert all("rule" not in p["attachments"][0]["footer"] for p in posts)
    assert state_of(world, build, "linux")["state"] == "COMPLETED"
    assert state_of(world, build, "windows")["state"] == "FAILED"
    parent = state_of(world, build)
    assert parent["state"] == "FAILED" and parent["groups"] == ["linux", "windows"]


def test_launcher_killed_is_terminated_without_post(world):
    build = "e2e-killed"
    world.launch(build, "--die", "--step-seconds", "0.1")
    code, _, err = finish(world.start_watcher("--build-name", build))
    assert code == 0, err
    assert world.receiver.posts == [] and world.receiver.requests == []
    assert state_of(world, build)["state"] == "TERMINATED"


def test_exit_code_of_a_signal_is_terminated(world):
    build = "e2e-sig"
    run = world.layout(build).run()
    run.log.write_text("Running: a.cy.js\n")
    run.exit.write_text("137\n")
    code, _, err = finish(world.start_watcher("--build-name", build))
    assert code == 0, err
    assert state_of(world, build)["state"] == "TERMINATED" and world.receiver.requests == []


def test_hung_launcher_is_hung_without_post(world):
    build = "e2e-hung"
    launcher = world.launch(build, "--hang")
    code, _, err = finish(world.start_watcher("--build-name", build, env={"ATVM_HUNG_AFTER_SECONDS": "1.5"}))
    assert code == 0, err
    assert launcher.poll() is None  # still alive: hung, not gone
    assert state_of(world, build)["state"] == "HUNG" and world.receiver.requests == []


def test_no_evidence_is_unknown_after_start_timeout(world):
    code, _, err = finish(world.start_watcher("--build-name", "e2e-never-started",
                                              env={"ATVM_START_TIMEOUT_SECONDS": "0.5"}))
    assert code == 0, err
    assert state_of(world, "e2e-never-started")["state"] == "UNKNOWN" and world.receiver.requests == []


def test_status_file_is_authoritative(world):
    build = "e2e-status-word"
    world.launch(build, "--outcome", "fail", "--outcome-file", "status", "--step-seconds", "0.05")
    code, _, err = finish(world.start_watcher("--build-name", build))
    assert code == 0, err
    assert "FAILED" in world.receiver.posts[0]["text"] and "status-file" in err


def test_cancel_while_running_never_posts(world):
    build = "e2e-cancel-me"
    world.launch(build, "--outcome", "pass", "--step-seconds", "2")  # the cancel lands long before the end
    watcher = world.start_watcher("--build-name", build)
    world.wait_for_state(build)
    out = world.cli("cancel", "--build-name", build, check=True).stdout
    assert "cancelled build" in out
    code, _, err = finish(watcher)
    assert code == 0, err
    assert world.receiver.requests == []
    assert state_of(world, build)["state"] == "CANCELLED"
    assert (world.build_dir(build) / "cancelled.marker").exists()


def test_restart_on_finished_build_does_nothing(world):
    build = "e2e-restart"
    world.launch(build, "--outcome", "pass", "--step-seconds", "0.05")
    assert finish(world.start_watcher("--build-name", build))[0] == 0
    assert len(world.receiver.posts) == 1
    code, _, err = finish(world.start_watcher("--build-name", build))
    assert code == 0 and "already finished" in err
    assert len(world.receiver.requests) == 1


def test_watcher_started_on_an_already_finished_run_posts_once(world):
    build = "e2e-late-watcher"
    launcher = world.launch(build, "--outcome", "fail", "--step-seconds", "0.02")
    launcher.wait(20)
    code, _, err = finish(world.start_watcher("--build-name", build))
    assert code == 0, err
    assert len(world.receiver.posts) == 1 and "FAILED" in world.receiver.posts[0]["text"]


def test_reports_of_an_earlier_run_are_ignored(world):
    build = "e2e-rerun"
    old = world.layout(build).run().reports / "old"
    old.mkdir(parents=True)
    src = os.path.join(os.path.dirname(__file__), "fixtures", "reports", "fail", "mochawesome.json")
    stale = old / "mochawesome_old.json"
    stale.write_bytes(open(src, "rb").read())
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    world.launch(build, "--outcome", "pass", "--step-seconds", "0.05")
    code, _, err = finish(world.start_watcher("--build-name", build))
    assert code == 0, err
    assert "COMPLETED" in world.receiver.posts[0]["text"]


def test_pid_file_liveness(world):
    build = "e2e-pidfile"
    world.launch(build, "--pid-file", "--outcome", "pass", "--step-seconds", "0.05")
    code, _, err = finish(world.start_watcher("--build-name", build))
    assert code == 0, err
    assert len(world.receiver.posts) == 1


def test_dry_run_posts_and_records_nothing(world):
    build = "e2e-dry"
    world.launch(build, "--outcome", "fail", "--step-seconds", "0.05")
    code, out, err = finish(world.start_watcher("--build-name", build, "--dry-run"))
    assert code == 0, err
    assert world.receiver.requests == []
    assert '"attachments"' in out and "FAILED" in out
    assert not (world.build_dir(build) / "state.json").exists()


def test_recorded_request_feeds_the_watcher(world):
    build = "e2e-recorded"
    world.cli("record-request", "--build-name", build, "--categorize", *REQUEST, check=True)
    world.launch(build, "--group", "only:pass", "--step-seconds", "0.05")
    code, _, err = finish(world.start_watcher("--build-name", build))
    assert code == 0, err
    (post,) = world.receiver.posts
    assert "sub-run only (1)" in post["text"]
    assert any(f["value"] == "`fam-b`" for f in post["attachments"][0]["fields"])


def test_missing_webhook_is_a_configuration_error(world):
    res = world.cli("watch", "--build-name", "e2e-nohook", env={"MATTERMOST_ATVM_WEBHOOK": ""})
    assert res.returncode == 3 and "MATTERMOST_ATVM_WEBHOOK is not set" in res.stderr
    assert not (world.build_dir("e2e-nohook")).exists()


def test_second_watcher_on_same_build_exits_6(world):
    build = "e2e-two"
    world.launch(build, "--outcome", "pass", "--step-seconds", "0.6")  # the first still runs when the second starts
    first = world.start_watcher("--build-name", build)
    world.wait_for_state(build)
    code, _, err = finish(world.start_watcher("--build-name", build))
    assert code == 6 and "already watching" in err
    assert finish(first)[0] == 0
    assert len(world.receiver.posts) == 1


def test_inspect_and_status_explain(world):
    build = "e2e-explain"
    world.launch(build, "--outcome", "fail", "--step-seconds", "0.02").wait(20)
    text = world.cli("inspect", "--build-name", build, check=True).stdout
    assert "would decide now: FAILED" in text and "rule exit-code" in text and "evidence read" in text
    data = json.loads(world.cli("inspect", "--build-name", build, "--json", check=True).stdout)
    assert data["decision"]["state"] == "FAILED" and data["decision"]["counts"]["failed"] == 1
    assert finish(world.start_watcher("--build-name", build))[0] == 0
    status = json.loads(world.cli("status", "--json", check=True).stdout)
    (row,) = status["builds"]
    assert row["build_name"] == build and row["state"] == "FAILED" and row["delivery"] == "posted"
    assert build in world.cli("status", check=True).stdout
    for output in (text, json.dumps(data), json.dumps(status)):
        assert HOOK_TOKEN not in output


def test_hand_made_terminal_state_is_final(world):
    """state.json terminal (however it got there) means: do nothing, exit 0, post nothing."""
    build = "e2e-final"
    world.launch(build, "--outcome", "pass", "--step-seconds", "0.02").wait(20)
    bd = world.build_dir(build)
    bd.mkdir()
    (bd / "state.json").write_text(json.dumps({"state": "COMPLETED"}))
    code, _, err = finish(world.start_watcher("--build-name", build))
    assert code == 0 and "already finished" in err
    assert world.receiver.requests == []


def test_post_left_owed_is_sent_by_the_restarted_watcher(world):
    """Decided and recorded, then the watcher died before any attempt: the restart posts it, once."""
    build = "e2e-owed"
    world.launch(build, "--outcome", "fail", "--step-seconds", "0.02").wait(20)
    assert finish(world.start_watcher("--build-name", build))[0] == 0
    bd = world.build_dir(build)
    state = json.loads((bd / "state.json").read_text())
    for name in ("posted.marker", "delivery.json"):
        (bd / name).unlink()
    (bd / "state.json").write_text(json.dumps({**state, "delivery": "pending"}))
    code, _, err = finish(world.start_watcher("--build-name", build))
    assert code == 0, err
    assert len(world.receiver.posts) == 2  # the first run's post, and the owed one re-sent by the restart
    assert (bd / "posted.marker").exists()


def test_restart_after_death_mid_request_reports_uncertain_once(world):
    build = "e2e-midflight"
    world.launch(build, "--outcome", "pass", "--step-seconds", "0.02").wait(20)
    assert finish(world.start_watcher("--build-name", build))[0] == 0
    bd = world.build_dir(build)
    state = json.loads((bd / "state.json").read_text())
    (bd / "posted.marker").unlink()
    (bd / "delivery.json").write_text(json.dumps({"phase": "sending", "attempts": 1}))
    (bd / "state.json").write_text(json.dumps({**state, "delivery": "pending"}))
    code, _, err = finish(world.start_watcher("--build-name", build))
    assert code == 5 and "delivery uncertain" in err
    assert json.loads((bd / "state.json").read_text())["delivery"] == "uncertain"
    assert finish(world.start_watcher("--build-name", build))[0] == 0  # reported once; final since
    assert len(world.receiver.requests) == 1
    code, _, _ = finish(world.start_watcher("--build-name", build, "--at-least-once"))
    assert code == 0 and len(world.receiver.posts) == 2  # the operator chose at-least-once


def test_damaged_state_fields_are_not_trusted(world):
    build = "e2e-damaged"
    bd = world.build_dir(build)
    bd.mkdir()
    (bd / "state.json").write_text(json.dumps({"state": 5, "groups": "abc", "categorized": "yes"}))
    world.launch(build, "--group", "linux:pass", "--step-seconds", "0.02").wait(20)
    code, _, err = finish(world.start_watcher("--build-name", build, "--categorize"))
    assert code == 0, err
    assert [p["text"].split("sub-run ")[1] for p in world.receiver.posts] == ["linux (1)"]
    assert state_of(world, build)["groups"] == ["linux"]


def test_inspect_and_status_write_nothing(world):
    world.launch("e2e-readonly", "--outcome", "pass", "--step-seconds", "0.02").wait(20)
    world.cli("inspect", "--build-name", "e2e-readonly", check=True)
    world.cli("inspect", "--build-name", "e2e-readonly", "--json", "--categorize", check=True)
    world.cli("status", "--build-name", "e2e-readonly", check=True)
    assert list(world.state_root.iterdir()) == []


def test_sigterm_stops_a_waiting_watcher_promptly_without_a_post(world):
    """systemctl stop: the watcher wakes from its poll sleep at once and exits 0; nothing is posted."""
    build = "e2e-sigterm"
    world.launch(build, "--hang")
    watcher = world.start_watcher("--build-name", build, env={"ATVM_POLL_SECONDS": "30"})
    world.wait_for_state(build)
    watcher.send_signal(signal.SIGTERM)
    code, _, err = finish(watcher, timeout=5)  # far less than one 30 s poll interval
    assert code == 0 and "stop requested" in err
    assert world.receiver.requests == []
    assert state_of(world, build)["state"] in ("WAITING", "RUNNING")


def test_a_categorized_run_that_fails_before_any_sub_run_is_posted_once(world):
    """No sub-run ever began (setup failed): the run's own FAILED is the one post, not a silent end."""
    build = "e2e-cat-setup-fails"
    run = world.layout(build).run()
    run.log.write_text("provisioning VMs...\nError: could not reach vCenter\n")
    run.exit.write_text("1\n")
    code, _, err = finish(world.start_watcher("--build-name", build, "--categorize"))
    assert code == 0, err
    assert len(world.receiver.posts) == 1 and "FAILED" in world.receiver.posts[0]["text"]
    code, _, err = finish(world.start_watcher("--build-name", build, "--categorize"))  # final: never again
    assert code == 0 and len(world.receiver.posts) == 1, err


# --- a forgotten (or needless) --categorize is said once, in the journal and by inspect -----------------


def test_a_forgotten_categorize_is_reported_once(world):
    build = "e2e-forgot-categorize"
    world.launch(build, "--group", "linux:pass", "--group", "windows:pass", "--step-seconds", "0.05").wait(20)
    code, _, err = finish(world.start_watcher("--build-name", build))
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "looks like a categorized run" in line]
    assert len(warnings) == 1 and warnings[0].startswith("WARNING") and "linux, windows" in warnings[0]
    assert "--categorize" in warnings[0] and len(world.receiver.posts) == 1  # the one aggregate post
    text = world.cli("inspect", "--build-name", build, check=True).stdout
    assert "warning: this looks like a categorized run" in text
    assert "looks like" not in world.cli("inspect", "--build-name", build, "--categorize", check=True).stdout


def test_a_categorized_watcher_on_a_run_without_sub_runs_says_so(world):
    build = "e2e-needless-categorize"
    world.launch(build, "--outcome", "pass", "--step-seconds", "0.05").wait(20)
    code, _, err = finish(world.start_watcher("--build-name", build, "--categorize"))
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "no sub-run appeared" in line]
    assert len(warnings) == 1 and warnings[0].startswith("WARNING")
    assert len(world.receiver.posts) == 1  # no sub-run at all: the run's own result is its one post
    text = world.cli("inspect", "--build-name", build, "--categorize", check=True).stdout
    assert "warning: the run finished and no sub-run appeared" in text


def test_a_plain_runs_report_subfolders_are_not_taken_for_sub_runs(world):
    build = "e2e-plain-subfolders"
    world.launch(build, "--outcome", "pass", "--step-seconds", "0.05").wait(20)
    extra = world.report_dir / build / "html"
    extra.mkdir()
    (extra / "index.json").write_text("{}")  # a reporter's own subfolder, beside the run's reports
    code, _, err = finish(world.start_watcher("--build-name", build))
    assert code == 0 and "looks like a categorized run" not in err, err


def test_the_post_names_the_vms_the_inventory_holds_when_the_run_ends(world, tmp_path):
    # The watcher parses the inventory when it starts (so a post does not wait for that); an edit made
    # while it waits is what the post shows.
    inv = tmp_path / "lab-inventory.md"
    head = "| Token | VM | OS | Role | Address | Notes |\n|---|---|---|---|---|---|\n"
    inv.write_text(head + "| edited | before-vm | | | | |\n", encoding="utf-8")
    build = "inv-edited-while-waiting"
    proc = world.start_watcher("--build-name", build, env={"ATVM_INVENTORY": str(inv)})
    world.wait_for_state(build)  # written after the watcher read the inventory
    inv.write_text(head + "| edited | after-vm  | | | | |\n", encoding="utf-8")  # the same size
    world.launch(build, "--step-seconds", "0.05")
    code, _, err = finish(proc)
    assert code == 0, err
    (post,) = world.receiver.posts
    fields = {f["title"]: f["value"] for f in post["attachments"][0]["fields"]}
    assert "after-vm" in fields["VMs of the whole build"] and "before-vm" not in fields["VMs of the whole build"]
