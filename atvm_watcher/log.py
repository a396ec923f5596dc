"""One line per event, a level, the build and sub-run named; read well by journald.

Under systemd (JOURNAL_STREAM set) each line starts with a ``<N>`` syslog priority so the
journal stores the right level. A filter passes every line through the Redactor, so the webhook
URL never reaches the journal, whatever a caller logs.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Optional, Union

from .redact import Redactor

PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class _Format(logging.Formatter):
    def __init__(self, journal: bool):
        super().__init__()
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        parts = [record.levelname]
        for key in ("build", "subrun"):
            value = getattr(record, key, None)
            if value:
                parts.append(f"{key}={value}")
        line = " ".join(parts) + " " + record.getMessage().replace("\n", " | ")
        if self.journal:
            line = f"<{PRIORITY.get(record.levelno, 6)}>{line}"
        return line


class _Redact(logging.Filter):
    def __init__(self, redact: Redactor):
        super().__init__()
        self.redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = self.redact(record.getMessage()), ()
        return True


def setup(webhook: Union[str, Redactor] = "", stream=None, level: int = logging.INFO) -> logging.Logger:
    """``webhook``: the webhook URL, or a Redactor built from every secret setting."""
    logger = logging.getLogger("atvm")
    for h in list(logger.handlers):
        logger.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_Format(journal=bool(os.environ.get("JOURNAL_STREAM"))))
    handler.addFilter(_Redact(webhook if isinstance(webhook, Redactor) else Redactor([webhook])))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return logger


def get(build: str, subrun: Optional[str] = None) -> logging.LoggerAdapter:
    return logging.LoggerAdapter(logging.getLogger("atvm"), {"build": build, "subrun": subrun})
