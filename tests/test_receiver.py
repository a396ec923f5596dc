"""The Mattermost double over real HTTP on 127.0.0.1: answers as MATTERMOST.md says, and every fault."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from atvm_dev.receiver import LOOPBACK, Fault, MattermostDouble

ROOT = Path(__file__).resolve().parent.parent
ERROR_KEYS = {"id", "message", "detailed_error", "request_id", "status_code"}
RESET_ERRORS = (ConnectionResetError, http.client.RemoteDisconnected, http.client.IncompleteRead)


@pytest.fixture
def double():
    with MattermostDouble() as receiver:
        yield receiver


def hook_path(receiver: MattermostDouble) -> str:
    return urllib.parse.urlsplit(receiver.url).path


def send(receiver, body=b"", *, method="POST", path=None, headers=None, timeout=5.0):
    conn = http.client.HTTPConnection(LOOPBACK, receiver.port, timeout=timeout)
    try:
        conn.request(method, path or hook_path(receiver), body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def post_json(receiver, payload, **kwargs):
    body = json.dumps(payload).encode()
    return send(receiver, body, headers={"Content-Type": "application/json"}, **kwargs)


def attempt(receiver, payload):
    """Post from another thread; return the answer or the exception the client saw."""
    try:
        return post_json(receiver, payload, timeout=60)
    except (OSError, http.client.HTTPException) as exc:
        return exc


def error_of(status, headers, body):
    data = json.loads(body)
    assert set(data) == ERROR_KEYS
    assert data["status_code"] == status
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Request-Id"] == data["request_id"]
    return data["id"]


# -- normal behaviour -------------------------------------------------------------------------------------


def test_an_accepted_post_is_answered_ok_in_plain_text_and_recorded(double):
    payload = {"text": "ATVM run COMPLETED", "channel": "town-square", "username": "atvm"}
    status, headers, body = post_json(double, payload)
    assert (status, headers["Content-Type"], body) == (200, "text/plain", b"ok")
    assert double.posts == [payload]
    [record] = double.requests
    assert (record.method, record.path, record.status, record.fault) == ("POST", hook_path(double), 200, "ok")
    assert json.loads(record.body) == payload
    assert record.headers["content-type"] == record.headers["Content-Type"] == "application/json"
    assert record.created == [payload]


@pytest.mark.parametrize("payload", [
    {"attachments": [{"title": "Run FAILED", "text": "3 failed"}]},
    {"attachments": []},  # an empty list is still "attachments given" to the server
    {"text": "x", "props": {"card": "details"}, "priority": {"priority": "important"}, "type": "custom_atvm"},
])
def test_payloads_the_server_accepts(double, payload):
    assert post_json(double, payload)[0] == 200
    assert double.posts == [payload]


@pytest.mark.parametrize("body, content_type, status, error_id", [
    (b"", "application/json", 400, "model.incoming_hook.parse_data.app_error"),
    (b"not json", "application/json", 400, "model.incoming_hook.parse_data.app_error"),
    (b"[1, 2]", "application/json", 400, "model.incoming_hook.parse_data.app_error"),
    (b'{"text": 5}', "application/json", 400, "model.incoming_hook.parse_data.app_error"),
    (b'{"attachments": {"title": "x"}}', "application/json", 400, "model.incoming_hook.parse_data.app_error"),
    (b'{"text": "x"}', "text/", 400, "api.webhook.incoming.error"),
    (b"null", "application/json", 400, "web.incoming_webhook.text.app_error"),
    (b"{}", "application/json", 400, "web.incoming_webhook.text.app_error"),
    (b'{"text": "", "attachments": null}', "application/json", 400, "web.incoming_webhook.text.app_error"),
    (b'{"text": "x", "priority": {}}', "application/json", 400, "api.context.invalid_param.app_error"),
    (b'{"text": "x", "type": "system_join_channel"}', "application/json", 400,
     "api.context.invalid_param.app_error"),
    (b'{"text": "x", "type": "card"}', "application/json", 500,
     "api.post.create_webhook_post.creating.app_error"),
])
def test_payloads_the_server_refuses_with_its_json_errors(double, body, content_type, status, error_id):
    answer = send(double, body, headers={"Content-Type": content_type})
    assert answer[0] == status
    assert error_of(*answer) == error_id
    assert double.posts == []
    assert double.requests[0].status == status


@pytest.mark.parametrize("body, headers", [
    (b'{"text": "line one\nline two\ttabbed"}', {"Content-Type": "application/json"}),  # raw control chars
    (b'{"text": "first value wins"} trailing', {"Content-Type": "application/json"}),
    (b'{"text": "no content type"}', {}),
    (b'{"text": "any type but a form is JSON"}', {"Content-Type": "text/plain; charset=utf-8"}),
])
def test_bodies_the_server_is_lenient_about(double, body, headers):
    assert send(double, body, headers=headers)[:3:2] == (200, b"ok")
    assert len(double.posts) == 1


def test_form_encoded_payload_is_read_from_the_payload_field(double):
    payload = {"text": "from a form", "channel": "ops"}
    form = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
    request = urllib.request.Request(double.url, data=form)  # urllib's default type is the form one
    with urllib.request.urlopen(request, timeout=5) as resp:
        assert (resp.status, resp.read()) == (200, b"ok")
    assert double.posts == [payload]


def test_form_without_payload_field_is_unparseable(double):
    form_type = {"Content-Type": "application/x-www-form-urlencoded"}
    answer = send(double, b"text=hello", headers=form_type)
    assert error_of(*answer) == "model.incoming_hook.parse_data.app_error"
    assert double.posts == []


def test_unknown_hook_id_is_400_not_404(double):
    answer = post_json(double, {"text": "x"}, path="/hooks/someotherhook123")
    assert answer[0] == 400
    assert error_of(*answer) == "web.incoming_webhook.invalid.app_error"
    assert double.posts == []


def test_missing_text_is_reported_before_the_hook_is_looked_up(double):
    answer = post_json(double, {"channel": "x"}, path="/hooks/someotherhook123")
    assert error_of(*answer) == "web.incoming_webhook.text.app_error"


@pytest.mark.parametrize("path", ["/", "/hooks/", "/hooks/bad-id", "/api/v4/hooks/incoming"])
def test_other_paths_are_404(double, path):
    status, headers, body = post_json(double, {"text": "x"}, path=path)
    assert (status, body) == (404, b"404 page not found\n")
    assert double.posts == []


def test_hook_path_with_another_method_is_405(double):
    assert send(double, method="GET")[0] == 405
    assert double.posts == []


@pytest.mark.parametrize("channel, status", [
    (None, 200), ("", 200), ("town-square", 200), ("#town-square", 200), ("~town-square", 200),
    ("off-topic", 403), ("@someone", 403),
])
def test_locked_hook_refuses_other_channels(channel, status):
    payload = {"text": "x"} if channel is None else {"text": "x", "channel": channel}
    with MattermostDouble(locked_channel="town-square") as locked:
        answer = post_json(locked, payload)
        assert answer[0] == status
        if status == 403:
            assert error_of(*answer) == "web.incoming_webhook.channel_locked.app_error"
        assert len(locked.posts) == (status == 200)


def test_body_over_the_payload_limit_is_413():
    with MattermostDouble(max_payload_bytes=1000) as small:
        text = "x" * (1000 - len(json.dumps({"text": ""})))
        assert post_json(small, {"text": text})[0] == 200
        answer = post_json(small, {"text": text + "x"})
        assert answer[0] == 413
        assert error_of(*answer) == "api.context.request_body_too_large.app_error"
        assert len(small.posts) == 1


def test_default_payload_limit_is_300000_bytes(double):
    assert post_json(double, {"text": "x" * 300000})[0] == 413
    assert double.posts == []


def test_over_long_text_is_split_into_posts_counted_in_code_points():
    with MattermostDouble(max_runes=10) as receiver:
        text = "é" * 10 + "ü" * 10 + "ab"
        attachments = [{"title": "details"}]
        assert post_json(receiver, {"text": text, "attachments": attachments})[:3:2] == (200, b"ok")
        posts = receiver.posts
        assert [p["text"] for p in posts] == ["é" * 10, "ü" * 10, "ab"]
        assert ["attachments" in p for p in posts] == [False, False, True]
        assert len(receiver.requests[0].created) == 3


def test_text_at_the_limit_is_one_post():
    with MattermostDouble(max_runes=10) as receiver:
        post_json(receiver, {"text": "€" * 10})
        assert len(receiver.posts) == 1


def test_default_rune_limit_is_16383(double):
    post_json(double, {"text": "a" * 16383})
    post_json(double, {"text": "a" * 16384})
    assert [len(p["text"]) for p in double.posts] == [16383, 16383, 1]


def test_rate_limit_is_a_token_bucket_with_throttled_headers():
    now = [100.0]
    with MattermostDouble(rate_limit=(2.0, 2), clock=lambda: now[0]) as limited:
        first, second = post_json(limited, {"text": "1"}), post_json(limited, {"text": "2"})
        assert [first[1]["X-RateLimit-Remaining"], second[1]["X-RateLimit-Remaining"]] == ["1", "0"]
        status, headers, body = post_json(limited, {"text": "3"})
        assert (status, body) == (429, b"limit exceeded\n")
        assert headers["Content-Type"] == "text/plain; charset=utf-8"
        assert (headers["X-RateLimit-Limit"], headers["X-RateLimit-Remaining"]) == ("2", "0")
        assert (headers["X-RateLimit-Reset"], headers["Retry-After"]) == ("1", "1")
        now[0] += 0.5  # one token back at 2 per second
        assert post_json(limited, {"text": "4"})[0] == 200
        assert [p["text"] for p in limited.posts] == ["1", "2", "4"]


# -- scripted faults ----------------------------------------------------------------------------------------


def test_faults_are_used_in_order_then_normal_behaviour_resumes(double):
    double.queue(Fault.error(500, "app.x.app_error", "Store down"), Fault.proxy_status(502))
    statuses = [post_json(double, {"text": str(i)})[0] for i in range(3)]
    assert statuses == [500, 502, 200]
    assert [p["text"] for p in double.posts] == ["2"]
    assert [r.fault for r in double.requests] == ["error_500", "proxy_502", "ok"]


def test_error_fault_has_the_server_error_shape(double):
    message = "Incoming webhooks are disabled."
    double.queue(Fault.error(501, "web.incoming_webhook.disabled.app_error", message))
    status, headers, body = post_json(double, {"text": "x"})
    assert error_of(status, headers, body) == "web.incoming_webhook.disabled.app_error"
    assert json.loads(body)["message"] == message
    assert double.posts == []


def test_rate_limited_fault_with_retry_after(double):
    double.queue(Fault.rate_limited(retry_after=1, reset=1))
    status, headers, body = post_json(double, {"text": "x"})
    assert (status, body) == (429, b"limit exceeded\n")
    assert headers["Content-Type"].startswith("text/plain")
    assert (headers["Retry-After"], headers["X-RateLimit-Reset"]) == ("1", "1")
    assert headers["X-RateLimit-Remaining"] == "0"
    assert "X-RateLimit-Limit" in headers
    assert double.posts == []


def test_rate_limited_fault_with_only_the_reset_header(double):
    double.queue(Fault.rate_limited(retry_after=None, reset=2))
    status, headers, _ = post_json(double, {"text": "x"})
    assert status == 429
    assert headers["X-RateLimit-Reset"] == "2"
    assert [h for h in ("Retry-After", "X-RateLimit-Limit", "X-RateLimit-Remaining") if h in headers] == []


@pytest.mark.parametrize("fault, content_type, body_part", [
    (Fault.html_200(), "text/html; charset=utf-8", b"<form"),
    (Fault.body_200("fine thanks"), "text/plain; charset=utf-8", b"fine thanks"),
])
def test_200_that_is_not_ok_creates_no_post(double, fault, content_type, body_part):
    double.queue(fault)
    status, headers, body = post_json(double, {"text": "x"})
    assert (status, headers["Content-Type"]) == (200, content_type)
    assert body_part in body and body != b"ok"
    assert double.posts == []
    assert double.requests[0].status == 200


@pytest.mark.parametrize("code", [502, 503, 504])
def test_proxy_error_page_creates_no_post(double, code):
    double.queue(Fault.proxy_status(code))
    status, headers, body = post_json(double, {"text": "x"})
    assert (status, headers["Content-Type"], headers["Server"]) == (code, "text/html", "nginx")
    assert str(code).encode() in body
    assert double.posts == []


@pytest.mark.parametrize("code", [500, 502, 504])
def test_post_then_status_creates_the_post_and_answers_an_error(double, code):
    double.queue(Fault.post_then_status(code))
    status, headers, body = post_json(double, {"text": "x"})
    assert status == code
    if code == 500:
        assert error_of(status, headers, body) == "api.post.create_webhook_post.creating.app_error"
    assert double.posts == [{"text": "x"}]


@pytest.mark.parametrize("fault, posts", [(Fault.post_then_hang(), 1), (Fault.hang_before_post(), 0)])
def test_hangs_never_answer(double, fault, posts):
    double.queue(fault)
    with pytest.raises(socket.timeout):
        post_json(double, {"text": "x"}, timeout=0.3)
    assert len(double.posts) == posts
    assert double.requests[0].status is None
    assert post_json(double, {"text": "next"})[0] == 200  # the hang holds one connection, not the server


def test_stop_ends_a_hang(double):
    double.queue(Fault.post_then_hang())
    outcome = []
    thread = threading.Thread(target=lambda: outcome.append(attempt(double, {"text": "x"})))
    thread.start()
    assert double.wait_for_posts(1, timeout=5)
    double.stop()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert isinstance(outcome[0], (ConnectionError, http.client.HTTPException))


@pytest.mark.parametrize("fault, posts", [(Fault.post_then_reset(), 1), (Fault.reset_before_post(), 0)])
def test_resets_are_seen_as_connection_reset(double, fault, posts):
    double.queue(fault)
    with pytest.raises(ConnectionResetError):
        post_json(double, {"text": "x"})
    assert len(double.posts) == posts
    assert double.requests[0].status is None
    assert post_json(double, {"text": "next"})[0] == 200


def test_partial_answer_then_reset(double):
    double.queue(Fault.post_then_partial())
    conn = http.client.HTTPConnection(LOOPBACK, double.port, timeout=5)
    conn.request("POST", hook_path(double), body=b'{"text": "x"}')
    resp = conn.getresponse()
    assert resp.status == 200
    with pytest.raises(RESET_ERRORS):
        resp.read()
    conn.close()
    assert double.posts == [{"text": "x"}]
    assert double.requests[0].status is None


def test_delay_answers_ok_late(double):
    double.queue(Fault.delay(0.05), Fault.post_then_delay(0.05))
    assert post_json(double, {"text": "a"})[:3:2] == (200, b"ok")
    assert post_json(double, {"text": "b"})[:3:2] == (200, b"ok")
    assert [r.fault for r in double.requests] == ["delay", "post_then_delay"]
    assert len(double.posts) == 2


def test_post_then_delay_creates_the_post_before_answering(double):
    double.queue(Fault.post_then_delay(60))
    outcome = []
    thread = threading.Thread(target=lambda: outcome.append(attempt(double, {"text": "x"})))
    thread.start()
    assert double.wait_for_posts(1, timeout=5)
    assert double.requests[0].status is None  # posted, not yet answered
    double.stop()
    thread.join(timeout=10)
    assert isinstance(outcome[0], (ConnectionError, http.client.HTTPException))


def test_trickle_sends_the_whole_ok_answer_byte_by_byte(double):
    double.queue(Fault.trickle(0.002))
    with socket.create_connection((LOOPBACK, double.port), timeout=5) as sock:
        body = b'{"text": "x"}'
        head = f"POST {hook_path(double)} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
        sock.sendall(head.encode() + body)
        first = sock.recv(4096)
        received = first
        while not received.endswith(b"\r\n\r\nok"):
            received += sock.recv(4096)
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert len(first) < len(received)
    assert double.posts == [{"text": "x"}]
    assert double.requests[0].status == 200


# -- concurrency and robustness ------------------------------------------------------------------------


def test_twenty_parallel_posts_are_all_recorded_once(double):
    texts = [f"post {i}" for i in range(20)]
    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = list(pool.map(lambda t: post_json(double, {"text": t})[0], texts))
    assert statuses == [200] * 20
    assert sorted(p["text"] for p in double.posts) == sorted(texts)
    assert len(double.requests) == 20


def test_keep_alive_connection_serves_several_requests(double):
    conn = http.client.HTTPConnection(LOOPBACK, double.port, timeout=5)
    for text in ("a", "b"):
        conn.request("POST", hook_path(double), body=json.dumps({"text": text}))
        assert conn.getresponse().read() == b"ok"
    conn.close()
    assert [p["text"] for p in double.posts] == ["a", "b"]


def test_chunked_body_is_accepted(double):
    conn = http.client.HTTPConnection(LOOPBACK, double.port, timeout=5)
    conn.request("POST", hook_path(double), body=iter([b'{"text": ', b'"chunked"}']), encode_chunked=True,
                 headers={"Transfer-Encoding": "chunked"})
    assert conn.getresponse().read() == b"ok"
    conn.close()
    assert double.posts == [{"text": "chunked"}]


@pytest.mark.parametrize("raw", [
    b"GARBAGE\r\n\r\n",
    b"POST /hooks/x HTTP/1.1\r\nContent-Length: nope\r\n\r\n",
    b"POST /hooks/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
])
def test_bad_http_gets_400_and_the_server_keeps_serving(double, raw):
    with socket.create_connection((LOOPBACK, double.port), timeout=5) as sock:
        sock.sendall(raw)
        assert sock.recv(4096).split(b" ")[1] == b"400"
    assert post_json(double, {"text": "still here"})[0] == 200


def test_client_leaving_mid_body_or_idling_does_not_stop_the_server(double):
    with socket.create_connection((LOOPBACK, double.port), timeout=5) as gone:
        gone.sendall(f"POST {hook_path(double)} HTTP/1.1\r\nContent-Length: 100\r\n\r\n{{\"te".encode())
    with socket.create_connection((LOOPBACK, double.port), timeout=5) as idle:
        idle.sendall(b"POST /hooks/")  # a slow client holding its connection open
        assert post_json(double, {"text": "served"})[0] == 200
    assert double.posts == [{"text": "served"}]


def test_waits_time_out_without_posts(double):
    assert double.wait_for_posts(1, timeout=0.01) is False
    assert double.wait_for_requests(1, timeout=0.01) is False


def test_posts_and_requests_are_copies(double):
    post_json(double, {"text": "x"})
    double.posts[0]["text"] = "changed"
    double.requests[0].created.clear()
    assert double.posts == [{"text": "x"}]
    assert len(double.requests[0].created) == 1


def test_log_never_shows_a_hook_id():
    lines = []
    with MattermostDouble(log=lines.append) as receiver:
        post_json(receiver, {"text": "hello", "attachments": [{"title": "Run summary"}]})
        post_json(receiver, {"text": "x"}, path="/hooks/realsecrethook99")
    assert lines[:3] == ["POST /hooks/<hook> -> 200 [ok]", "  | hello", "  [attachment] Run summary"]
    assert lines[3] == "POST /hooks/<other hook> -> 400 [ok]"
    assert not any(receiver.hook_id in line or "realsecrethook99" in line for line in lines)


@pytest.mark.parametrize("kwargs", [{"host": "0.0.0.0"}, {"host": "localhost"}, {"hook_id": "with-dash"}])
def test_refuses_anything_but_loopback_and_route_safe_hook_ids(kwargs):
    with pytest.raises(ValueError):
        MattermostDouble(**kwargs)


def test_stop_is_idempotent_and_url_is_loopback():
    receiver = MattermostDouble(hook_id="abc123").start()
    assert receiver.url == f"http://127.0.0.1:{receiver.port}/hooks/abc123"
    receiver.stop()
    receiver.stop()



def test_bad_framing_is_recorded_without_using_up_a_scripted_fault(double):
    double.queue(Fault.proxy_status(502))
    with socket.create_connection((LOOPBACK, double.port), timeout=5) as sock:
        sock.sendall(f"POST {hook_path(double)} HTTP/1.1\r\nContent-Length: -1\r\n\r\n".encode())
        assert sock.recv(4096).startswith(b"HTTP/1.1 400 ")
    assert post_json(double, {"text": "x"})[0] == 502
    assert [(r.fault, r.status) for r in double.requests] == [("bad_framing", 400), ("proxy_502", 502)]


# -- command line ------------------------------------------------------------------------------------


def test_cli_serves_prints_and_stops_on_sigterm():
    proc = subprocess.Popen([sys.executable, "-m", "atvm_dev.receiver", "--hook-id", "clihook1"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        assert first.startswith("listening on http://127.0.0.1:")
        url = first.split()[2]
        data = json.dumps({"text": "from the cli test", "attachments": [{"title": "Summary"}]}).encode()
        request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as resp:
            assert resp.read() == b"ok"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert out.splitlines() == ["POST /hooks/<hook> -> 200 [ok]", "  | from the cli test",
                                "  [attachment] Summary"]


def test_cli_refuses_another_bind_address():
    result = subprocess.run([sys.executable, "-m", "atvm_dev.receiver", "--host", "0.0.0.0"], cwd=ROOT,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "127.0.0.1 only" in result.stderr
