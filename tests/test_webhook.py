"""Every webhook fault of issue 4 (item 2), twice: one POST classified in process, then the real
watcher against the misbehaving loopback receiver: posted after retry, recorded delivery-uncertain,
or recorded permanent failure; never a crash, never lost state, never a second post.

No test sends a packet off this machine: "name not resolvable" refuses the lookup inside the
process (a sitecustomize guard for the watcher subprocess), "connect timeout" is a 127.0.0.1
listener whose accept queue is full.
"""

from __future__ import annotations

import json
import re
import socket
import textwrap
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import pytest
from conftest import HOOK_TOKEN
from reliability_helpers import assert_no_token, finished, no_token_left, read_json, status, watch  # noqa: F401

from atvm_dev.receiver import EARLY_HINTS, Answer, Fault, MattermostDouble, app_error
from atvm_watcher import mattermost, transport

pytestmark = pytest.mark.usefixtures("no_token_left")
PAYLOAD = {"text": "ATVM run COMPLETED: b", "attachments": [{"fallback": "done", "color": "#2eb886"}]}
FAST = {"ATVM_POST_TIMEOUT_SECONDS": "0.5", "ATVM_POST_BACKOFF_SECONDS": "0.02", "ATVM_POST_ATTEMPTS": "3"}


# --- loopback tricks ------------------------------------------------------------------------------


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@contextmanager
def full_backlog() -> Iterator[int]:
    """A 127.0.0.1 port that never completes a handshake: its accept queue is full, so SYNs are dropped."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):  # fill the queue; once a connect times out it is full
            c = socket.socket()
            c.settimeout(0.2)
            fillers.append(c)
            try:
                c.connect(("127.0.0.1", port))
            except (socket.timeout, TimeoutError):
                break
        else:
            pytest.skip("this kernel does not drop SYNs to a full accept queue")
        yield port
    finally:
        for c in fillers:
            c.close()
        server.close()


GUARD = '''
"""Test guard: no name lookup leaves this process; only 127.0.0.1 is reachable."""
import os, socket
_real = socket.getaddrinfo
def _guard(host, *args, **kwargs):
    with open(os.environ["NETGUARD_LOG"], "a") as fh:
        fh.write(f"{host}\\n")
    if host != "127.0.0.1":
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known (test guard)")
    return _real(host, *args, **kwargs)
socket.getaddrinfo = _guard
'''


def guard_env(tmp_path: Path) -> dict:
    folder = tmp_path / "netguard"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(textwrap.dedent(GUARD))
    return {"PYTHONPATH": str(folder), "NETGUARD_LOG": str(tmp_path / "lookups.txt")}


@pytest.fixture
def no_dns(monkeypatch):
    looked_up = []

    def refuse(host, *args, **kwargs):
        looked_up.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return looked_up


# --- one POST, classified ------------------------------------------------------------------------

ECHO_404 = Answer(404, (("Content-Type", "text/html"),),
                  f"<h1>Not Found</h1><p>The requested URL /hooks/{HOOK_TOKEN} was not found.</p>".encode())
SERVER_FAULTS = {
    # name: (fault, kind, posts created, error id)
    "no-response-after-send": (Fault.hang_before_post(), "uncertain", 0, ""),
    "posted-then-no-response": (Fault.post_then_hang(), "uncertain", 1, ""),
    "reset-before-answer": (Fault.reset_before_post(), "uncertain", 0, ""),
    "reset-after-post": (Fault.post_then_reset(), "uncertain", 1, ""),
    "reset-mid-response": (Fault.post_then_partial(), "uncertain", 1, ""),
    "500-mattermost": (Fault.error(500, "api.post.create_webhook_post.creating.app_error"), "not-sent", 0,
                       "api.post.create_webhook_post.creating.app_error"),
    "500-proxy": (Fault.proxy_status(500), "uncertain", 0, ""),
    "502": (Fault.proxy_status(502), "uncertain", 0, ""),
    "503": (Fault.proxy_status(503), "uncertain", 0, ""),
    "504": (Fault.proxy_status(504), "uncertain", 0, ""),
    "502-after-post": (Fault.post_then_status(502), "uncertain", 1, ""),
    "429-retry-after": (Fault.rate_limited(retry_after=7, reset=9), "not-sent", 0, ""),
    "429-ratelimit-reset": (Fault.rate_limited(retry_after=None, reset=9), "not-sent", 0, ""),
    "400": (Fault.error(400, "web.incoming_webhook.invalid.app_error"), "rejected", 0,
            "web.incoming_webhook.invalid.app_error"),
    "403-channel-locked": (Fault.error(403, "web.incoming_webhook.channel_locked.app_error"), "rejected", 0,
                           "web.incoming_webhook.channel_locked.app_error"),
    "404": (Fault("page_404", answer=Answer(404, (("Content-Type", "text/plain"),), b"404 page not found\n")),
            "rejected", 0, ""),
    "404-echoing-the-url": (Fault("echo_404", answer=ECHO_404), "rejected", 0, ""),
    "413": (Fault.error(413, "api.context.request_body_too_large.app_error"), "rejected", 0,
            "api.context.request_body_too_large.app_error"),
    "501": (Fault.error(501, "api.incoming_webhook.disabled.app_error", "Incoming webhooks have been disabled"),
            "rejected", 0, "api.incoming_webhook.disabled.app_error"),
    "200-html": (Fault.html_200(), "uncertain", 0, ""),
    "200-other-body": (Fault.body_200("OK\n"), "uncertain", 0, ""),
    "200-body-echoing-the-url": (Fault.body_200(f"received /hooks/{HOOK_TOKEN}"), "uncertain", 0, ""),
    "trickle-too-slow": (Fault.trickle(0.05), "uncertain", 1, ""),
    "trickle-in-time": (Fault.trickle(0.001), "posted", 1, ""),
    "ok": (Fault.ok(), "posted", 1, ""),
    # Only a complete "200 ok" is a post: a body cut short of its length, an interim answer taken for
    # the answer, and a redirect after which the server may have acted all used to read otherwise.
    "200-cut-after-ok": (Fault.post_then_cut(), "uncertain", 1, ""),
    "200-cut-after-o": (Fault.post_then_cut(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\no"), "uncertain", 1, ""),
    "200-chunked-cut": (Fault.post_then_cut(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n"),
                        "uncertain", 1, ""),
    "103-then-200": (Fault.interim_then_answer(), "posted", 1, ""),
    "100-then-200": (Fault.interim_then_answer(b"HTTP/1.1 100 Continue\r\n\r\n"), "posted", 1, ""),
    "102-100-103-then-200": (Fault.interim_then_answer(b"HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 100 Continue\r\n"
                                                       b"\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"),
                             "posted", 1, ""),
    "103-then-502": (Fault("interim_502", then="interim", raw=EARLY_HINTS, answer=Answer(502)), "uncertain", 0, ""),
    "303-after-post": (Fault.post_then_redirect(303), "uncertain", 1, ""),
    "301": (Fault.redirect(301), "uncertain", 0, ""),
    "302": (Fault.redirect(302), "uncertain", 0, ""),
    "307": (Fault.redirect(307), "uncertain", 0, ""),
    "308": (Fault.redirect(308), "uncertain", 0, ""),
    "409": (Fault("conflict", answer=Answer(409)), "rejected", 0, ""),
}


@pytest.mark.parametrize("name", list(SERVER_FAULTS))
def test_one_post_is_classified(receiver, name):
    fault, kind, posts, error_id = SERVER_FAULTS[name]
    receiver.queue(fault)
    outcome = mattermost.post(receiver.url, PAYLOAD, timeout=0.5)
    assert (outcome.kind, outcome.error_id) == (kind, error_id), outcome
    receiver.wait_for_posts(posts, timeout=2)
    assert len(receiver.posts) == posts
    assert len(receiver.requests) == 1
    assert_no_token(outcome.detail, outcome.error_id, repr(outcome))
    if name.startswith("429"):
        assert outcome.retry_after == (7 if name == "429-retry-after" else 9)


def test_connection_refused_is_not_sent():
    outcome = mattermost.post(f"http://127.0.0.1:{closed_port()}/hooks/{HOOK_TOKEN}", PAYLOAD, timeout=1)
    assert outcome.kind == "not-sent" and "cannot connect" in outcome.detail
    assert_no_token(repr(outcome))


def test_name_not_resolvable_is_not_sent(no_dns):
    outcome = mattermost.post(f"https://mattermost.invalid/hooks/{HOOK_TOKEN}", PAYLOAD, timeout=1)
    assert outcome.kind == "not-sent" and "cannot resolve" in outcome.detail
    assert no_dns == ["mattermost.invalid"]
    assert_no_token(repr(outcome))


def test_connect_timeout_is_not_sent():
    with full_backlog() as port:
        started = time.monotonic()
        outcome = mattermost.post(f"http://127.0.0.1:{port}/hooks/{HOOK_TOKEN}", PAYLOAD, timeout=0.3)
    assert outcome.kind == "not-sent" and "timed out" in outcome.detail
    assert time.monotonic() - started < 10  # bounded by the timeout, not by the kernel's SYN retries


def test_a_url_http_client_would_refuse_is_not_sent_and_refused_before_connecting(receiver):
    for url in (receiver.url + " x", receiver.url + "\r\nX: y", receiver.url + "é"):
        outcome = mattermost.post(url, PAYLOAD, timeout=1)
        assert outcome.kind == "not-sent" and "nothing was sent" in outcome.detail, outcome
        assert_no_token(repr(outcome))
    assert receiver.requests == []


# --- nothing sent never reads as "maybe sent" ----------------------------------------------------------


def with_host(url: str, host: str) -> str:
    return re.sub(r"//[^/]+/", f"//{host}/", url, count=1)


BAD_BEFORE_SENDING = {  # a URL or timeout every layer must refuse before a byte of the request leaves
    "label-over-63": lambda url: (with_host(url, "a" * 64 + ".example"), 1.0),
    "empty-label": lambda url: (with_host(url, "mattermost..example"), 1.0),
    "leading-dot": lambda url: (with_host(url, ".example"), 1.0),
    "name-over-253": lambda url: (with_host(url, ".".join(["abcdefghi"] * 26)), 1.0),
    "port-0": lambda url: (with_host(url, "127.0.0.1:0"), 1.0),
    "port-over-65535": lambda url: (with_host(url, "127.0.0.1:65536"), 1.0),
    "bad-ipv6": lambda url: (with_host(url, "[::zz]"), 1.0),
    "timeout-1e10": lambda url: (url, 1e10),
    "timeout-nan": lambda url: (url, float("nan")),
    "timeout-inf": lambda url: (url, float("inf")),
    "timeout-negative": lambda url: (url, -1.0),
    "timeout-zero": lambda url: (url, 0.0),
}


@pytest.mark.parametrize("name", list(BAD_BEFORE_SENDING))
def test_what_fails_before_the_first_byte_is_not_sent(receiver, name, no_dns):
    """A failure before the request leaves is not-sent (retried, exit 75), never uncertain (never resent):
    a host label over 63 characters (IDNA) and a timeout of 1e10 s (an overflow) used to raise, after the
    intent record, so the restart said DELIVERY-UNCERTAIN though nothing had been sent."""
    url, timeout = BAD_BEFORE_SENDING[name](receiver.url)
    outcome = mattermost.post(url, PAYLOAD, timeout=timeout)
    assert outcome.kind == "not-sent" and "nothing was sent" in outcome.detail, outcome
    assert_no_token(repr(outcome))
    assert receiver.requests == [] and no_dns == []


@pytest.mark.parametrize("host", ["a" * 64 + ".example", "x..example"])
def test_a_host_the_connect_call_refuses_is_not_sent(receiver, host, monkeypatch):
    """Below the URL check: the IDNA error raised inside connect() itself (before any lookup is made) is a
    failure before sending."""
    monkeypatch.setattr(transport, "_resolvable", lambda h: True)
    target = transport.Target(with_host(receiver.url, host))
    answer = transport.post(target, b"{}", mattermost.HEADERS, 1.0)
    assert isinstance(answer, transport.Failure) and answer.sent is False, answer
    assert receiver.requests == []


def test_a_request_http_client_refuses_to_build_is_not_sent(receiver):
    """http.client checks the request line and headers as it builds them, which now happens before the
    connection is made; the check used to come after it, so its refusal read as "maybe sent"."""
    target = transport.Target(receiver.url)
    target.path = f"/hooks/{HOOK_TOKEN} with spaces"  # past Target's own check
    for t, headers in ((target, mattermost.HEADERS), (transport.Target(receiver.url), {"X-Bad": "a\r\nb"})):
        answer = transport.post(t, b"{}", headers, 1.0)
        assert isinstance(answer, transport.Failure) and answer.sent is False, answer
        assert_no_token(answer.reason)
    assert receiver.requests == []


def test_a_payload_that_cannot_be_encoded_is_not_sent(receiver):
    outcome = mattermost.post(receiver.url, ["a", "damaged", "stored", "payload"], timeout=1)
    assert outcome.kind == "not-sent" and receiver.requests == []


def test_a_lone_surrogate_in_the_payload_is_sent_not_crashed_on(receiver):
    outcome = mattermost.post(receiver.url, {"text": "title \ud800 end"}, timeout=1)
    assert outcome.kind == "posted"
    assert receiver.posts[0]["text"].startswith("title ")


def test_huge_answer_body_is_capped(receiver):
    receiver.queue(Fault.body_200("x" * (transport.MAX_BODY * 4)))
    outcome = mattermost.post(receiver.url, PAYLOAD, timeout=2)
    assert outcome.kind == "uncertain" and len(outcome.detail) < 300


@contextmanager
def raw_server(answer: bytes) -> Iterator[str]:
    """A 127.0.0.1 server that reads one request whole, sends exactly ``answer`` and closes: no HTTP library
    between the bytes in a test and the client."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(re.search(rb"content-length:\s*(\d+)", head, re.IGNORECASE).group(1))
            while len(body) < length:
                body += conn.recv(65536)
            conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}/hooks/{HOOK_TOKEN}"
    finally:
        thread.join(timeout=5)
        server.close()


RAW_ANSWERS = {
    "103-then-200": (b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
                     b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", "posted"),
    "200": (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", "posted"),
    "200-until-close": (b"HTTP/1.1 200 OK\r\n\r\nok", "posted"),  # no length: the close ends the body
    "200-cut-after-ok": (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nok", "uncertain"),
    "200-cut-after-o": (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\no", "uncertain"),
    "200-head-only": (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", "uncertain"),
    "101-unasked": (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\nok", "uncertain"),
    "endless-103": (b"HTTP/1.1 103 Early Hints\r\n\r\n" * 40 + b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                    "uncertain"),
    "303": (b"HTTP/1.1 303 See Other\r\nLocation: /posts/1\r\nContent-Length: 0\r\n\r\n", "uncertain"),
}


@pytest.mark.parametrize("name", list(RAW_ANSWERS))
def test_only_a_complete_final_200_ok_is_a_post(name):
    answer, kind = RAW_ANSWERS[name]
    with raw_server(answer) as url:
        outcome = mattermost.post(url, PAYLOAD, timeout=2)
    assert outcome.kind == kind, outcome


@pytest.mark.parametrize("headers, expected", [
    ({"Retry-After": "3"}, 3.0),
    ({"Retry-After": "0.5"}, 0.5),
    ({"Retry-After": "-4"}, 0.0),
    ({"Retry-After": "Thu, 01 Jan 2026 00:00:10 GMT"}, 10.0),
    ({"X-RateLimit-Reset": "2"}, 2.0),
    ({"X-RateLimit-Reset": "1767225605"}, 5.0),  # an epoch timestamp, as some servers send
    ({"Retry-After": "soon", "X-RateLimit-Reset": "4"}, 4.0),
    ({"Retry-After": "nan"}, None),
    ({}, None),
])
def test_retry_after_headers(headers, expected):
    assert mattermost.retry_after(headers, now=1767225600.0) == expected


# --- the watcher against each fault ----------------------------------------------------------------


def delivery(world, build: str) -> dict:
    return read_json(world.build_dir(build) / "delivery.json")


def assert_state_kept(world, build: str, state: str = "COMPLETED") -> None:
    recorded = read_json(world.build_dir(build) / "state.json")
    assert recorded["state"] == state and "message" in recorded


def restart_adds_nothing(world, build: str, env: Optional[dict] = None) -> None:
    requests = len(world.receiver.requests)
    code, _, err = watch(world, build, env=env)
    assert code == 0, err  # a finished build is final
    assert len(world.receiver.requests) == requests


UNCERTAIN_E2E = {  # fault -> posts it creates
    "no-response-after-send": (Fault.hang_before_post, 0),
    "posted-then-no-response": (Fault.post_then_hang, 1),
    "reset-mid-response": (Fault.post_then_partial, 1),
    "reset-after-post": (Fault.post_then_reset, 1),
    "500-proxy": (lambda: Fault.proxy_status(500), 0),
    "502": (lambda: Fault.proxy_status(502), 0),
    "502-after-post": (lambda: Fault.post_then_status(502), 1),
    "503": (lambda: Fault.proxy_status(503), 0),
    "504": (lambda: Fault.post_then_status(504), 1),
    "200-html": (Fault.html_200, 0),
    "200-other-body": (lambda: Fault.body_200("sent"), 0),
    "trickle-too-slow": (lambda: Fault.trickle(0.05), 1),
    "200-cut-after-ok": (Fault.post_then_cut, 1),
    "303-after-post": (lambda: Fault.post_then_redirect(303), 1),
    "308": (lambda: Fault.redirect(308), 0),
}


@pytest.mark.parametrize("name", list(UNCERTAIN_E2E))
def test_watcher_records_delivery_uncertain_and_never_resends(world, name):
    make, posts = UNCERTAIN_E2E[name]
    world.receiver.queue(make())
    finished(world, "uncertain")
    code, _, err = watch(world, "uncertain", env=FAST)
    assert code == 5, err
    assert len(world.receiver.requests) == 1  # never resent
    world.receiver.wait_for_posts(posts, timeout=2)
    assert len(world.receiver.posts) == posts
    assert delivery(world, "uncertain")["phase"] == "uncertain"
    assert status(world, "uncertain")["delivery"] == "DELIVERY-UNCERTAIN"
    assert not (world.build_dir("uncertain") / "posted.marker").exists()
    assert_state_kept(world, "uncertain")
    restart_adds_nothing(world, "uncertain", env=FAST)


PERMANENT_E2E = {
    "400": (Fault.error(400, "web.incoming_webhook.invalid.app_error"), "web.incoming_webhook.invalid.app_error"),
    "404": (Fault("page_404", answer=Answer(404, (), b"404 page not found\n")), ""),
    "501": (Fault("disabled", answer=app_error(501, "api.incoming_webhook.disabled.app_error")),
            "api.incoming_webhook.disabled.app_error"),
}


@pytest.mark.parametrize("name", list(PERMANENT_E2E))
def test_watcher_records_a_permanent_failure_once(world, name):
    fault, error_id = PERMANENT_E2E[name]
    world.receiver.queue(fault)
    finished(world, "refused")
    code, _, err = watch(world, "refused", env=FAST)
    assert code == 4, err
    assert len(world.receiver.requests) == 1 and world.receiver.posts == []  # not looped
    record = delivery(world, "refused")
    assert (record["phase"], record["http_status"], record["error_id"]) == ("rejected", int(name), error_id)
    if error_id:
        assert error_id in err  # the operator sees Mattermost's error id
    assert status(world, "refused")["delivery"] == "rejected"
    assert_state_kept(world, "refused")
    restart_adds_nothing(world, "refused", env=FAST)


def test_real_400_for_an_unknown_hook_id(world):
    finished(world, "bad-hook")
    wrong = world.receiver.url.replace(HOOK_TOKEN, "wronghook0123456789abcdef")
    code, _, err = watch(world, "bad-hook", env={**FAST, "MATTERMOST_ATVM_WEBHOOK": wrong})
    assert code == 4 and "web.incoming_webhook.invalid.app_error" in err
    assert "wronghook0123456789abcdef" not in err  # whatever hook is configured, it is a secret


def test_real_403_channel_locked(world):
    with MattermostDouble(hook_id=HOOK_TOKEN, locked_channel="town-square") as locked:
        finished(world, "locked")
        env = {**FAST, "MATTERMOST_ATVM_WEBHOOK": locked.url, "MATTERMOST_ATVM_CHANNEL": "atvm-runs"}
        code, _, err = watch(world, "locked", env=env)
        assert code == 4 and "channel_locked" in err
        assert locked.posts == [] and len(locked.requests) == 1


def test_real_413_payload_too_large(world):
    with MattermostDouble(hook_id=HOOK_TOKEN, max_payload_bytes=300) as small:
        finished(world, "too-big")
        code, _, err = watch(world, "too-big", env={**FAST, "MATTERMOST_ATVM_WEBHOOK": small.url})
        assert code == 4 and "request_body_too_large" in err
        assert small.posts == [] and len(small.requests) == 1


RETRIED_E2E = {
    "500-mattermost": Fault.error(500, "api.post.create_webhook_post.creating.app_error"),
    "429-retry-after": Fault.rate_limited(retry_after=1, reset=1),
    "429-ratelimit-reset": Fault.rate_limited(retry_after=None, reset=1),
}


@pytest.mark.parametrize("name", list(RETRIED_E2E))
def test_watcher_posts_after_a_retry(world, name):
    world.receiver.queue(RETRIED_E2E[name])
    finished(world, "retried")
    started = time.monotonic()
    code, _, err = watch(world, "retried", env=FAST)
    assert code == 0, err
    assert len(world.receiver.requests) == 2 and len(world.receiver.posts) == 1
    if name.startswith("429"):
        assert time.monotonic() - started >= 1.0  # waited as the server asked, not the 0.02 s backoff
    assert status(world, "retried")["delivery"] == "posted"
    restart_adds_nothing(world, "retried", env=FAST)


def test_connection_refused_then_server_back_posts_once(world):
    port = closed_port()
    url = f"http://127.0.0.1:{port}/hooks/{HOOK_TOKEN}"
    finished(world, "refused-conn")
    code, _, err = watch(world, "refused-conn", env={**FAST, "MATTERMOST_ATVM_WEBHOOK": url})
    assert code == 75, err  # certainly not sent: systemd's restart may retry
    assert delivery(world, "refused-conn")["phase"] == "not-sent"
    assert status(world, "refused-conn")["delivery"] == "not-sent"
    with MattermostDouble(hook_id=HOOK_TOKEN, port=port) as back:
        code, _, err = watch(world, "refused-conn", env={**FAST, "MATTERMOST_ATVM_WEBHOOK": url})
        assert code == 0, err
        assert len(back.posts) == 1
        code, _, _ = watch(world, "refused-conn", env={**FAST, "MATTERMOST_ATVM_WEBHOOK": url})
        assert code == 0 and len(back.requests) == 1


def test_name_not_resolvable_never_leaves_the_machine(world, tmp_path):
    finished(world, "no-dns")
    env = {**FAST, **guard_env(tmp_path), "MATTERMOST_ATVM_WEBHOOK": f"https://mattermost.invalid/hooks/{HOOK_TOKEN}"}
    code, _, err = watch(world, "no-dns", env=env)
    assert code == 75 and "cannot resolve" in err
    lookups = (tmp_path / "lookups.txt").read_text().split()
    assert set(lookups) == {"mattermost.invalid"} and len(lookups) >= 3  # each attempt refused in process
    assert delivery(world, "no-dns")["phase"] == "not-sent"


def test_connect_timeout_is_retried_then_left_to_a_restart(world):
    finished(world, "timeout")
    with full_backlog() as port:
        url = f"http://127.0.0.1:{port}/hooks/{HOOK_TOKEN}"
        code, _, err = watch(world, "timeout", env={**FAST, "ATVM_POST_TIMEOUT_SECONDS": "0.2",
                                                    "MATTERMOST_ATVM_WEBHOOK": url})
    assert code == 75 and "timed out" in err
    assert delivery(world, "timeout")["phase"] == "not-sent"


def test_interim_answers_before_200_ok_are_skipped_and_the_post_counted(world):
    world.receiver.queue(Fault.interim_then_answer())
    finished(world, "early-hints")
    code, _, err = watch(world, "early-hints", env=FAST)
    assert code == 0, err
    assert len(world.receiver.requests) == 1 and len(world.receiver.posts) == 1
    assert status(world, "early-hints")["delivery"] == "posted"
    restart_adds_nothing(world, "early-hints", env=FAST)


def test_trickle_in_time_is_posted(world):
    world.receiver.queue(Fault.trickle(0.001))
    finished(world, "trickle")
    code, _, err = watch(world, "trickle", env={"ATVM_POST_TIMEOUT_SECONDS": "5"})
    assert code == 0 and len(world.receiver.posts) == 1, err


def test_a_server_echoing_the_url_never_gets_it_recorded(world):
    world.receiver.queue(Fault("echo_404", answer=ECHO_404))
    finished(world, "echo")
    code, _, err = watch(world, "echo", env=FAST)
    assert code == 4
    record = json.dumps(delivery(world, "echo"))
    assert "<webhook>" in record  # the echoed path is shown redacted; no_token_left checks every file


def test_post_attempts_bounds_the_attempts_of_one_watcher_run(world):
    finished(world, "attempts")
    url = f"http://127.0.0.1:{closed_port()}/hooks/{HOOK_TOKEN}"
    code, _, err = watch(world, "attempts", env={**FAST, "MATTERMOST_ATVM_WEBHOOK": url})
    assert code == 75, err
    assert delivery(world, "attempts")["attempts"] == 3
