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

import html
import io
import json
import os
import signal
from pathlib import Path
from typing import List
from urllib.parse import quote, unquote

import pytest
from conftest import HOOK_TOKEN, World, world_env
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from reliability_helpers import (  # noqa: F401
    assert_no_token,
    cli,
    finish,
    finished,
    no_token_left,
    run_leaks,
    token_leaks,
    token_runs,
    wait_for,
    watch,
)

from atvm_dev.receiver import Answer, Fault, MattermostDouble
from atvm_watcher import cli as cli_mod
from atvm_watcher import log, mattermost, redact, transport
from atvm_watcher import settings as settings_mod

pytestmark = pytest.mark.usefixtures("no_token_left")


def write_env(world, mode: int, text: str = "") -> Path:
    path = Path(world.env["ATVM_WATCHER_ENV_FILE"])
    path.write_text(text or f"MATTERMOST_ATVM_WEBHOOK={world.receiver.url}\nMATTERMOST_ATVM_CHANNEL=atvm\n")
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o606, 0o777, 0o620])
def test_env_file_readable_by_group_or_others_is_refused(world, mode):
    path = write_env(world, mode)
    values, problem = settings_mod.read_env_file(path)
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
    values, problem = settings_mod.read_env_file(path)
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
    assert "not a regular file" in settings_mod.read_env_file(path)[1]
    os.rmdir(path)
    os.mkfifo(path, 0o600)  # would block a reader forever
    assert "not a regular file" in settings_mod.read_env_file(path)[1]


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


@pytest.mark.parametrize("url", [
    f"ftp://127.0.0.1/hooks/{HOOK_TOKEN}",
    f"http://127.0.0.1:99999999/hooks/{HOOK_TOKEN}",
    f"http://127.0.0.1:1/hooks/{HOOK_TOKEN} trailing",
    f"http://[::1/hooks/{HOOK_TOKEN}",
    f"http://{'a' * 64}.example/hooks/{HOOK_TOKEN}",
    f"https://mattermost..example.invalid/hooks/{HOOK_TOKEN}",
])
def test_a_malformed_webhook_url_is_never_echoed(world, url):
    finished(world, "bad-url")
    res = cli(world, "watch", "--build-name", "bad-url", env={"MATTERMOST_ATVM_WEBHOOK": url})
    # refused at start as a configuration error (3), before anything is decided, recorded or sent
    assert res.returncode == 3, res.stderr
    assert "value not shown" in res.stderr and not world.build_dir("bad-url").exists()
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
    def explode(self, message_body=None, **kwargs):
        raise ValueError(f"cannot send {b''.join(self._buffer)!r} to {self.host}")  # the request line: the path

    monkeypatch.setattr("http.client.HTTPConnection.endheaders", explode)
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
    s = settings_mod.load({**world.env})
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


# --- any run of the token, however a server echoes it -------------------------------------------------

QUERY_TOKEN = "Qk7+/zR=w9%2Fx-_.~Lm4"  # a gateway's ?token=..., with characters that get re-encoded
PASSWORD = "s3cr3t-Pa55word"
SECRETS = (HOOK_TOKEN, QUERY_TOKEN, PASSWORD)


def _json_escaped(text: str) -> str:
    return json.dumps(text)[1:-1]


ENCODINGS = {
    "raw": lambda t: t,
    "upper": str.upper,
    "percent": lambda t: quote(t, safe=""),
    "percent-every-byte": lambda t: "".join(f"%{b:02X}" for b in t.encode()),
    "json": _json_escaped,
    "json-slashes": lambda t: _json_escaped(t).replace("/", "\\/"),
    "json-every-char": lambda t: "".join(f"\\u{ord(c):04x}" for c in t),
    "html": html.escape,
}


def any_run_of(text: str, secrets=SECRETS) -> List[str]:
    """Runs of 8 of any secret, raw or in any encoding above, in text (repr's doubled backslashes undone)."""
    text = text.replace("\\\\", "\\")
    forms = {encode(s) for s in secrets for encode in ENCODINGS.values()}
    return [run for form in forms for run in token_runs(text, form)]


@st.composite
def echoes(draw, secrets=SECRETS):
    """A server's answer that echoes a piece (8 characters or more) of a secret, cut anywhere, encoded somehow."""
    secret = draw(st.sampled_from(secrets))
    length = draw(st.integers(8, len(secret)))
    start = draw(st.integers(0, len(secret) - length))
    piece = ENCODINGS[draw(st.sampled_from(sorted(ENCODINGS)))](secret[start:start + length])
    before = draw(st.text(st.characters(blacklist_categories=("Cs",)), max_size=150))
    after = draw(st.text(max_size=20, alphabet="xyz <>/\n"))
    text = before + piece + after
    shape = draw(st.sampled_from(["plain", "json-id", "json-message", "html"]))
    status = draw(st.sampled_from([200, 303, 400, 403, 404, 413, 429, 500, 502]))
    if shape.startswith("json"):
        body = json.dumps({"id": text if shape == "json-id" else "x.app_error", "message": text, "status_code": status})
        return Answer(status, (("Content-Type", "application/json"),), body.encode())
    if shape == "html":
        text = f"<html><body><h1>{status}</h1><p>{text}</p></body></html>"
    return Answer(status, (("Content-Type", "text/plain"),), text.encode("utf-8", "surrogatepass"))


@pytest.fixture(scope="module")
def echo_double():
    with MattermostDouble(hook_id=HOOK_TOKEN) as double:
        yield double


URLS = {  # where the secret sits in the webhook URL -> the URL (for a port) and its secrets
    "path": (lambda port: f"http://127.0.0.1:{port}/hooks/{HOOK_TOKEN}", (HOOK_TOKEN,)),
    "query": (lambda port: f"http://127.0.0.1:{port}/hooks?token={QUERY_TOKEN}", (QUERY_TOKEN,)),
    "userinfo": (lambda port: f"http://svc:{PASSWORD}@127.0.0.1:{port}/hooks/{HOOK_TOKEN}", (PASSWORD, HOOK_TOKEN)),
}


@st.composite
def echoing_urls(draw):
    where = draw(st.sampled_from(sorted(URLS)))
    return where, draw(echoes(secrets=URLS[where][1]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=echoing_urls())
@example(case=("path", Answer(200, (), ("x" * 50 + HOOK_TOKEN).encode())))  # the detail is cut inside the token
@example(case=("query", Answer(404, (), f"no hook at /hooks?token={QUERY_TOKEN}".encode())))
def test_no_run_of_a_secret_survives_any_echo(echo_double, case):
    """Whatever the server echoes, wherever the outcome's detail is cut: nothing of a secret is kept."""
    where, answer = case
    url = URLS[where][0](echo_double.port)
    echo_double.queue(Fault("echo", answer=answer))
    outcome = mattermost.post(url, {"text": "x"}, timeout=2)
    assert outcome.kind != "posted"
    assert any_run_of(repr(outcome)) == [], outcome


def test_the_redactor_finds_every_secret_part_of_a_url():
    url = f"https://svc:{PASSWORD}@mattermost.example.com/gw/{HOOK_TOKEN}/hooks?token={QUERY_TOKEN}&x=1"
    red = redact.Redactor([url])
    text = (f"{url} {HOOK_TOKEN[3:15]} {QUERY_TOKEN.upper()} {quote(QUERY_TOKEN, safe='')} {unquote(QUERY_TOKEN)}"
            f" {_json_escaped(PASSWORD)} {html.escape(QUERY_TOKEN)} host mattermost.example.com")
    cleaned = red(text)
    assert any_run_of(cleaned) == [] and cleaned.endswith("host mattermost.example.com")  # the host is no secret
    assert red("nothing secret here") == "nothing secret here"
    assert any_run_of(repr(red)) == []


def test_the_log_filter_and_the_last_resort_report_catch_a_cut_token(world, capsys, monkeypatch):
    stream = io.StringIO()
    log.setup(world.receiver.url, stream=stream)
    try:
        log.get("b").error("server said %r", HOOK_TOKEN[:12])
    finally:
        log.setup("", stream=io.StringIO())
    assert token_runs(stream.getvalue()) == [] and "<webhook>" in stream.getvalue()

    def explode(args):
        raise RuntimeError(f"boom near {HOOK_TOKEN[2:14]}")

    for name, value in world.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(cli_mod, "dispatch", explode)
    assert cli_mod.main(["status"]) == 1
    err = capsys.readouterr().err
    assert "RuntimeError" in err and token_runs(err) == []


GLUED = ("ATVM_POLL_SECONDS", "ATVM_POST_ATTEMPTS", "ATVM_DELIVERY", "ATVM_LOG_DIR", "MATTERMOST_ATVM_CHANNEL")


@pytest.mark.parametrize("before", GLUED)
def test_a_webhook_glued_onto_another_line_is_never_printed(world, before):
    """An env file missing a line break: ``ATVM_POLL_SECONDS=1MATTERMOST_ATVM_WEBHOOK=https://...``."""
    del world.env["MATTERMOST_ATVM_WEBHOOK"]
    write_env(world, 0o600, f"{before}=1MATTERMOST_ATVM_WEBHOOK={world.receiver.url}\n")
    finished(world, "glued")
    for command in (["watch", "--build-name", "glued"], ["check"], ["status"], ["inspect", "--build-name", "glued"]):
        res = cli(world, *command)
        # status and inspect need neither: they warn and go on (settings.load_lenient)
        assert res.returncode == (3 if command[0] in ("watch", "check") else 0), (command, res.stdout, res.stderr)
        output = res.stdout + res.stderr
        assert before in output and "MATTERMOST_ATVM_WEBHOOK" in output, output  # names, never values
        assert token_runs(output) == [], output
        if command == ["check"]:  # every problem said once
            fails = [line for line in res.stdout.splitlines() if line.startswith("FAIL")]
            assert len(fails) == len(set(fails)), res.stdout
    assert world.receiver.requests == []


BAD_VALUES = {  # setting -> a bad value that could hold a secret (never shown), a bad value that cannot (shown)
    "ATVM_POLL_SECONDS": (f"1{HOOK_TOKEN}", "-1"),
    "ATVM_POST_TIMEOUT_SECONDS": (f"fast {HOOK_TOKEN}", "0.001"),
    "ATVM_POST_ATTEMPTS": (f"{HOOK_TOKEN}", "0"),
    "ATVM_DELIVERY": (f"at-{HOOK_TOKEN}", None),
}


@pytest.mark.parametrize("name", list(BAD_VALUES))
def test_configuration_errors_name_the_setting_never_a_value_that_could_be_secret(world, name):
    secret_like, harmless = BAD_VALUES[name]
    with pytest.raises(settings_mod.ConfigError) as bad:
        settings_mod.load({**world.env, name: secret_like, "MATTERMOST_ATVM_WEBHOOK": ""})
    assert name in str(bad.value) and token_runs(str(bad.value)) == [] and "value not shown" in str(bad.value)
    if harmless is not None:
        with pytest.raises(settings_mod.ConfigError) as bad:
            settings_mod.load({**world.env, name: harmless})
        assert f"{name}={harmless!r}" in str(bad.value)
    res = cli(world, "status", env={name: secret_like})
    assert res.returncode == 0 and f"warning: configuration: {name}" in res.stderr and token_runs(res.stderr) == []
    res = cli(world, "watch", "--build-name", "b", env={name: secret_like})
    assert res.returncode == 3 and name in res.stderr and token_runs(res.stderr) == []


def test_a_flag_setting_never_shows_its_value():
    with pytest.raises(settings_mod.ConfigError) as bad:
        settings_mod._flag({"X": f"maybe {HOOK_TOKEN}"}, "X")
    assert token_runs(str(bad.value)) == [] and "yes or no" in str(bad.value)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(answer=echoes(secrets=(HOOK_TOKEN,)))
@example(answer=Answer(200, (), ("x" * 50 + HOOK_TOKEN).encode()))
@example(answer=Answer(404, (), ("<p>" + "y" * 110 + f"/hooks/{HOOK_TOKEN}</p>").encode()))
def test_no_output_of_any_command_holds_a_run_of_the_token(echo_double, tmp_path_factory, answer):
    """watch (journal format), status, inspect and check, and every file the watcher writes."""
    root = tmp_path_factory.mktemp("echo")
    world = World(root, echo_double, world_env(root, echo_double.url))
    echo_double.queue(Fault("echo", answer=answer))
    finished(world, "echo")
    code, out, err = watch(world, "echo", env={"JOURNAL_STREAM": "8:1234", "ATVM_POST_BACKOFF_SECONDS": "0"})
    assert code in (0, 4, 5), err
    outputs = [out, err]
    for command in (["status"], ["status", "--json"], ["inspect", "--build-name", "echo"],
                    ["inspect", "--build-name", "echo", "--json"], ["check"]):
        res = cli(world, *command)
        outputs += [res.stdout, res.stderr]
    assert [token_runs(text) for text in outputs if token_runs(text)] == []
    assert run_leaks(root) == {}
