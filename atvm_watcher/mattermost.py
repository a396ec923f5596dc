"""Everything this program knows about Mattermost's incoming webhook: the payload's
shape, the server's size limits, and what each of its answers means for a post.

The payload: ``text`` (icon and subject), one colour-coded attachment (``fallback``, ``color``,
``title``, ``fields``, ``footer``), and ``channel``/``username`` when set. Values typed by people
have '@' defused so a scope description can never ping a whole channel.

Size, checked before every send on the payload as it will be sent: its runes (``text`` and every
string of the attachments, counted generously) stay under the 16383 at which the server splits a
message into several posts, and the JSON body under the server's default 300000-byte limit. A
payload over either is never sent split: it is shrunk, one step at a time until it fits, by this
rule: the longest counted string (the failed-test list, when a run has many failures) is cut to
at most half its length, at a line end where it has lines, and says so at its end; once no string
is longer than ``MIN_KEPT``, the attachment's fields are dropped from the last; last of all, only
``text``, ``channel`` and ``username`` are kept. What ``render`` builds is capped per value and
always fits; the check guards a payload stored by an earlier version, or edited.

Answers, sorted into what the caller may do next (README.md, "States"):
  posted     a final 200 whose whole body (as long as its Content-Length says) is exactly ``ok``
  not-sent   certainly no post was made (a URL, timeout or payload refused before anything was sent,
             no connection, 429, 408, a Mattermost 500 on a message kept under the split limit):
             safe to retry
  rejected   a refusal: 400/403/404/413/501 (Mattermost's permanent ones) and other 4xx, after which
             the server did not act; do not loop
  uncertain  the request may have created a post: a timeout or reset after sending, a body cut short,
             a proxy's 5xx, a 200 with another body, any redirect (303 See Other even says the server
             acted; none is followed), anything else unexpected; never resent automatically
The webhook URL (its path is the secret) never enters an outcome: every outcome passes the Redactor.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Dict, List, Mapping, Optional, Tuple

from . import transport
from .message import Field, Message
from .redact import Redactor

MAX_RUNES = 16383  # PostMessageMaxRunesV2: a longer message is split into several posts
MAX_PAYLOAD_BYTES = 300000  # MaximumPayloadSizeBytes (default): a larger body is refused with 413
MIN_KEPT = 100  # a string is not cut below this many characters by the size rule
CUT_NOTE = " … (cut to fit Mattermost's size limits)"
PERMANENT = {400, 403, 404, 413, 501}
EPOCH_2001 = 1e9  # an X-RateLimit-Reset this large is a timestamp, not a number of seconds
HEADERS = {"Content-Type": "application/json", "User-Agent": "atvm-watcher", "Connection": "close"}

COLORS = {"COMPLETED": "#2eb886", "FAILED": "#d00000", "TEST": "#3a87ad"}
ICONS = {"COMPLETED": ":white_check_mark:", "FAILED": ":x:", "TEST": ":information_source:"}
MAX_TITLES = 10
MAX_TITLE_CHARS = 200
MAX_ERROR_CHARS = 160  # the first line of a failed test's error, after its title
MAX_FLAKY = 5
MAX_VALUE_CHARS = 1000
MAX_NAME_CHARS = 300  # an identifier (a build, a template, a host, a path): longer ones are not real
MAX_LINK_CHARS = 500
_ATTACHMENT_STRINGS = ("fallback", "title", "text", "footer", "pretext")


# --- the payload ------------------------------------------------------------------------------------


def defuse(text: str, limit: int = MAX_VALUE_CHARS) -> str:
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace("@", "@\u200b")


def code(text: str, limit: int = MAX_VALUE_CHARS) -> str:
    return "`" + defuse(text, limit).replace("`", "'") + "`" if text else "-"


def listed(titles: Tuple[str, ...], cap: int, notes: Tuple[str, ...] = (), total: int = 0) -> str:
    """A Markdown list of up to ``cap`` titles (each with its note, e.g. the error line), then "and N more"."""
    shown = []
    for i, t in enumerate(titles[:cap]):
        note = notes[i] if i < len(notes) else ""
        shown.append(f"- {code(t, MAX_TITLE_CHARS)}" + (f": {defuse(note, MAX_ERROR_CHARS)}" if note else ""))
    more = max(total, len(titles)) - min(cap, len(titles))
    if more > 0:
        shown.append(f"- and {more} more")
    return "\n".join(shown)


def failed_list(titles: Tuple[str, ...], errors: Tuple[str, ...] = ()) -> str:
    return listed(titles, MAX_TITLES, errors)


def _field(f: Field) -> Dict[str, Any]:
    shown = [code(f.name, MAX_NAME_CHARS) if f.name else "", defuse(f.value) if f.value else ""]
    return {"title": f.title, "value": " ".join(s for s in shown if s) or "-", "short": f.short}


def _link(url: str) -> str:
    """A URL as Markdown link target: only http(s) (settings.py checks ATVM_REPORT_URL), never a space or ')'."""
    url = url[:MAX_LINK_CHARS]
    if not url.lower().startswith(("http://", "https://")) or any(c in url for c in " ()<>\n`"):
        return ""
    return url


def render(message: Message, channel: str = "", username: str = "") -> Dict[str, Any]:
    """The webhook payload for one message, within the server's limits."""
    fields = [_field(f) for f in message.fields]
    link = _link(message.link)
    if link:
        fields.append({"title": "HTML report", "value": f"[open the report]({link})", "short": False})
    if message.flaky_titles or message.flaky_count:
        fields.append({"title": f"Flaky: passed on a retry ({max(message.flaky_count, len(message.flaky_titles))})",
                       "value": listed(message.flaky_titles, MAX_FLAKY, total=message.flaky_count) or "-",
                       "short": False})
    if message.failed_titles:
        fields.append({"title": f"Failed tests ({len(message.failed_titles)})",
                       "value": failed_list(message.failed_titles, message.failed_errors), "short": False})
    head = defuse(message.subject, 400)
    attachment: Dict[str, Any] = {
        "fallback": defuse(message.summary, 700),
        "color": COLORS.get(message.state, "#808080"),
        "title": head,
        "fields": fields,
        "footer": defuse(message.footer, 300),  # the server cuts a longer footer
    }
    if link:
        attachment["title_link"] = link
    body: Dict[str, Any] = {"text": f"{ICONS.get(message.state, '')} {head}".strip(), "attachments": [attachment]}
    if channel:
        body["channel"] = channel
    if username:
        body["username"] = username
    return fit(body)


# --- size -------------------------------------------------------------------------------------------


def _counted(p: Dict[str, Any]) -> List[Tuple[Dict[str, Any], str]]:
    """Where the strings the server counts against its message limit sit: (holder, key) pairs."""
    slots: List[Tuple[Dict[str, Any], str]] = [(p, "text")] if isinstance(p.get("text"), str) else []
    for att in p.get("attachments") or []:
        if not isinstance(att, dict):
            continue
        slots += [(att, k) for k in _ATTACHMENT_STRINGS if isinstance(att.get(k), str)]
        for f in att.get("fields") or []:
            if isinstance(f, dict):
                slots += [(f, k) for k in ("title", "value") if isinstance(f.get(k), str)]
    return slots


def runes(p: Dict[str, Any]) -> int:
    """Characters the server counts against its message limit (text and attachment strings)."""
    return sum(len(holder[key]) for holder, key in _counted(p))


def encode(p: Dict[str, Any]) -> bytes:
    try:
        return json.dumps(p, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: JSON escapes carry it, the server replaces it
        return json.dumps(p).encode("ascii")


def fits(p: Dict[str, Any]) -> bool:
    return runes(p) < MAX_RUNES and len(encode(p)) < MAX_PAYLOAD_BYTES


def _cut(text: str, keep: int) -> str:
    kept = text[: max(0, keep - len(CUT_NOTE))]
    if "\n" in kept:
        kept = kept[: kept.rindex("\n")]  # whole lines: a list stays a list
    return kept + CUT_NOTE


def fit(p: Dict[str, Any]) -> Dict[str, Any]:
    """``p`` itself when it is within the limits, else a shrunk copy (the rule is in the module text)."""
    if fits(p):
        return p
    p = copy.deepcopy(p)
    while not fits(p):
        slots = _counted(p)
        holder, key = max(slots, key=lambda s: len(s[0][s[1]]), default=({}, ""))
        longest = len(holder.get(key, ""))
        if longest > MIN_KEPT:
            over = max(runes(p) - MAX_RUNES + 1, len(encode(p)) - MAX_PAYLOAD_BYTES + 1)
            holder[key] = _cut(holder[key], max(MIN_KEPT, min(longest // 2, longest - over)))
        elif not _drop_a_field(p):
            return {k: p[k] for k in ("text", "channel", "username") if isinstance(p.get(k), str)}
    return p


def _drop_a_field(p: Dict[str, Any]) -> bool:
    for att in reversed(p.get("attachments") or []):
        if isinstance(att, dict) and att.get("fields"):
            att["fields"] = att["fields"][:-1]
            return True
    return False


# --- the answer -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PostOutcome:
    kind: str  # "posted" | "not-sent" | "rejected" | "uncertain"
    detail: str  # safe to log: never holds the URL
    status: Optional[int] = None
    error_id: str = ""
    retry_after: Optional[float] = None


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


def _error_field(body: bytes, key: str) -> str:
    """A field of Mattermost's JSON error body (``id``, ``message``), or "" for any other body."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return ""
    return str(data.get(key, "")) if isinstance(data, dict) else ""


def classify(status: int, body: bytes, headers: Mapping[str, str], now: float,
             redact: Redactor) -> PostOutcome:
    """What an answer means. Every text taken from it is redacted whole, and only then shortened."""
    text = redact(body.decode("utf-8", "replace")).strip()
    err = redact.clip(_error_field(body, "id"), 200)
    said = f"HTTP {status}" + (f" {err}" if err else "")
    if status == 200:
        if body == b"ok":
            return PostOutcome("posted", "HTTP 200 ok", status)
        shown = redact(body.decode("utf-8", "replace"))[:60]  # redacted whole, then cut; unstripped
        return PostOutcome("uncertain", f"HTTP 200 but the body is not exactly 'ok' ({len(body)} bytes: "
                           f"{shown!r}): a proxy answered; the post may or may not exist", status)
    if status == 429:
        return PostOutcome("not-sent", f"{said}: rate limited", status, err, retry_after(headers, now))
    if status == 408:
        return PostOutcome("not-sent", f"{said}: the server timed out reading the request", status, err)
    if status == 500 and err:
        # Mattermost's own 500 (JSON error): the message is kept under the split limit, so no part posted.
        return PostOutcome("not-sent", f"{said}: Mattermost store error", status, err,
                           retry_after(headers, now))
    if status >= 500 and status != 501:
        return PostOutcome("uncertain", f"{said}: a server or proxy error after the request was sent", status, err)
    if 300 <= status < 400:
        return PostOutcome("uncertain", f"{said}: a redirect, not followed; the server may have acted on the "
                           "request before redirecting", status, err)
    if status in PERMANENT or 400 <= status < 500:
        message = redact.clip(_error_field(body, "message"), 200)
        return PostOutcome("rejected", f"{said}: {message or text[:120]}", status, err)
    return PostOutcome("uncertain", f"{said}: unexpected answer", status, err)


def post(url: str, payload: Dict[str, Any], timeout: float, clock=time.time) -> PostOutcome:
    """One attempt: the payload, checked against the size limits, POSTed and its answer classified.

    Never raises. What fails before the request leaves (the URL, the payload, see transport.py) is
    not-sent, so it is retried and never reads as a post that may exist; what fails after is uncertain.
    """
    redact = Redactor([url])
    try:
        target = transport.Target(url)
        body = encode(fit(payload))
    except transport.BadURL as exc:  # its text never holds the URL
        return redact.strings(PostOutcome("not-sent", f"{exc}; nothing was sent"))
    except Exception as exc:  # noqa: BLE001 - a damaged stored payload, say: its text is not shown
        return PostOutcome("not-sent", f"the payload could not be encoded ({type(exc).__name__}); nothing was sent")
    answer = transport.post(target, body, HEADERS, timeout)
    if isinstance(answer, transport.Failure):
        return redact.strings(PostOutcome("uncertain" if answer.sent else "not-sent", answer.reason))
    try:
        outcome = classify(answer.status, answer.body, answer.headers, clock(), redact)
    except Exception as exc:  # noqa: BLE001 - an answer came, so the request left: it may have posted
        outcome = PostOutcome("uncertain", f"HTTP {answer.status}: the answer could not be read ({type(exc).__name__})",
                              answer.status)
    return redact.strings(outcome)
