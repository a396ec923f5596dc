"""Deliver once: intent record -> cancel re-check -> POST -> record, each attempt under the state lock.

The promise is "never two posts": an attempt whose request may have reached the server is
recorded as delivery-uncertain and never repeated, unless the operator chose at-least-once.
Retries happen only after outcomes that certainly created no post, with backoff that honours
Retry-After. ``posted.marker`` is written only after HTTP 200 with body ``ok``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

from . import mattermost
from .statedir import BuildDir, RunDir, StateError, utc_now_iso
from .vocab import Delivery


@dataclass(frozen=True)
class Result:
    outcome: Delivery
    detail: str
    attempts: int = 0
    error_id: str = ""
    status: Optional[int] = None


# Crash points: where a test may stop this process on purpose (atvm_dev/atvm_run_watcher_crashpoint.py installs a
# function here; the runtime never does). Each is reached with the scope's run folder.
CHECKPOINTS = ("before-intent", "intent-written", "response-received", "marker-written")


def _no_checkpoint(point: str, run: RunDir) -> None:
    return None


checkpoint: Callable[[str, RunDir], None] = _no_checkpoint


def digest(payload: Dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def previous(run: RunDir, at_least_once: bool) -> Optional[Result]:
    """What an earlier attempt (maybe by a watcher that died) settles, before any new attempt."""
    if run.is_posted():
        return Result(Delivery.POSTED, "posted.marker present: already delivered")
    record = run.read_delivery()
    phase = Delivery.of(record.get("phase"))
    if phase in (Delivery.SENDING, Delivery.UNCERTAIN) and not at_least_once:
        why = record.get("detail") or "the watcher stopped mid-request"
        return Result(Delivery.UNCERTAIN, f"an earlier attempt may have posted ({why}); not resent"
                      " (at-most-once; ATVM_DELIVERY=at-least-once or watch --at-least-once resends)",
                      int(record.get("attempts") or 0), str(record.get("error_id") or ""))
    return None


class Deliverer:
    def __init__(self, build: BuildDir, url: str, timeout: float, attempts: int, backoff: float,
                 max_wait: float, at_least_once: bool, sleep: Callable[[float], bool],
                 post: Callable[..., mattermost.PostOutcome] = mattermost.post):
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
        return Result(Delivery.NOT_SENT, f"not delivered after {self.attempts} attempt(s): {detail}",
                      self.attempts, outcome.error_id if outcome else "", outcome.status if outcome else None)

    def _wait(self, n: int, outcome: mattermost.PostOutcome) -> Optional[float]:
        if n >= self.attempts:
            return None
        wait = outcome.retry_after if outcome.retry_after is not None else self.backoff * 2 ** (n - 1)
        return min(wait, self.max_wait)

    def _attempt(self, run: RunDir, payload: Dict[str, Any], state: str, number: int):
        base = {"attempts": number, "payload_sha256": digest(payload)}
        checkpoint("before-intent", run)
        with self.build.state_lock():
            if self.build.is_cancelled():  # re-checked under the lock that cancel also takes
                if number > 1:  # an earlier attempt's "not-sent" would otherwise read as a post still owed
                    self._record(run, {**base, "attempts": number - 1, "phase": Delivery.CANCELLED,
                                       "detail": "cancelled before the next attempt"})
                return Result(Delivery.CANCELLED, "cancelled.marker present: not posted", number - 1), None
            run.write_delivery({**base, "phase": Delivery.SENDING, "detail": "request about to be sent",
                                "started_at": utc_now_iso()})
            checkpoint("intent-written", run)
            outcome = self._post(payload)
            checkpoint("response-received", run)
            record = {**base, "detail": outcome.detail, "http_status": outcome.status, "error_id": outcome.error_id}
            if outcome.kind == "posted":
                return self._posted(run, record, state, number), outcome
            phase = Delivery.of(outcome.kind)
            if phase not in (Delivery.NOT_SENT, Delivery.REJECTED):
                phase = Delivery.UNCERTAIN
            self._record(run, {**record, "phase": phase})
        if phase == Delivery.NOT_SENT:
            return None, outcome
        return Result(phase, outcome.detail, number, outcome.error_id, outcome.status), outcome

    def _post(self, payload: Dict[str, Any]) -> mattermost.PostOutcome:
        """The attempt's outcome; never an exception, which would leave the intent "sending" (read as uncertain
        by the next watcher) whatever happened. ``mattermost.post`` says not-sent for everything that fails
        before the request leaves and never raises; should a post function raise all the same, whether the
        request left is unknown, and it is recorded as uncertain, with why."""
        try:
            return self.post(self.url, payload, self.timeout)
        except Exception as exc:  # noqa: BLE001 - see above
            return mattermost.PostOutcome("uncertain", f"the attempt failed unexpectedly ({type(exc).__name__}); "
                                          "the request may have been sent")

    def _posted(self, run: RunDir, record: Dict[str, Any], state: str, number: int) -> Result:
        try:
            run.mark_posted({"posted_at": utc_now_iso(), "http_status": 200, "attempts": number,
                             "payload_sha256": record["payload_sha256"], "state": state})
        except StateError as exc:
            # The post exists; delivery.json still says "sending", so no restart will resend it.
            return Result(Delivery.POSTED, f"HTTP 200 ok, but posted.marker could not be written: {exc}", number,
                          status=200)
        checkpoint("marker-written", run)
        self._record(run, {**record, "phase": Delivery.POSTED})
        return Result(Delivery.POSTED, record["detail"], number, status=200)

    @staticmethod
    def _record(run: RunDir, record: Dict[str, Any]) -> None:
        try:
            run.write_delivery(record)
        except StateError:
            # posted.marker (or its absence) stays the truth; a lost delivery.json only loses detail.
            pass
