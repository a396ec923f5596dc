"""Secrets (issue 4, item 5): the env file that holds the webhook, and the webhook URL itself.

An env file readable by group or others is REFUSED, not fixed: the watcher does not read it,
`watch` exits 3 and `check` fails, both naming the file, its mode and `chmod 600`. Why refuse:
a root daemon must not silently change a file an operator (or config management) owns, and a
secret that was exposed needs a person to look at it (and maybe rotate the hook); the installer
is the one place that sets the mode, when it writes the file.

The webhook URL (its path is the token) is scanned for in every output of every scenario here;
the other reliability modules scan their outputs and state folders the same way.
"""

from __future__ import annotations

import io
import json
import os
import signal
from pathlib import Path

import pytest
from conftest import HOOK_TOKEN
from reliability_helpers import (  # noqa: F401
    assert_no_token,
    cli,
    finish,
    finished,
    no_token_left,
    token_leaks,
    wait_for,
    watch,
)

from atvm_watcher import log, mattermost, settings, transport
from atvm_watcher.receiver import Fault

pytestmark = pytest.mark.usefixtures("no_token_left")


def write_env(world, mode: int, text: str = "") -> Path:
    path = Path(world.env["ATVM_WATCHER_ENV_FILE"])
    path.write_text(text or f"MATTERMOST_ATVM_WEBHOOK={world.receiver.url}\nMATTERMOST_ATVM_CHANNEL=atvm\n")
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o606, 0o777, 0o620])
def test_env_file_readable_by_group_or_others_is_refused(world, mode):
    path = write_env(world, mode)
    values, problem = settings.read_env_file(path)
    assert values == {} and f"{mode:04o}" in problem and "chmod 600" in problem
    res = cli(world, "watch", "--build-name", "unsafe-env")  # values also in the environment, as under systemd
    assert res.returncode == 3 and "chmod 600" in res.stderr
    del world.env["MATTERMOST_ATVM_WEBHOOK"]  # only in the file now
    res = cli(world, "check")
    assert res.returncode == 3 and "chmod 600" in res.stdout
    res = cli(world, "watch", "--build-name", "unsafe-env")
    assert res.returncode == 3 and "chmod 600" in res.stderr
    assert not world.build_dir("unsafe-env").exists()
    assert path.stat().st_mode & 0o777 == mode  # refused, not silently changed


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_env_file_owner_only_is_read(world, mode):
    path = write_env(world, mode)
    values, problem = settings.read_env_file(path)
    assert problem is None and values["MATTERMOST_ATVM_CHANNEL"] == "atvm"
    finished(world, "safe-env")
    del world.env["MATTERMOST_ATVM_WEBHOOK"]  # from the file only
    code, _, err = watch(world, "safe-env")
    assert code == 0 and len(world.receiver.posts) == 1, err
    assert world.receiver.posts[0]["channel"] == "atvm"
    res = cli(world, "check")
    assert f"env file {path} has mode {mode:04o}" in res.stdout


def test_env_file_that_is_not_a_regular_file_is_refused(world):
    path = Path(world.env["ATVM_WATCHER_ENV_FILE"])
    path.mkdir()
    assert "not a regular file" in settings.read_env_file(path)[1]
    os.rmdir(path)
    os.mkfifo(path, 0o600)  # would block a reader forever
    assert "not a regular file" in settings.read_env_file(path)[1]


def test_other_commands_do_not_need_the_secret(world):
    """status/inspect/cancel never read the webhook: an unsafe env file is skipped, not an error for them."""
    write_env(world, 0o644)
    assert cli(world, "status").returncode == 0
    assert cli(world, "inspect", "--build-name", "nothing-yet").returncode == 0


# --- the token in every output ------------------------------------------------------------------------


def every_output(world, build: str, *args: str) -> None:
    """status and inspect, plain and --json, scanned for the token."""
    for command in (["status"], ["status", "--json"], ["status", "--build-name", build, "--json"],
                    ["inspect", "--build-name", build, *args], ["inspect", "--build-name", build, "--json", *args]):
        res = cli(world, *command)
        assert res.returncode == 0, res.stderr


SCENARIOS = {
    "posted": (),
    "rejected-400": (Fault.error(400, "web.incoming_webhook.invalid.app_error"),),
    "uncertain-reset": (Fault.post_then_reset(),),
    "retried-429": (Fault.rate_limited(retry_after=0, reset=0),),
    "server-echoes-url": (Fault.body_200(f"you posted to {HOOK_TOKEN}"),),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_no_token_in_any_output_of_a_delivery(world, name):
    """As under systemd (journal format); every other test scans the plain format."""
    world.receiver.queue(*SCENARIOS[name])
    finished(world, "scan", groups=(("linux", True),))
    code, _, err = watch(world, "scan", "--categorize", env={"JOURNAL_STREAM": "8:1234"})
    assert code in (0, 4, 5), err
    assert all(line.startswith("<") for line in err.splitlines()), err  # priorities for journald
    every_output(world, "scan", "--categorize")


def test_no_token_in_dry_run_output(world):
    finished(world, "dry")
    res = cli(world, "watch", "--build-name", "dry", "--dry-run")
    assert res.returncode == 0 and '"attachments"' in res.stdout


@pytest.mark.parametrize("url, code", [
    (f"ftp://127.0.0.1/hooks/{HOOK_TOKEN}", 3),
    (f"http://127.0.0.1:99999999/hooks/{HOOK_TOKEN}", 4),
    (f"http://127.0.0.1:1/hooks/{HOOK_TOKEN} trailing", 4),
    (f"http://[::1/hooks/{HOOK_TOKEN}", 4),
])
def test_a_malformed_webhook_url_is_never_echoed(world, url, code):
    finished(world, "bad-url")
    res = cli(world, "watch", "--build-name", "bad-url", env={"MATTERMOST_ATVM_WEBHOOK": url})
    assert res.returncode == code, res.stderr
    assert "value not shown" in res.stderr
    res = cli(world, "check", env={"MATTERMOST_ATVM_WEBHOOK": url})
    assert res.returncode == 3
    every_output(world, "bad-url")


def test_the_watchers_command_line_never_holds_the_token(world, tmp_path):
    finished(world, "argv")
    flag = tmp_path / "flag"
    proc = world.start_watcher("--build-name", "argv",
                               env={"ATVM_TEST_PAUSE_AT": "intent-written", "ATVM_TEST_PAUSE_FILE": str(flag)})
    wait_for(flag.exists, what="pause")
    assert_no_token(Path(f"/proc/{proc.pid}/cmdline").read_bytes())
    proc.send_signal(signal.SIGKILL)
    finish(proc)


def test_post_outcomes_and_exceptions_never_carry_the_url(receiver, monkeypatch):
    """Whatever http.client says (its messages can hold the path), only the exception's type is kept."""
    def explode(self, method, url, body=None, headers=None):
        raise ValueError(f"cannot send {url} to {self.host}")

    monkeypatch.setattr("http.client.HTTPConnection.request", explode)
    outcome = mattermost.post(receiver.url, {"text": "x"}, timeout=1)
    assert outcome.kind == "uncertain"
    assert_no_token(repr(outcome))
    target = transport.Target(receiver.url)
    assert_no_token(repr(target), str(target))
    with pytest.raises(ValueError) as bad:
        transport.Target(f"gopher://h/hooks/{HOOK_TOKEN}")
    assert_no_token(str(bad.value))


def test_log_lines_are_redacted_even_when_code_passes_the_url(receiver):
    stream = io.StringIO()
    logger = log.setup(receiver.url, stream=stream)
    try:
        log.get("b").error("failed posting to %s (%s)", receiver.url, f"/hooks/{HOOK_TOKEN}")
        logger.warning("token alone: " + HOOK_TOKEN)
    finally:
        log.setup("", stream=io.StringIO())
    text = stream.getvalue()
    assert text.count("<webhook>") >= 3
    assert_no_token(text)


def test_settings_never_show_the_webhook(world):
    s = settings.load({**world.env})
    assert_no_token(repr(s), str(s))
    assert json.dumps(s.webhook)  # present, only never printed


def test_the_whole_world_is_clean_after_a_crash_and_restart(world, tmp_path):
    finished(world, "crash-scan")
    flag = tmp_path / "flag"
    proc = world.start_watcher("--build-name", "crash-scan",
                               env={"ATVM_TEST_PAUSE_AT": "response-received", "ATVM_TEST_PAUSE_FILE": str(flag)})
    wait_for(flag.exists, what="pause")
    proc.send_signal(signal.SIGKILL)
    finish(proc)
    flag.unlink()
    code, _, _ = watch(world, "crash-scan")
    assert code == 5
    every_output(world, "crash-scan")
    assert token_leaks(world.root) == []
