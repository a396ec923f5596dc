"""A Mattermost-compatible incoming-webhook receiver on 127.0.0.1 that can misbehave on request.

Two users: the ``demo`` command (somewhere local for the real watcher to post to) and the test suite
(a double that answers as a real Mattermost server does: 200 `ok`, JSON errors, a plain-text
429; and fails the ways a real server or a proxy in front of it fails: see ``Fault``). It listens
on loopback only, always.

Not modelled: multipart/form-data bodies (decoded as JSON, so refused as unparseable), username/icon
overrides, channel existence (any channel name is accepted unless the hook is locked).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import email.utils
import http
import json
import math
import re
import secrets
import signal
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple
from urllib.parse import parse_qs, urlsplit

LOOPBACK = "127.0.0.1"
DEFAULT_HOOK_ID = "atvmtesthooktoken0123456789"
HOOK_ID_RE = re.compile(r"[A-Za-z0-9]+")  # the server's route pattern: anything else is a 404
_HOOK_ROUTE = re.compile(r"/hooks/([A-Za-z0-9]+)")
_DRAIN_LIMIT = 8 * 1024 * 1024  # read (and throw away) an oversized body up to this, so the 413 is seen
_STRING_FIELDS = ("text", "username", "icon_url", "channel", "type", "icon_emoji")

# English texts of the server's i18n ids, so error bodies read like the real ones.
_MESSAGES = {
    "model.incoming_hook.parse_data.app_error": "Unable to parse incoming data.",
    "api.webhook.incoming.error": "Could not decode the multipart payload of incoming webhook.",
    "web.incoming_webhook.text.app_error": "No text specified.",
    "web.incoming_webhook.invalid.app_error": "Invalid webhook.",
    "web.incoming_webhook.channel_locked.app_error":
        "This webhook is not permitted to post to the requested channel.",
    "api.context.invalid_param.app_error": "Invalid or missing parameter in request.",
    "api.post.create_webhook_post.creating.app_error": "Error creating post",
    "api.context.request_body_too_large.app_error": "Request body too large.",
}


class Headers(dict):
    """Request headers as a plain dict whose lookups ignore case, as HTTP does."""

    def __init__(self, items: Iterable[Tuple[str, str]] = ()) -> None:
        super().__init__((k.lower(), v) for k, v in items)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)


@dataclass
class RequestRecord:
    method: str
    path: str
    headers: Headers
    body: bytes
    status: Optional[int] = None  # what was answered; None while pending or if the connection was dropped
    fault: str = "ok"
    client: str = ""
    created: List[dict] = field(default_factory=list)  # the posts this request created


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Tuple[Tuple[str, str], ...] = ()
    body: bytes = b""

    def encode(self, close: bool, head_only: bool = False) -> bytes:
        try:
            reason = http.HTTPStatus(self.status).phrase
        except ValueError:
            reason = "Unknown"
        lines = [f"HTTP/1.1 {self.status} {reason}", f"Date: {email.utils.formatdate(usegmt=True)}"]
        lines += [f"{name}: {value}" for name, value in self.headers]
        lines.append(f"Content-Length: {len(self.body)}")
        if close:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head if head_only else head + self.body

    def with_headers(self, extra: Tuple[Tuple[str, str], ...]) -> Answer:
        return dataclasses.replace(self, headers=self.headers + extra)


def _new_request_id() -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(secrets.choice(alphabet) for _ in range(26))


def app_error(status: int, error_id: str, message: Optional[str] = None, detail: str = "") -> Answer:
    """An answer shaped like the server's ``AppError`` JSON, with its request id header."""
    request_id = _new_request_id()
    body = {
        "id": error_id,
        "message": message if message is not None else _MESSAGES.get(error_id, error_id),
        "detailed_error": detail,
        "request_id": request_id,
        "status_code": status,
    }
    headers = (("Content-Type", "application/json"), ("X-Request-Id", request_id))
    return Answer(status, headers, json.dumps(body).encode())


def _go_text(status: int, text: str) -> Answer:
    # Go's http.Error: text/plain, nosniff, and a trailing newline the server never strips.
    headers = (("Content-Type", "text/plain; charset=utf-8"), ("X-Content-Type-Options", "nosniff"))
    return Answer(status, headers, (text + "\n").encode())


def _ok() -> Answer:
    return Answer(200, (("Content-Type", "text/plain"), ("X-Request-Id", _new_request_id())), b"ok")


def _proxy_page(status: int) -> Answer:
    title = f"{status} {http.HTTPStatus(status).phrase}"
    page = f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n"
    page += "<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    return Answer(status, (("Server", "nginx"), ("Content-Type", "text/html")), page.encode())


_LOGIN_PAGE = (
    "<!DOCTYPE html><html><head><title>Sign in - Corporate SSO</title></head><body>"
    '<form method="post" action="/sso/login"><input name="username"><input name="password" type="password">'
    "<button>Sign in</button></form></body></html>"
)


EARLY_HINTS = b"HTTP/1.1 103 Early Hints\r\nLink: </static/main.css>; rel=preload; as=style\r\n\r\n"


def _rate_limit_headers(limit: Optional[int], remaining: Optional[int], reset: Optional[int],
                        retry_after: Optional[int]) -> Tuple[Tuple[str, str], ...]:
    pairs = (("X-RateLimit-Limit", limit), ("X-RateLimit-Remaining", remaining),
             ("X-RateLimit-Reset", reset), ("Retry-After", retry_after))
    return tuple((name, str(value)) for name, value in pairs if value is not None)


@dataclass(frozen=True)
class Fault:
    """How to answer one request. ``process`` runs the normal server logic (so posts are created
    when the payload is valid); ``answer`` replaces its answer; ``then`` is what happens on the wire."""

    name: str
    process: bool = False
    wait_before: float = 0.0  # before processing: the post appears late too
    wait_after: float = 0.0  # after processing: the post exists, the answer is late
    answer: Optional[Answer] = None
    then: str = "answer"  # answer | hang | reset | partial | trickle | cut | interim
    raw: bytes = b""  # partial, cut: what is sent before the reset or close; interim: what precedes the answer
    interval: float = 0.0  # trickle: seconds between bytes

    @classmethod
    def ok(cls) -> Fault:
        return cls("ok", process=True)

    @classmethod
    def error(cls, status: int, error_id: str, message: str = "", detailed_error: str = "") -> Fault:
        return cls(f"error_{status}", answer=app_error(status, error_id, message or None, detailed_error))

    @classmethod
    def rate_limited(cls, retry_after: Optional[int] = 1, reset: Optional[int] = 1,
                     limit: int = 100, remaining: int = 0) -> Fault:
        """Without ``retry_after`` only ``X-RateLimit-Reset`` is sent: the client has nothing else."""
        if retry_after is None:
            headers = _rate_limit_headers(None, None, reset, None)
        else:
            headers = _rate_limit_headers(limit, remaining, reset, retry_after)
        return cls("rate_limited", answer=_go_text(429, "limit exceeded").with_headers(headers))

    @classmethod
    def html_200(cls) -> Fault:
        headers = (("Content-Type", "text/html; charset=utf-8"),)
        return cls("html_200", answer=Answer(200, headers, _LOGIN_PAGE.encode()))

    @classmethod
    def body_200(cls, text: str, content_type: str = "text/plain; charset=utf-8") -> Fault:
        return cls("body_200", answer=Answer(200, (("Content-Type", content_type),), text.encode()))

    @classmethod
    def proxy_status(cls, status: int = 502) -> Fault:
        return cls(f"proxy_{status}", answer=_proxy_page(status))

    @classmethod
    def post_then_status(cls, status: int = 500) -> Fault:
        """500 is the server's own (a later part of a split post failed); others come from a proxy."""
        if status == 500:
            answer = app_error(500, "api.post.create_webhook_post.creating.app_error")
        else:
            answer = _proxy_page(status)
        return cls(f"post_then_{status}", process=True, answer=answer)

    @classmethod
    def post_then_hang(cls) -> Fault:
        return cls("post_then_hang", process=True, then="hang")

    @classmethod
    def hang_before_post(cls) -> Fault:
        return cls("hang_before_post", then="hang")

    @classmethod
    def post_then_reset(cls) -> Fault:
        return cls("post_then_reset", process=True, then="reset")

    @classmethod
    def reset_before_post(cls) -> Fault:
        return cls("reset_before_post", then="reset")

    @classmethod
    def post_then_partial(cls, raw: bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\no") -> Fault:
        return cls("post_then_partial", process=True, then="partial", raw=raw)

    @classmethod
    def post_then_cut(cls, raw: bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nok") -> Fault:
        """The post is made; the answer stops short of its Content-Length and the connection closes (no reset)."""
        return cls("post_then_cut", process=True, then="cut", raw=raw)

    @classmethod
    def interim_then_answer(cls, raw: bytes = EARLY_HINTS) -> Fault:
        """Interim (1xx) answers sent unasked, by default a 103 Early Hints, then the real answer."""
        return cls("interim_then_answer", process=True, then="interim", raw=raw)

    @classmethod
    def post_then_redirect(cls, status: int = 303, location: str = "/api/v4/posts/created") -> Fault:
        """The post is made, then a redirect: a 303 See Other says the server acted on the request."""
        return cls(f"post_then_{status}", process=True, answer=Answer(status, (("Location", location),)))

    @classmethod
    def redirect(cls, status: int = 301, location: str = "https://mattermost.example.com/hooks/moved") -> Fault:
        """A redirect from something in front of the server (the hook moved): no post is made."""
        return cls(f"redirect_{status}", answer=Answer(status, (("Location", location),)))

    @classmethod
    def delay(cls, seconds: float) -> Fault:
        return cls("delay", process=True, wait_before=seconds)

    @classmethod
    def post_then_delay(cls, seconds: float) -> Fault:
        return cls("post_then_delay", process=True, wait_after=seconds)

    @classmethod
    def trickle(cls, byte_interval: float) -> Fault:
        return cls("trickle", process=True, then="trickle", interval=byte_interval)


class _TokenBucket:
    """Per-address token bucket, standing in for the server's throttled limiter."""

    def __init__(self, per_second: float, burst: int, clock: Callable[[], float]) -> None:
        self._rate, self._burst, self._clock = per_second, burst, clock
        self._state: Dict[str, Tuple[float, float]] = {}  # address -> (tokens, when counted)
        self._lock = threading.Lock()

    def take(self, address: str) -> Tuple[bool, Tuple[Tuple[str, str], ...]]:
        """Spend a token if there is one; return whether allowed and the headers to answer with."""
        with self._lock:
            now = self._clock()
            tokens, then = self._state.get(address, (float(self._burst), now))
            tokens = min(float(self._burst), tokens + (now - then) * self._rate)
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            self._state[address] = (tokens, now)
        reset = math.ceil((self._burst - tokens) / self._rate)
        retry_after = None if allowed else math.ceil((1.0 - tokens) / self._rate)
        return allowed, _rate_limit_headers(self._burst, int(tokens), reset, retry_after)


def split_text(text: str, max_runes: int) -> List[str]:
    """The server's split of an over-long message: full parts of ``max_runes`` code points, then the rest."""
    parts = [text[i:i + max_runes] for i in range(0, len(text), max_runes)]
    return parts or [""]


def describe_post(post: Dict[str, Any]) -> List[str]:
    """What a reader would see of a post: its text lines and its attachments' titles."""
    lines = [f"  | {line}" for line in str(post.get("text") or "").splitlines()]
    for attachment in post.get("attachments") or []:
        if isinstance(attachment, dict):
            lines.append(f"  [attachment] {attachment.get('title') or attachment.get('fallback') or ''}")
    return lines


def _payload_problem(payload: Any) -> Optional[str]:
    """Why Go's decoder would refuse to fill the request struct from this JSON value, if it would."""
    if not isinstance(payload, dict):
        return f"cannot unmarshal {type(payload).__name__} into IncomingWebhookRequest"
    for key in _STRING_FIELDS:
        if payload.get(key) is not None and not isinstance(payload[key], str):
            return f"cannot unmarshal {key} into a string"
    for key, kind in (("attachments", list), ("props", dict), ("priority", dict)):
        if payload.get(key) is not None and not isinstance(payload[key], kind):
            return f"cannot unmarshal {key} into {kind.__name__}"
    return None


def decode_payload(content_type: str, body: bytes,
                   query: str = "") -> Tuple[Optional[dict], Optional[Answer]]:
    """The server's body handling: form field ``payload`` for form posts, JSON for anything else."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    if content_type.strip() and not re.fullmatch(r"[!#$%&'*+.^_`|~0-9a-z-]+/[!#$%&'*+.^_`|~0-9a-z-]+",
                                                 media_type):
        return None, app_error(400, "api.webhook.incoming.error", detail="mime: invalid media type")
    text = body.decode("utf-8", "replace")
    if media_type == "application/x-www-form-urlencoded":
        form = parse_qs(query, keep_blank_values=True)
        form.update(parse_qs(text, keep_blank_values=True))
        text = (form.get("payload") or [""])[0]
    try:
        # strict=False: the server retries with raw newlines/tabs escaped inside strings.
        payload, _ = json.JSONDecoder(strict=False).raw_decode(text.lstrip(" \t\r\n"))
    except json.JSONDecodeError as exc:
        return None, app_error(400, "model.incoming_hook.parse_data.app_error", detail=str(exc))
    payload = {} if payload is None else payload  # Go decodes null into an empty request
    problem = _payload_problem(payload)
    if problem:
        return None, app_error(400, "model.incoming_hook.parse_data.app_error", detail=problem)
    return payload, None


def check_payload(payload: dict) -> Optional[Answer]:
    """The server's checks on a decoded request that do not depend on the hook."""
    if not payload.get("text") and payload.get("attachments") is None:
        return app_error(400, "web.incoming_webhook.text.app_error")
    if payload.get("priority") is not None and payload["priority"].get("priority") is None:
        return app_error(400, "api.context.invalid_param.app_error", detail="webhook.priority.priority")
    post_type = payload.get("type") or ""
    if post_type and not payload.get("attachments"):
        if post_type.startswith("system_"):
            return app_error(400, "api.context.invalid_param.app_error", detail="post.type")
        if not post_type.startswith("custom_"):
            # Post.IsValid refuses it inside CreatePost, whose errors all come back as 500.
            return app_error(500, "api.post.create_webhook_post.creating.app_error",
                             detail="model.post.is_valid.type.app_error")
    return None


def _same_channel(requested: str, locked: str) -> bool:
    return requested.lstrip("#~") == locked.lstrip("#~")


class MattermostDouble:
    """A threaded receiver of ``POST /hooks/<hook_id>`` on 127.0.0.1, scripted through ``queue``."""

    def __init__(self, host: str = LOOPBACK, port: int = 0, hook_id: str = DEFAULT_HOOK_ID,
                 locked_channel: Optional[str] = None, rate_limit: Optional[Tuple[float, int]] = None,
                 max_payload_bytes: int = 300000, max_runes: int = 16383,
                 log: Optional[Callable[[str], None]] = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if host != LOOPBACK:
            raise ValueError(f"the receiver listens on {LOOPBACK} only, not {host!r}")
        if not HOOK_ID_RE.fullmatch(hook_id):
            raise ValueError("a hook id is letters and digits only")
        self.host, self._port, self.hook_id = host, port, hook_id
        self.locked_channel = locked_channel
        self.max_payload_bytes, self.max_runes = max_payload_bytes, max_runes
        self._limiter = _TokenBucket(rate_limit[0], rate_limit[1], clock) if rate_limit else None
        self._log = log
        self._changed = threading.Condition()
        self._posts: List[dict] = []
        self._requests: List[RequestRecord] = []
        self._faults: List[Fault] = []
        self._stopping = threading.Event()
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> MattermostDouble:
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server((self.host, self._port), self)
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.01},
                                        name="mattermost-double", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, wake every hanging or waiting connection, and wait for their threads."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        threads = server.drop_connections()
        server.server_close()
        for thread in threads + [self._thread]:
            if thread is not None:
                thread.join(timeout=5)

    def __enter__(self) -> MattermostDouble:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None and not self._port:
            raise RuntimeError("start() the receiver first")
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/hooks/{self.hook_id}"

    # -- what tests look at --------------------------------------------------------------------------

    @property
    def posts(self) -> List[dict]:
        with self._changed:
            return copy.deepcopy(self._posts)

    @property
    def requests(self) -> List[RequestRecord]:
        with self._changed:
            return copy.deepcopy(self._requests)

    def queue(self, *faults: Fault) -> None:
        with self._changed:
            self._faults.extend(faults)

    def wait_for_posts(self, n: int, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: len(self._posts) >= n, timeout)

    def wait_for_requests(self, n: int, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: len(self._requests) >= n, timeout)

    # -- used by the handler ---------------------------------------------------------------------------

    def receive(self, record: RequestRecord, fault: Optional[Fault] = None) -> Fault:
        """Record a request and take the next scripted fault for it (normal processing when none is queued)."""
        with self._changed:
            if fault is None:
                fault = self._faults.pop(0) if self._faults else Fault.ok()
            record.fault = fault.name
            self._requests.append(record)
            self._changed.notify_all()
        return fault

    def set_status(self, record: RequestRecord, status: Optional[int]) -> None:
        with self._changed:
            record.status = status
            self._changed.notify_all()

    def stopped_during(self, seconds: float) -> bool:
        return seconds > 0 and self._stopping.wait(seconds)

    def log(self, line: str) -> None:
        if self._log is not None:
            self._log(line)

    def process(self, record: RequestRecord) -> Answer:
        """The server's normal answer to a request, creating its posts when it is accepted."""
        rate_headers: Tuple[Tuple[str, str], ...] = ()
        if self._limiter is not None:
            allowed, rate_headers = self._limiter.take(record.client)
            if not allowed:
                return _go_text(429, "limit exceeded").with_headers(rate_headers)
        return self._route(record).with_headers(rate_headers)

    def _route(self, record: RequestRecord) -> Answer:
        parts = urlsplit(record.path)
        route = _HOOK_ROUTE.fullmatch(parts.path)
        if route is None:
            return _go_text(404, "404 page not found")
        if record.method != "POST":
            return Answer(405, (("Allow", "POST"),))
        if len(record.body) > self.max_payload_bytes:
            return app_error(413, "api.context.request_body_too_large.app_error")
        payload, refusal = decode_payload(record.headers.get("Content-Type", ""), record.body, parts.query)
        if payload is None:
            return refusal or app_error(400, "model.incoming_hook.parse_data.app_error")
        return self._handle_webhook(route.group(1), payload, record)

    def _handle_webhook(self, hook_id: str, payload: dict, record: RequestRecord) -> Answer:
        refusal = check_payload(payload)
        if refusal is not None:
            return refusal
        if hook_id != self.hook_id:
            return app_error(400, "web.incoming_webhook.invalid.app_error")
        channel = payload.get("channel") or ""
        if self.locked_channel is not None and channel and not _same_channel(channel, self.locked_channel):
            return app_error(403, "web.incoming_webhook.channel_locked.app_error")
        self._create_posts(payload, record)
        return _ok()

    def _create_posts(self, payload: dict, record: RequestRecord) -> None:
        parts = split_text(payload.get("text") or "", self.max_runes)
        for index, part in enumerate(parts):
            post = copy.deepcopy(payload)
            if len(parts) > 1:
                post["text"] = part
                if index < len(parts) - 1:
                    post.pop("attachments", None)  # attachments ride on the last part only
            with self._changed:
                self._posts.append(post)
                record.created.append(post)
                self._changed.notify_all()


class _BadFraming(Exception):
    """The request body cannot be delimited (bad Content-Length or chunk size)."""


class _ClientGone(Exception):
    """The client closed before sending the whole body."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # socketserver's 5 drops bursts of parallel connects into 1 s SYN retries

    def __init__(self, address: Tuple[str, int], double: MattermostDouble) -> None:
        self.double = double
        self._live: Dict[socket.socket, threading.Thread] = {}
        self._live_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        # Tracked here, in the accepting thread, so that stop() reaches every accepted connection.
        thread = threading.Thread(target=self.process_request_thread, args=(request, client_address),
                                  name="mattermost-double-conn", daemon=True)
        with self._live_lock:
            self._live[request] = thread
        thread.start()

    def shutdown_request(self, request: Any) -> None:
        with self._live_lock:
            self._live.pop(request, None)
        super().shutdown_request(request)

    def drop_connections(self) -> List[threading.Thread]:
        """Shut every open connection, which wakes handlers blocked reading or hanging on it."""
        with self._live_lock:
            live = list(self._live.items())
        for sock, _ in live:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        return [thread for _, thread in live]

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # clients vanish and this double resets sockets on purpose: not worth a traceback
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    default_request_version = "HTTP/1.1"  # so even a garbled request line gets a status line back, as from Go
    server: _Server

    def _serve(self) -> None:
        double = self.server.double
        record = RequestRecord(self.command, self.path, Headers(self.headers.items()), b"",
                               client=self.client_address[0])
        try:
            record.body = self._read_body()
        except _ClientGone:
            self.close_connection = True
            return
        except _BadFraming:
            # Answered like Go's server does, without using up a scripted fault.
            fault = double.receive(record, Fault("bad_framing", answer=_go_text(400, "400 Bad Request")))
            self.close_connection = True
            self._then_answer(record, fault.answer or _ok(), fault)
            return
        fault = double.receive(record)
        if double.stopped_during(fault.wait_before):
            return self._abandon(record)
        answer = double.process(record) if fault.process else None
        if double.stopped_during(fault.wait_after):
            return self._abandon(record)
        answer = fault.answer or answer or _ok()
        self._log_outcome(record, fault, answer)
        getattr(self, f"_then_{fault.then}")(record, answer, fault)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _serve

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        if not length.strip().isdigit():
            raise _BadFraming(length)
        wanted = int(length)
        keep = min(wanted, _DRAIN_LIMIT)
        data = self.rfile.read(keep)
        if len(data) < keep:
            raise _ClientGone()
        if wanted > keep:
            self.close_connection = True  # the rest stays unread, so this connection is done
        return data

    def _read_chunked(self) -> bytes:
        data = bytearray()
        while True:
            line = self.rfile.readline(1024)
            if not line:
                raise _ClientGone()
            try:
                size = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                raise _BadFraming(line) from None
            if size == 0:
                break
            chunk = self.rfile.read(size)
            if len(chunk) < size or not self.rfile.readline(3):
                raise _ClientGone()
            data += chunk
            if len(data) > _DRAIN_LIMIT:
                raise _BadFraming("chunked body too large")
        while self.rfile.readline(1024).strip():
            pass  # trailer fields
        return bytes(data)

    # -- what happens on the wire -----------------------------------------------------------------------

    def _then_answer(self, record: RequestRecord, answer: Answer, fault: Fault) -> None:
        self._send(record, answer.status, answer.encode(self.close_connection, self.command == "HEAD"))

    def _then_trickle(self, record: RequestRecord, answer: Answer, fault: Fault) -> None:
        data = answer.encode(self.close_connection, self.command == "HEAD")
        for index in range(len(data)):
            if index and self.server.double.stopped_during(fault.interval):
                return self._abandon(record)
            if not self._send(record, answer.status, data[index:index + 1]):
                return

    def _then_hang(self, record: RequestRecord, answer: Answer, fault: Fault) -> None:
        self.close_connection = True
        try:
            while self.connection.recv(65536):
                pass  # whatever else the client sends is ignored; only its close (or stop()) ends this
        except OSError:
            pass

    def _then_reset(self, record: RequestRecord, answer: Answer, fault: Fault) -> None:
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # The socket only really closes (with RST, given linger 0) once the reader holding it lets go;
        # closing here keeps socketserver from sending a FIN first.
        self.rfile.close()
        self.connection.close()

    def _then_partial(self, record: RequestRecord, answer: Answer, fault: Fault) -> None:
        try:
            self.connection.sendall(fault.raw)
        except OSError:
            pass
        self._then_reset(record, answer, fault)

    def _then_cut(self, record: RequestRecord, answer: Answer, fault: Fault) -> None:
        self.close_connection = True  # closed as usual after this (a FIN): the short body looks complete
        self._send(record, answer.status, fault.raw)

    def _then_interim(self, record: RequestRecord, answer: Answer, fault: Fault) -> None:
        if self._send(record, answer.status, fault.raw):
            self._then_answer(record, answer, fault)

    def _send(self, record: RequestRecord, status: int, data: bytes) -> bool:
        self.server.double.set_status(record, status)  # before sending: a client that has it sees it
        try:
            self.connection.sendall(data)
            return True
        except OSError:
            self._abandon(record)
            return False

    def _abandon(self, record: RequestRecord) -> None:
        self.close_connection = True
        self.server.double.set_status(record, None)

    # -- logging ------------------------------------------------------------------------------------------

    def _log_outcome(self, record: RequestRecord, fault: Fault, answer: Answer) -> None:
        double = self.server.double
        outcome = {"hang": "no answer (hangs)", "reset": "connection reset",
                   "partial": "partial answer, then reset"}.get(fault.then, str(answer.status))
        double.log(f"{record.method} {_shown_path(record.path, double.hook_id)} -> {outcome} [{fault.name}]")
        for post in record.created:
            for line in describe_post(post):
                double.log(line)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        self.server.double.log(f"{self.client_address[0]} {format % args}")


def _shown_path(path: str, hook_id: str) -> str:
    """The request path without any hook id in it: hook ids are secrets, even wrong ones."""
    def mask(match: re.Match) -> str:
        return "/hooks/<hook>" if match.group(1) == hook_id else "/hooks/<other hook>"
    return re.sub(r"^/hooks/([^/?#]+)", mask, path)


# -- command line -----------------------------------------------------------------------------------------


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m atvm_dev.receiver",
        description="A local Mattermost-compatible webhook receiver on 127.0.0.1; prints what it receives.")
    parser.add_argument("--host", default=LOOPBACK, help=f"only {LOOPBACK} is accepted")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: any free port)")
    parser.add_argument("--hook-id", default=DEFAULT_HOOK_ID, help="the id in /hooks/<id> that is accepted")
    parser.add_argument("--locked-channel", help="refuse posts that name another channel (403)")
    args = parser.parse_args(argv)
    if args.host != LOOPBACK:
        parser.error(f"--host: the receiver listens on {LOOPBACK} only")
    if not HOOK_ID_RE.fullmatch(args.hook_id):
        parser.error("--hook-id: letters and digits only")
    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    double = MattermostDouble(port=args.port, hook_id=args.hook_id, locked_channel=args.locked_channel,
                              log=lambda line: print(line, flush=True))
    try:
        double.start()
    except OSError as exc:
        print(f"receiver: cannot listen on {LOOPBACK}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"listening on {double.url} (Ctrl-C to stop)", flush=True)
    done.wait()
    double.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
