"""Secret redaction, in one place, for every output: log lines, delivery and state records, the
CLI's last-resort error report and configuration errors all pass through a ``Redactor`` built
from the secret settings (today the webhook URL, whose path is its token).
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, List, TypeVar
from urllib.parse import urlsplit

MARK = "<webhook>"
MIN_SECRET = 8  # shorter pieces would match ordinary words
T = TypeVar("T")


def secret_parts(secret: str) -> List[str]:
    """The pieces of a secret value worth looking for: the whole, and for a URL its path and token."""
    secret = secret.strip()
    try:
        parts = urlsplit(secret)
    except ValueError:
        return [secret]
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    last = parts.path.rstrip("/").rsplit("/", 1)[-1]
    return [secret, path, parts.path, last]


class Redactor:
    """Replaces every secret in a text by ``<webhook>``; ``repr()`` never shows a secret."""

    def __init__(self, secrets: Iterable[str] = ()):
        parts = {p for s in secrets if s and s.strip() for p in secret_parts(s) if len(p) >= MIN_SECRET}
        self._parts = sorted(parts, key=len, reverse=True)  # the longest first: a URL before its token

    def __repr__(self) -> str:
        return f"<Redactor of {len(self._parts)} secret piece(s)>"

    def __call__(self, text: str) -> str:
        for part in self._parts:
            text = text.replace(part, MARK)
        return text

    def strings(self, record: T) -> T:
        """A copy of a dataclass with every ``str`` field redacted."""
        changes = {f.name: self(getattr(record, f.name)) for f in dataclasses.fields(record)
                   if isinstance(getattr(record, f.name), str)}
        return dataclasses.replace(record, **changes)
