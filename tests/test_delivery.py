"""Deliver once, in process: the intent record, the retry rules, the markers, and the state folder's
behaviour when the disk is full or a file is damaged (issue 4, items 1-3).

The fake ``post`` looks at the state folder at the moment of the call, so "the intent is durable
before the request leaves" is checked where it matters, not inferred.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import List

import pytest

from atvm_watcher import delivery, statedir
from atvm_watcher.delivery import Deliverer, previous
from atvm_watcher.mattermost import PostOutcome
from atvm_watcher.statedir import BuildDir, StateError, encode_json, write_json_atomic

PAYLOAD = {"text": "ATVM run COMPLETED: b"}
URL = "http://127.0.0.1:9/hooks/atvmtesthooktoken0123456789"


class Script:
    """A post function answering from a list, recording what the state folder said at each call."""

    def __init__(self, build: BuildDir, *outcomes: PostOutcome):
        self.build, self.outcomes, self.seen_phases = build, list(outcomes), []

    def __call__(self, url, payload, timeout):
        self.seen_phases.append(self.build.read_delivery().get("phase"))
        assert not self.build.is_posted()
        return self.outcomes.pop(0)


def make(tmp_path: Path, *outcomes: PostOutcome, attempts: int = 5, at_least_once: bool = False,
         max_wait: float = 300.0):
    build = BuildDir(tmp_path / "state" / "b")
    build.ensure()
    waits: List[float] = []

    def sleep(seconds: float) -> bool:
        waits.append(seconds)
        return True

    script = Script(build, *outcomes)
    return build, Deliverer(build, URL, 1.0, attempts, 2.0, max_wait, at_least_once, sleep, post=script), \
        script, waits


OK = PostOutcome("posted", "HTTP 200 ok", 200)
REFUSED = PostOutcome("not-sent", "cannot connect")
LIMITED = PostOutcome("not-sent", "HTTP 429: rate limited", 429, retry_after=7.0)
TIMEOUT = PostOutcome("uncertain", "no answer within 1s after the request was sent")
BAD = PostOutcome("rejected", "HTTP 400", 400, "web.incoming_webhook.invalid.app_error")


def test_intent_is_durable_before_the_request_and_marker_only_after_ok(tmp_path):
    build, d, script, _ = make(tmp_path, OK)
    result = d.deliver(build, PAYLOAD, "COMPLETED")
    assert result.outcome == "posted" and script.seen_phases == ["sending"]
    assert build.is_posted() and build.read_delivery()["phase"] == "posted"
    assert json.loads(build.posted_marker.read_text())["state"] == "COMPLETED"


@pytest.mark.parametrize("outcome", [TIMEOUT, BAD, REFUSED])
def test_no_marker_without_200_ok(tmp_path, outcome):
    build, d, _, _ = make(tmp_path, *[outcome] * 5)
    assert d.deliver(build, PAYLOAD, "COMPLETED").outcome == outcome.kind
    assert not build.is_posted()


def test_retries_only_what_certainly_made_no_post_with_backoff(tmp_path):
    build, d, script, waits = make(tmp_path, REFUSED, REFUSED, OK)
    result = d.deliver(build, PAYLOAD, "COMPLETED")
    assert (result.outcome, result.attempts) == ("posted", 3)
    assert waits == [2.0, 4.0]
    assert script.seen_phases == ["sending"] * 3


def test_retry_after_wins_over_backoff_and_is_capped(tmp_path):
    build, d, _, waits = make(tmp_path, LIMITED, LIMITED, OK, max_wait=5.0)
    assert d.deliver(build, PAYLOAD, "COMPLETED").outcome == "posted"
    assert waits == [5.0, 5.0]  # 7 s asked, capped by ATVM_POST_MAX_WAIT_SECONDS


@pytest.mark.parametrize("outcome", [TIMEOUT, BAD])
def test_never_resent_after_an_ambiguous_or_permanent_answer(tmp_path, outcome):
    build, d, script, waits = make(tmp_path, outcome, OK)
    result = d.deliver(build, PAYLOAD, "COMPLETED")
    assert result.outcome == outcome.kind and len(script.seen_phases) == 1 and waits == []
    assert result.error_id == outcome.error_id
    assert build.read_delivery()["phase"] == outcome.kind


def test_attempts_exhausted_is_not_sent_and_counted_across_restarts(tmp_path):
    build, d, _, _ = make(tmp_path, REFUSED, REFUSED, attempts=2)
    assert d.deliver(build, PAYLOAD, "COMPLETED").outcome == "not-sent"
    assert build.read_delivery()["attempts"] == 2
    _, again, _, _ = make(tmp_path, OK)
    assert again.deliver(build, PAYLOAD, "COMPLETED").outcome == "posted"
    assert build.read_delivery()["attempts"] == 3


def test_stop_requested_during_backoff_stops_retrying(tmp_path):
    build, d, script, _ = make(tmp_path, REFUSED, OK)
    d.sleep = lambda seconds: False
    assert d.deliver(build, PAYLOAD, "COMPLETED").outcome == "not-sent"
    assert len(script.seen_phases) == 1


def test_cancel_marker_seen_under_the_lock_means_no_request(tmp_path):
    build, d, script, _ = make(tmp_path, OK)
    build.mark_cancelled({"by": "test"})
    assert d.deliver(build, PAYLOAD, "COMPLETED").outcome == "cancelled"
    assert script.seen_phases == [] and not build.delivery_file.exists()


@pytest.mark.parametrize("phase", ["sending", "uncertain"])
def test_an_earlier_attempt_that_may_have_posted_is_not_resent(tmp_path, phase):
    build, d, script, _ = make(tmp_path, OK)
    build.write_delivery({"phase": phase, "attempts": 1})
    result = d.deliver(build, PAYLOAD, "COMPLETED")
    assert result.outcome == "uncertain" and script.seen_phases == []
    assert "at-least-once" in result.detail


def test_at_least_once_resends_after_an_uncertain_attempt(tmp_path):
    build, d, script, _ = make(tmp_path, OK, at_least_once=True)
    build.write_delivery({"phase": "sending", "attempts": 1})
    assert d.deliver(build, PAYLOAD, "COMPLETED").outcome == "posted"
    assert len(script.seen_phases) == 1


def test_posted_marker_settles_everything(tmp_path):
    build, d, script, _ = make(tmp_path, OK, at_least_once=True)
    build.mark_posted({"state": "COMPLETED"})
    build.write_delivery({"phase": "sending"})
    assert d.deliver(build, PAYLOAD, "COMPLETED").outcome == "posted" and script.seen_phases == []


@pytest.mark.parametrize("damage", [b"", b"{\"phase\": \"send", b"\xff\xfe garbage", b"[1, 2]"])
def test_a_damaged_delivery_record_counts_as_uncertain(tmp_path, damage):
    """It may have said "sending": at-most-once must not guess that nothing was sent."""
    build, d, script, _ = make(tmp_path, OK)
    build.delivery_file.write_bytes(damage)
    assert build.read_delivery()["phase"] == "uncertain"
    assert previous(build, at_least_once=False).outcome == "uncertain"
    assert d.deliver(build, PAYLOAD, "COMPLETED").outcome == "uncertain" and script.seen_phases == []


def test_an_unreadable_delivery_record_counts_as_uncertain(tmp_path):
    build, _, _, _ = make(tmp_path)
    build.delivery_file.mkdir()  # EISDIR: unreadable even for root
    assert build.read_delivery()["phase"] == "uncertain"


def test_marker_write_failure_after_ok_never_leads_to_a_resend(tmp_path, monkeypatch):
    build, d, _, _ = make(tmp_path, OK)

    def full(self, info):
        raise StateError("cannot write posted.marker: No space left on device")

    monkeypatch.setattr(statedir.RunDir, "mark_posted", full)
    result = d.deliver(build, PAYLOAD, "COMPLETED")
    assert result.outcome == "posted" and "could not be written" in result.detail
    monkeypatch.undo()
    assert build.read_delivery()["phase"] == "sending"  # so a restart reports uncertain, never resends
    assert previous(build, at_least_once=False).outcome == "uncertain"


def test_intent_write_failure_sends_nothing(tmp_path, monkeypatch):
    build, d, script, _ = make(tmp_path, OK)

    def enospc(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", enospc)
    with pytest.raises(StateError, match="No space left"):
        d.deliver(build, PAYLOAD, "COMPLETED")
    monkeypatch.undo()
    assert script.seen_phases == [] and not build.delivery_file.exists()


def test_an_exception_inside_an_attempt_never_leaves_the_intent_sending(tmp_path):
    """``post`` never raises; should one all the same, the record says what is known (uncertain, and why),
    not "sending", and the watcher goes on to record and exit instead of crashing mid-attempt."""
    build, d, _, _ = make(tmp_path)

    def explode(url, payload, timeout):
        raise OverflowError("timestamp out of range for platform time_t")

    d.post = explode
    result = d.deliver(build, PAYLOAD, "COMPLETED")
    assert result.outcome == "uncertain" and "OverflowError" in result.detail
    assert build.read_delivery()["phase"] == "uncertain"


@pytest.mark.parametrize("url, timeout", [(URL.replace("127.0.0.1:9", "a" * 64 + ".example"), 1.0),
                                          (URL, 1e10), (URL, float("nan"))])
def test_an_attempt_that_sent_nothing_is_not_sent_and_sent_by_the_next_watcher(tmp_path, url, timeout):
    """The real post function: refused before the first byte, so recorded not-sent (never "sending", which a
    restart reports as DELIVERY-UNCERTAIN and never resends), and the next watcher sends it."""
    build = BuildDir(tmp_path / "state" / "b")
    build.ensure()
    d = Deliverer(build, url, timeout, 2, 0.0, 0.0, False, lambda seconds: True)
    result = d.deliver(build, PAYLOAD, "COMPLETED")
    assert result.outcome == "not-sent" and "nothing was sent" in result.detail, result
    assert build.read_delivery()["phase"] == "not-sent"
    assert previous(build, at_least_once=False) is None  # nothing settled: the next attempt is made
    _, again, script, _ = make(tmp_path, OK)
    assert again.deliver(build, PAYLOAD, "COMPLETED").outcome == "posted" and script.seen_phases == ["sending"]


# --- the state folder under a full disk and hostile content ---------------------------------------


def test_full_disk_keeps_the_old_file_whole_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    write_json_atomic(path, {"state": "RUNNING"})
    calls, real_write = [], os.write

    def short_then_full(fd, data):
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[:10]))  # a short write, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", short_then_full)
    with pytest.raises(StateError, match="No space left"):
        write_json_atomic(path, {"state": "COMPLETED", "padding": "x" * 1000})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"state": "RUNNING"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_full_disk_never_leaves_half_an_event_line(tmp_path, monkeypatch):
    build = BuildDir(tmp_path / "b")
    build.append_event({"state": "RUNNING"})
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data[:7])))
    build.append_event({"state": "COMPLETED"})  # best effort: no exception, no partial line
    monkeypatch.undo()
    lines = build.events_file.read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["state"] == "RUNNING"


def test_state_with_a_lone_surrogate_is_written_not_crashed_on(tmp_path):
    """A report title or file name that is not valid UTF-8 reaches state.json as a lone surrogate."""
    path = tmp_path / "state.json"
    write_json_atomic(path, {"failed_titles": ["bad \udcff title"], "ok": "é"})
    assert json.loads(path.read_text())["failed_titles"] == ["bad \udcff title"]
    assert encode_json({"a": "é"}) == '{"a": "é"}'.encode()
    BuildDir(tmp_path / "b").append_event({"detail": "\ud800"})
    assert json.loads((tmp_path / "b" / "events.jsonl").read_text())["detail"] == "\ud800"


def test_lock_files_that_cannot_be_created_are_a_state_error(tmp_path):
    build = BuildDir(tmp_path / "b")
    build.ensure()
    (build.path / "watch.lock").mkdir()
    (build.path / "state.lock").mkdir()
    with pytest.raises(StateError):
        build.acquire_watch_lock()
    with pytest.raises(StateError), build.state_lock(wait=0.1):
        pass


def test_watch_lock_is_held_even_when_the_pid_cannot_be_written(tmp_path, monkeypatch):
    build = BuildDir(tmp_path / "b")
    monkeypatch.setattr(os, "write", lambda fd, data: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    fd = build.acquire_watch_lock()
    monkeypatch.undo()
    try:
        with pytest.raises(statedir.Locked):
            build.acquire_watch_lock()
    finally:
        os.close(fd)


def test_the_runtime_has_no_crash_point_armed_and_reads_no_test_variables():
    """Crash points are armed only by the development wrapper; the runtime ignores the test variables."""
    assert delivery.checkpoint is delivery._no_checkpoint
    assert set(delivery.CHECKPOINTS) == {"before-intent", "intent-written", "response-received", "marker-written"}
    runtime = Path(delivery.__file__).parent
    readers = [p.name for p in runtime.rglob("*.py") if "ATVM_TEST_" in p.read_text(encoding="utf-8")]
    assert readers == []


def test_every_test_named_in_reliability_md_exists():
    """RELIABILITY.md is only worth something while each row names a test that runs."""
    import re
    import subprocess
    import sys

    repo = Path(__file__).resolve().parent.parent
    named = set(re.findall(r"`(tests/test_\w+\.py::\w+(?:\[[^\]`]+\])?)`", (repo / "RELIABILITY.md").read_text()))
    modules = sorted({n.split("::")[0] for n in named})
    listing = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                              *modules], cwd=repo, capture_output=True, text=True, timeout=120).stdout
    collected = set(listing.split())
    functions = {c.split("[")[0] for c in collected}
    missing = [n for n in sorted(named) if n not in (collected if "[" in n else functions)]
    assert len(named) > 80 and missing == []


def test_archives_made_in_the_same_second_get_distinct_names(tmp_path, monkeypatch):
    monkeypatch.setattr(statedir.time, "strftime", lambda fmt, *a: "20261201T000000")
    made = []
    for n in range(3):
        bd = BuildDir(tmp_path / "b")
        bd.write_state({"state": "COMPLETED", "n": n})
        made.append(bd.archive(tmp_path).name)
    assert made == ["b.20261201T000000", "b.20261201T000000-2", "b.20261201T000000-3"]
    assert [json.loads((tmp_path / ".archive" / m / "state.json").read_text())["n"] for m in made] == [0, 1, 2]
