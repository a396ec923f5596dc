"""Secret redaction, in one place, for every output: log lines, delivery and state records, the
CLI's last-resort error report and configuration errors all pass through a ``Redactor`` built
from the secret settings (today the webhook URL, whose path is its token).

The secret parts of a URL: every path segment, every query-string value (a gateway may carry the
token as ``?token=``), the user and the password, the fragment. The scheme, host and port are not
secret (``check`` shows them). A text loses, to ``<webhook>``, every stretch covered by runs of
``MIN_RUN`` or more consecutive characters of a secret part, as written in the URL, decoded, or
encoded the ways a server echoes it (percent-encoded, JSON-escaped, HTML-escaped; ASCII case
ignored): so a cut or re-encoded piece of a token is caught too, not only the whole. Parts
shorter than ``MIN_RUN`` are not searched for (they would match ordinary words); the whole URL is.

Redact first, then shorten: shortening first can cut a token so that what is left of it is no
longer the whole token, and would be kept. ``clip`` does both in that order.
"""

from __future__ import annotations

import dataclasses
import html
import json
import re
import string
from typing import FrozenSet, Iterable, Iterator, List, Tuple, TypeVar
from urllib.parse import quote, unquote, unquote_plus, urlsplit

MARK = "<webhook>"
MIN_RUN = 8
T = TypeVar("T")
_FOLD = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)  # keeps every index in place


def secret_parts(secret: str) -> List[str]:
    """The pieces of a secret value that must never be shown, even in part."""
    secret = secret.strip()
    try:
        parts = urlsplit(secret)
        user, password = parts.username, parts.password
    except ValueError:  # not parseable: no telling which piece is the host, so every piece is secret
        return [p for p in re.split(r"[/?#&=;@:]", secret) if p]
    if not (parts.scheme and parts.netloc):
        return [secret]  # not a URL: a secret as a whole
    pieces = parts.path.split("/") + [user or "", password or "", parts.fragment]
    for pair in re.split(r"[&;]", parts.query):
        key, sep, value = pair.partition("=")
        pieces.append(value if sep else key)  # "?abcdef..." alone is a value too
    return [p for p in pieces if p]


def _forms(part: str) -> Iterator[str]:
    """The part as a server may echo it."""
    for plain in dict.fromkeys((part, unquote(part), unquote_plus(part))):
        yield plain
        yield quote(plain, safe="")
        yield "".join(f"%{b:02x}" for b in plain.encode("utf-8", "surrogatepass"))
        escaped = json.dumps(plain)[1:-1]
        yield escaped
        yield escaped.replace("/", "\\/")
        yield json.dumps(plain, ensure_ascii=False)[1:-1]
        yield "".join(f"\\u{ord(c):04x}" for c in plain)
        yield html.escape(plain)


def _runs(text: str) -> Iterator[str]:
    return (text[i:i + MIN_RUN] for i in range(len(text) - MIN_RUN + 1))


class Redactor:
    """Replaces every secret in a text by ``<webhook>``; ``repr()`` never shows a secret."""

    def __init__(self, secrets: Iterable[str] = ()):
        values = [s.strip() for s in secrets if s and s.strip()]
        self._whole: Tuple[str, ...] = tuple(sorted(set(values), key=len, reverse=True))
        self._grams: FrozenSet[str] = frozenset(
            gram for value in values for part in secret_parts(value) if len(part) >= MIN_RUN
            for form in _forms(part) for gram in _runs(form.translate(_FOLD)))

    def __repr__(self) -> str:
        return f"<Redactor of {len(self._whole)} secret(s)>"

    def __call__(self, text: str) -> str:
        for whole in self._whole:
            text = text.replace(whole, MARK)
        if not self._grams or len(text) < MIN_RUN:
            return text
        folded = text.translate(_FOLD)
        cut: List[Tuple[int, int]] = []  # covered stretches, merged as they are found (left to right)
        for i, gram in enumerate(_runs(folded)):
            if gram in self._grams:
                if cut and i <= cut[-1][1]:
                    cut[-1] = (cut[-1][0], i + MIN_RUN)
                else:
                    cut.append((i, i + MIN_RUN))
        if not cut:
            return text
        kept, start = [], 0
        for begin, end in cut:
            kept += [text[start:begin], MARK]
            start = end
        return "".join(kept) + text[start:]

    def clip(self, text: str, limit: int) -> str:
        """Redacted, then shortened to ``limit`` characters: never the other way round."""
        text = self(text)
        return text if len(text) <= limit else text[: limit - 1] + "…"

    def strings(self, record: T) -> T:
        """A copy of a dataclass with every ``str`` field redacted."""
        changes = {f.name: self(getattr(record, f.name)) for f in dataclasses.fields(record)
                   if isinstance(getattr(record, f.name), str)}
        return dataclasses.replace(record, **changes)
