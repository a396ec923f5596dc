"""The only code that opens a socket: one POST to the Mattermost incoming webhook, classified.

Every outcome is sorted into what the caller may do next (CONTRACT.md, "Delivery"):
  posted     200 and the body exactly ``ok``
  not-sent   certainly no post was made (no connection, 429, 408, a Mattermost 500 on a message
             kept under the split limit): safe to retry
  rejected   a permanent answer (400/403/404/413/501, other 4xx, redirects): do not loop
  uncertain  the request may have created a post (timeout or reset after sending, proxy 5xx,
             200 with another body): never resent automatically
The webhook URL (its path is the secret) never enters an outcome, a log line or an exception.
"""

from __future__ import annotations

# http.client and ssl are imported up front, not when a post is due: importing them costs ~25 ms of
# CPU, which under a burst of finishing runs (100 watchers on 2 cores) delays every post by a second,
# while the ~6 MB they add keeps a waiting watcher well under its memory target (docs/PERFORMANCE.md).
import http.client
import json
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass, replace
from email.utils import parsedate_to_datetime
from typing import Any, Dict, Mapping, Optional
from urllib.parse import urlsplit

MAX_BODY = 64 * 1024
PERMANENT = {400, 403, 404, 413, 501}
EPOCH_2001 = 1e9  # an X-RateLimit-Reset this large is a timestamp, not a number of seconds
_SENDABLE = re.compile(r"[\x21-\x7e]+")  # what http.client can put on a request line unchanged


@dataclass(frozen=True)
class PostOutcome:
    kind: str  # "posted" | "not-sent" | "rejected" | "uncertain"
    detail: str  # safe to log: never holds the URL
    status: Optional[int] = None
    error_id: str = ""
    retry_after: Optional[float] = None


class Target:
    """A parsed webhook URL; ``str()`` and ``repr()`` show only the host."""

    def __init__(self, url: str):
        try:
            parts = urlsplit(url.strip())
        except ValueError:  # "Invalid IPv6 URL" and the like: say so without the value
            raise ValueError("webhook URL cannot be parsed (value not shown)") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("webhook URL must be http(s)://host/... (value not shown)")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        try:
            self.port = parts.port or (443 if self.https else 80)
        except ValueError:
            raise ValueError("webhook URL has a bad port (value not shown)") from None
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if not (_SENDABLE.fullmatch(self.path) and _SENDABLE.fullmatch(self.host)):
            # http.client would refuse it after connecting, which would read as "maybe sent".
            raise ValueError("webhook URL holds spaces, control or non-ASCII characters (value not shown)")
        self._secret = url.strip()

    def __repr__(self) -> str:
        return f"<webhook on {self.host}>"

    __str__ = __repr__

    def redact(self, text: str) -> str:
        """Servers and proxies echo the request path in error pages: never let it through."""
        last = self.path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        for secret in (self._secret, self.path, self.path.split("?", 1)[0], last):
            if len(secret) >= 8:
                text = text.replace(secret, "<webhook>")
        return text

    def redact_outcome(self, outcome: PostOutcome) -> PostOutcome:
        return replace(outcome, detail=self.redact(outcome.detail), error_id=self.redact(outcome.error_id))


def retry_after(headers: Mapping[str, str], now: float) -> Optional[float]:
    """Seconds to wait from Retry-After (seconds or HTTP date) or X-RateLimit-Reset (seconds)."""
    for name in ("Retry-After", "X-RateLimit-Reset"):
        raw = (headers.get(name) or "").strip()
        if not raw:
            continue
        try:
            seconds = float(raw)
        except ValueError:
            seconds = None
        if seconds is not None and seconds == seconds:  # NaN is no answer
            return max(0.0, seconds - now if seconds > EPOCH_2001 else seconds)
        try:
            return max(0.0, parsedate_to_datetime(raw).timestamp() - now)
        except (TypeError, ValueError, IndexError):
            continue
    return None


def _error_id(body: bytes) -> str:
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return ""
    return str(data.get("id", ""))[:200] if isinstance(data, dict) else ""


def classify(status: int, body: bytes, headers: Mapping[str, str], now: float) -> PostOutcome:
    text = body[:200].decode("utf-8", "replace").strip()
    err = _error_id(body)
    said = f"HTTP {status}" + (f" {err}" if err else "")
    if status == 200:
        if body == b"ok":
            return PostOutcome("posted", "HTTP 200 ok", status)
        return PostOutcome("uncertain", f"HTTP 200 but the body is not 'ok' ({len(body)} bytes: "
                           f"{text[:60]!r}): a proxy answered; the post may or may not exist", status)
    if status == 429:
        return PostOutcome("not-sent", f"{said}: rate limited", status, err, retry_after(headers, now))
    if status == 408:
        return PostOutcome("not-sent", f"{said}: the server timed out reading the request", status, err)
    if status == 500 and err:
        # Mattermost's own 500 (JSON error): our message is kept under the split limit, so no part posted.
        return PostOutcome("not-sent", f"{said}: Mattermost store error", status, err,
                           retry_after(headers, now))
    if status >= 500 and status != 501:
        return PostOutcome("uncertain", f"{said}: a server or proxy error after the request was sent", status, err)
    if status in PERMANENT or 300 <= status < 500:
        return PostOutcome("rejected", f"{said}: {_error_message(body) or text[:120]!s}", status, err)
    return PostOutcome("uncertain", f"{said}: unexpected answer", status, err)


def _error_message(body: bytes) -> str:
    try:
        data = json.loads(body.decode("utf-8"))
        return str(data.get("message", ""))[:200] if isinstance(data, dict) else ""
    except (UnicodeDecodeError, ValueError, RecursionError):
        return ""


def _connection(target: Target, timeout: float) -> http.client.HTTPConnection:
    if target.https:
        return http.client.HTTPSConnection(target.host, target.port, timeout=timeout,
                                           context=ssl.create_default_context())
    return http.client.HTTPConnection(target.host, target.port, timeout=timeout)


def _read_capped(resp: http.client.HTTPResponse) -> bytes:
    body = resp.read(MAX_BODY + 1)
    return body[:MAX_BODY]


def post(url: str, payload: Dict[str, Any], timeout: float, clock=time.time) -> PostOutcome:
    """One attempt. ``timeout`` bounds the whole exchange, a trickling server included."""
    try:
        target = Target(url)
    except ValueError as exc:
        return PostOutcome("rejected", str(exc))
    try:
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: JSON escapes carry it, the server replaces it
        body = json.dumps(payload).encode("ascii")
    return target.redact_outcome(_exchange(target, body, timeout, clock))


def _exchange(target: Target, body: bytes, timeout: float, clock) -> PostOutcome:
    conn = _connection(target, timeout)
    try:
        conn.connect()
    except socket.gaierror:
        conn.close()
        return PostOutcome("not-sent", f"cannot resolve the webhook host {target.host!r}")
    except (socket.timeout, TimeoutError):
        conn.close()
        return PostOutcome("not-sent", f"connect to {target.host}:{target.port} timed out")
    except ssl.SSLError as exc:
        conn.close()
        return PostOutcome("not-sent", f"TLS handshake with {target.host} failed: {exc.reason or 'error'}")
    except OSError as exc:
        conn.close()
        return PostOutcome("not-sent", f"cannot connect to {target.host}:{target.port}: {exc.strerror or exc}")
    # From here on the server may have our request: any failure is "uncertain".
    watchdog = threading.Timer(timeout, _cut, args=(conn,))
    watchdog.daemon = True
    watchdog.start()
    try:
        conn.request("POST", target.path, body=body, headers={
            "Content-Type": "application/json", "User-Agent": "atvm-watcher", "Connection": "close"})
        resp = conn.getresponse()
        data = _read_capped(resp)
        return classify(resp.status, data, resp.headers, clock())
    except (socket.timeout, TimeoutError):
        return PostOutcome("uncertain", f"no answer within {timeout:g}s after the request was sent")
    except (http.client.HTTPException, OSError, ValueError) as exc:
        why = "no answer in time" if watchdog.finished.is_set() else type(exc).__name__
        return PostOutcome("uncertain", f"connection failed after the request was sent ({why})")
    finally:
        watchdog.cancel()
        conn.close()


def _cut(conn: http.client.HTTPConnection) -> None:
    """Deadline reached: shut the socket so a read blocked on a trickling server returns."""
    sock = conn.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
