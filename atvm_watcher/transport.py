"""The only code that opens a socket: one HTTP(S) POST of some bytes, bounded in time.

It knows nothing of what is posted or to whom. Its answer is either a complete ``Response``
(the final status, its headers, and its whole body as framed, up to ``MAX_BODY`` bytes) or a
``Failure`` that says whether any byte of the request may have left this machine. Everything that
can fail before the first byte of the request is written (the timeout, the request line and headers,
which http.client checks as it builds them, the host name's IDNA encoding, the connection and TLS
handshake) is done first, and any failure there, of whatever kind, says ``sent=False``: a request
that never left must not read as "maybe posted" (which is never resent). From the first byte on,
the server may hold the request, so every failure says ``sent=True``. Messages never hold the URL's
path or query (they may be secret): only the host and port.
"""

from __future__ import annotations

# http.client and ssl are imported when the watcher starts (commands/watch.py imports this module), not
# when a post is due: importing them costs ~25 ms of CPU at the worst moment, which in a burst of 100 runs
# finishing together on 2 cores delayed the posts by a second or more; deferring saved ~2.3 MiB per
# waiting watcher (docs/PERFORMANCE.md, "Memory", has both measurements).
import http.client
import ipaddress
import math
import re
import socket
import ssl
import threading
from dataclasses import dataclass
from typing import Mapping, Tuple, Union
from urllib.parse import urlsplit

MAX_BODY = 64 * 1024  # bytes of an answer kept; the rest is not read
MAX_INTERIM = 32  # interim (1xx) responses skipped before the answer counts as garbled
_MAX_LINE = 65536
_SENDABLE = re.compile(r"[\x21-\x7e]+")  # what http.client can put on a request line unchanged
# The longest exchange the socket and timer calls take: beyond about 9e9 s they overflow (OverflowError), and
# the setting's own bound (settings.py) is far below this. A timeout outside (0, MAX_TIMEOUT] sends nothing.
MAX_TIMEOUT = 24 * 3600.0


@dataclass(frozen=True)
class Response:
    """A final (non-1xx) answer read to the end of its body, or to ``MAX_BODY`` bytes of it."""

    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True)
class Failure:
    sent: bool  # False only when certainly no byte of the request left this machine
    reason: str  # safe to show: names the host at most


class BadURL(ValueError):
    """A webhook URL that cannot be used; the text names what is wrong, never the value."""


class Target:
    """A parsed http(s) URL; ``str()`` and ``repr()`` show only the host. Errors never show the value."""

    def __init__(self, url: str):
        try:
            parts = urlsplit(url.strip())
        except ValueError:  # "Invalid IPv6 URL" and the like: say so without the value
            raise BadURL("webhook URL cannot be parsed (value not shown)") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BadURL("webhook URL must be http(s)://host/... (value not shown)")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        try:
            port = parts.port
        except ValueError:
            raise BadURL("webhook URL has a bad port (value not shown)") from None
        if port is not None and not 0 < port < 65536:
            raise BadURL("webhook URL has a port outside 1-65535 (value not shown)")
        self.port = port or (443 if self.https else 80)
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if not (_SENDABLE.fullmatch(self.path) and _SENDABLE.fullmatch(self.host)):
            # http.client would refuse it after connecting, which would read as "maybe sent".
            raise BadURL("webhook URL holds spaces, control or non-ASCII characters (value not shown)")
        if not _resolvable(self.host):
            raise BadURL("webhook URL has a host name that cannot be looked up: an empty label, a label over "
                             "63 characters or a name over 253 (value not shown)")

    def __repr__(self) -> str:
        return f"<webhook on {self.host}>"

    __str__ = __repr__


def _resolvable(host: str) -> bool:
    """Would name lookup take this host? Its IDNA encoding refuses an empty label or one over 63 characters
    (a UnicodeError raised inside the connect call), and DNS a name over 253."""
    if ":" in host:  # an IPv6 literal (urlsplit dropped the brackets), maybe with a zone
        try:
            ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        return True
    try:
        encoded = host.encode("idna")
    except UnicodeError:
        return False
    return 0 < len(encoded.rstrip(b".")) <= 253


class _FinalResponse(http.client.HTTPResponse):
    """Reads past every interim answer to the final one.

    http.client skips only ``100 Continue``; a ``103 Early Hints`` (or any other 1xx a server or
    proxy sends unasked) would otherwise be taken as the answer, and the real one never read.
    ``101 Switching Protocols`` is returned as it is: nothing here asked for it, so it is no answer.
    """

    def _read_status(self) -> Tuple[str, int, str]:
        for _ in range(MAX_INTERIM):
            version, status, reason = super()._read_status()
            if not 100 <= status < 200 or status == 101:
                return version, status, reason
            _skip_header_block(self.fp)
        raise http.client.HTTPException(f"more than {MAX_INTERIM} interim answers")


def _skip_header_block(fp) -> None:
    for _ in range(100):
        line = fp.readline(_MAX_LINE + 1)
        if line in (b"\r\n", b"\n", b""):
            return
    raise http.client.HTTPException("an interim answer with too many header lines")


def _read_body(resp: http.client.HTTPResponse) -> bytes:
    """The body up to MAX_BODY bytes; raises IncompleteRead when it ends before its declared length.

    ``read(n)`` returns what arrived and says nothing when the connection closes short of the
    Content-Length (a chunked body does raise): so a 200 cut after ``ok`` of a longer body would
    read as ``ok``. What is left of the declared length tells.
    """
    data = bytearray()
    while len(data) < MAX_BODY:
        chunk = resp.read(MAX_BODY - len(data))
        if not chunk:
            break
        data += chunk
    if len(data) < MAX_BODY and resp.length:  # the connection ended with declared bytes still to come
        raise http.client.IncompleteRead(bytes(data), resp.length)
    return bytes(data)


class _BadTimeout(ValueError):
    """Its text is safe to show (it holds no part of the URL, unlike http.client's own messages)."""


def _request(target: Target, body: bytes, headers: Mapping[str, str], timeout: float) -> http.client.HTTPConnection:
    """A connection with the whole request built but not sent: http.client checks the request line and the
    headers as it buffers them, and sends the buffer only in ``endheaders``."""
    if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and 0 < timeout <= MAX_TIMEOUT):
        raise _BadTimeout(f"the post timeout must be more than 0 and at most {MAX_TIMEOUT:g} seconds")
    if target.https:
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            target.host, target.port, timeout=timeout, context=ssl.create_default_context())
    else:
        conn = http.client.HTTPConnection(target.host, target.port, timeout=timeout)
    conn.response_class = _FinalResponse
    conn.putrequest("POST", target.path)
    conn.putheader("Content-Length", str(len(body)))
    for name, value in headers.items():
        conn.putheader(name, value)
    return conn


def _connect(conn: http.client.HTTPConnection, target: Target) -> Union[Failure, None]:
    """Open the connection; a failure here certainly sent nothing."""
    try:
        conn.connect()
        return None
    except socket.gaierror:
        why = f"cannot resolve the webhook host {target.host!r}"
    except (socket.timeout, TimeoutError):
        why = f"connect to {target.host}:{target.port} timed out"
    except ssl.SSLError as exc:
        why = f"TLS handshake with {target.host} failed: {exc.reason or 'error'}"
    except OSError as exc:
        why = f"cannot connect to {target.host}:{target.port}: {exc.strerror or exc}"
    except Exception as exc:  # noqa: BLE001 - an IDNA or overflow error inside connect(): nothing was sent
        why = f"cannot connect to {target.host}:{target.port} ({type(exc).__name__})"
    conn.close()
    return Failure(False, why)


def post(target: Target, body: bytes, headers: Mapping[str, str], timeout: float) -> Union[Response, Failure]:
    """One POST. ``timeout`` bounds the whole exchange, a trickling server included. Never follows redirects.

    Never raises: every failure is a ``Failure`` that says whether the request may have been sent."""
    try:
        conn = _request(target, body, headers, timeout)
    except Exception as exc:  # noqa: BLE001 - refused while building the request: nothing was sent
        detail = str(exc) if isinstance(exc, _BadTimeout) else type(exc).__name__
        return Failure(False, f"the request could not be built ({detail}); nothing was sent")
    failure = _connect(conn, target)
    if failure:
        return failure
    watchdog = threading.Timer(timeout, _cut, args=(conn,))
    watchdog.daemon = True
    try:
        watchdog.start()
    except Exception as exc:  # noqa: BLE001 - no thread to bound the exchange: do not start it
        conn.close()
        return Failure(False, f"the request was not sent: no timer for its deadline ({type(exc).__name__})")
    # From here on the server may have our request: any failure says so.
    try:
        conn.endheaders(body)
        resp = conn.getresponse()
        return Response(resp.status, resp.headers, _read_body(resp))
    except Exception as exc:  # noqa: BLE001 - whatever it is, the request may have left
        if watchdog.finished.is_set() or isinstance(exc, (socket.timeout, TimeoutError)):
            return Failure(True, f"no complete answer within {timeout:g}s after the request was sent")
        if isinstance(exc, http.client.IncompleteRead):
            return Failure(True, "the answer ended before its declared length, after the request was sent")
        return Failure(True, f"connection failed after the request was sent ({type(exc).__name__})")
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
