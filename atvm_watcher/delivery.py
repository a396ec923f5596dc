"""Deliver once: intent record -> cancel re-check -> POST -> record, each attempt under the state lock.

The promise is "never two posts": an attempt whose request may have reached the server is
recorded as delivery-uncertain and never repeated, unless the operator chose at-least-once.
Retries happen only after outcomes that certainly created no post, with backoff that honours
Retry-After. ``posted.marker`` is written only after HTTP 200 with body ``ok``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

from . import mattermost as webhook
from .statedir import BuildDir, RunDir, StateError, utc_now_iso

# delivery.json "phase": what a restarted watcher may do with it
SENDING = "sending"  # intent written; the request may be on the wire (a crash here: uncertain)
NOT_SENT = "not-sent"  # certainly no post: may send again
UNCERTAIN = "uncertain"
REJECTED = "rejected"
POSTED = "posted"


@dataclass(frozen=True)
class Result:
    outcome: str  # posted | uncertain | rejected | not-sent | cancelled | dry-run
    detail: str
    attempts: int = 0
    error_id: str = ""
    status: Optional[int] = None


# --- test hook: crash points made reachable on purpose (tests/test_crash_points.py) ---------------
# Inert unless ATVM_TEST_PAUSE_AT=<point>[@n] and ATVM_TEST_PAUSE_FILE=<path> are both set: the n-th
# time (default first) this process reaches <point> it writes <path> (holding the run folder) and
# waits while <path> exists, so a test can SIGKILL it right there or delete <path> to let it go on.
PAUSE_POINTS = ("before-intent", "intent-written", "response-received", "marker-written")
_pause_counts: Dict[str, int] = {}


def pause_for_test(point: str, run: RunDir) -> None:
    wanted, flag = os.environ.get("ATVM_TEST_PAUSE_AT", ""), os.environ.get("ATVM_TEST_PAUSE_FILE", "")
    name, _, nth = wanted.partition("@")
    if not flag or name != point:
        return
    _pause_counts[point] = _pause_counts.get(point, 0) + 1
    if _pause_counts[point] != int(nth or 1):
        return
    with open(flag, "w", encoding="utf-8") as fh:
        fh.write(f"{os.getpid()} {run.path}\n")
    deadline = time.monotonic() + 120
    while os.path.exists(flag) and time.monotonic() < deadline:
        time.sleep(0.01)


def digest(payload: Dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def previous(run: RunDir, at_least_once: bool) -> Optional[Result]:
    """What an earlier attempt (maybe by a watcher that died) settles, before any new attempt."""
    if run.is_posted():
        return Result("posted", "posted.marker present: already delivered")
    record = run.read_delivery()
    phase = record.get("phase")
    if phase in (SENDING, UNCERTAIN) and not at_least_once:
        why = record.get("detail") or "the watcher stopped mid-request"
        return Result("uncertain", f"an earlier attempt may have posted ({why}); not resent"
                      " (at-most-once; ATVM_DELIVERY=at-least-once or watch --at-least-once resends)",
                      int(record.get("attempts") or 0), str(record.get("error_id") or ""))
    return None


class Deliverer:
    def __init__(self, build: BuildDir, url: str, timeout: float, attempts: int, backoff: float,
                 max_wait: float, at_least_once: bool, sleep: Callable[[float], bool],
                 post: Callable[..., webhook.PostOutcome] = webhook.post):
        self.build, self.url, self.timeout = build, url, timeout
        self.attempts, self.backoff, self.max_wait = attempts, backoff, max_wait
        self.at_least_once = at_least_once
        self.sleep = sleep  # returns False when the watcher is asked to stop
        self.post = post

    def deliver(self, run: RunDir, payload: Dict[str, Any], state: str) -> Result:
        settled = previous(run, self.at_least_once)
        if settled:
            return settled
        total = int(run.read_delivery().get("attempts") or 0)
        outcome = None
        for n in range(1, self.attempts + 1):
            result, outcome = self._attempt(run, payload, state, total + n)
            if result:
                return result
            wait = self._wait(n, outcome)
            if wait is None or not self.sleep(wait):
                break
        detail = outcome.detail if outcome else "not attempted"
        return Result("not-sent", f"not delivered after {self.attempts} attempt(s): {detail}",
                      self.attempts, outcome.error_id if outcome else "", outcome.status if outcome else None)

    def _wait(self, n: int, outcome: webhook.PostOutcome) -> Optional[float]:
        if n >= self.attempts:
            return None
        wait = outcome.retry_after if outcome.retry_after is not None else self.backoff * 2 ** (n - 1)
        return min(wait, self.max_wait)

    def _attempt(self, run: RunDir, payload: Dict[str, Any], state: str, number: int):
        base = {"attempts": number, "payload_sha256": digest(payload)}
        pause_for_test("before-intent", run)
        with self.build.state_lock():
            if self.build.is_cancelled():  # re-checked under the lock that cancel also takes
                return Result("cancelled", "cancelled.marker present: not posted", number - 1), None
            run.write_delivery({**base, "phase": SENDING, "detail": "request about to be sent",
                                "started_at": utc_now_iso()})
            pause_for_test("intent-written", run)
            outcome = self.post(self.url, payload, self.timeout)
            pause_for_test("response-received", run)
            record = {**base, "detail": outcome.detail, "http_status": outcome.status, "error_id": outcome.error_id}
            if outcome.kind == "posted":
                return self._posted(run, record, state, number), outcome
            phase = {"not-sent": NOT_SENT, "rejected": REJECTED}.get(outcome.kind, UNCERTAIN)
            self._record(run, {**record, "phase": phase})
        if phase == NOT_SENT:
            return None, outcome
        return Result(outcome.kind if phase != UNCERTAIN else "uncertain", outcome.detail, number,
                      outcome.error_id, outcome.status), outcome

    def _posted(self, run: RunDir, record: Dict[str, Any], state: str, number: int) -> Result:
        try:
            run.mark_posted({"posted_at": utc_now_iso(), "http_status": 200, "attempts": number,
                             "payload_sha256": record["payload_sha256"], "state": state})
        except StateError as exc:
            # The post exists; delivery.json still says "sending", so no restart will resend it.
            return Result("posted", f"HTTP 200 ok, but posted.marker could not be written: {exc}", number,
                          status=200)
        pause_for_test("marker-written", run)
        self._record(run, {**record, "phase": POSTED})
        return Result("posted", record["detail"], number, status=200)

    @staticmethod
    def _record(run: RunDir, record: Dict[str, Any]) -> None:
        try:
            run.write_delivery(record)
        except StateError:
            # posted.marker (or its absence) stays the truth; a lost delivery.json only loses detail.
            pass
