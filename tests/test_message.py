"""The post: every item of the contract's "Message content", small enough never to be split."""

from __future__ import annotations

import json

import pytest

from atvm_dev.receiver import MattermostDouble
from atvm_watcher import mattermost
from atvm_watcher.decide import Counts, Verdict
from atvm_watcher.mattermost import MAX_TITLES, post, runes
from atvm_watcher.message import Context, compose, duration
from atvm_watcher.request import Request

REQ = Request("e2e-redhat9.6-ubuntu24.04-w2k25-fc", True, "tmpl", "family", "live", "plugin", "scope words")
CTX = Context(hostname="controller-1", vm_labels=["rh96-src (RHEL 9.6)"], position=2, of=3,
              log_path="/tmp/.log/b/windows.log", report_path="/r/b/windows", version="atvm-watcher 0.1.0")


def verdict(state="FAILED", titles=("suite a fails",), group="windows"):
    return Verdict(state, "exit-code", "why", group=group, counts=Counts(10, 7, 1, 1, 1), failed_titles=tuple(titles),
                   run_start=1000.0, finished_at=1000.0 + 3725, elapsed=3725.0)


def render(v, req, ctx, **overrides):
    return mattermost.render(compose(v, req, ctx), **overrides)


def fields(payload):
    return {f["title"]: f["value"] for f in payload["attachments"][0]["fields"]}


def test_every_item_of_the_contract_is_in_the_post():
    p = render(verdict(), REQ, CTX)
    f = fields(p)
    assert "FAILED" in p["text"] and REQ.build_name in p["text"] and "sub-run windows (2 of 3)" in p["text"]
    assert f["Sub-run"] == "`windows` 2 of 3"
    assert (f["Template"], f["Config family"], f["Migration style"], f["Integration plugin"]) == (
        "`tmpl`", "`family`", "`live`", "`plugin`")
    assert f["Scope"] == "scope words"
    assert f["VMs of the whole build"] == "rh96-src (RHEL 9.6)"
    assert f["Tests"] == "7 passed, 1 failed, 1 pending, 1 skipped, 0 flaky"
    assert f["Duration"] == "1h 02m 05s"
    assert f["Controller"] == "`controller-1`"
    assert f["Failed tests (1)"] == "- `suite a fails`"
    assert (f["Log"], f["Reports"]) == ("`/tmp/.log/b/windows.log`", "`/r/b/windows`")
    att = p["attachments"][0]
    assert att["color"] == "#d00000" and att["fallback"].startswith("ATVM run FAILED")
    assert "channel" not in p and "title_link" not in att and "HTML report" not in f
    assert att["footer"] == "atvm-watcher 0.1.0 on controller-1"  # no internal rule id
    assert "exit-code" not in json.dumps(p)


@pytest.mark.parametrize("position,of,shown", [(2, 3, "2 of 3"), (2, None, "2"), (3, 2, "3")])
def test_the_position_says_n_of_n_only_when_the_number_of_sub_runs_is_known(position, of, shown):
    p = render(verdict(), REQ, Context(hostname="h", position=position, of=of))
    assert p["text"].endswith(f"sub-run windows ({shown})") and fields(p)["Sub-run"] == f"`windows` {shown}"


def test_the_first_error_line_follows_each_failed_title_capped():
    titles = ("a fails", "b fails", "c fails")
    ctx = Context(hostname="h", errors={"a fails": "AssertionError: expected 1 to equal 2",
                                        "b fails": "E" * 5000})
    value = fields(render(verdict(titles=titles), REQ, ctx))["Failed tests (3)"]
    a, b, c = value.splitlines()
    assert a == "- `a fails`: AssertionError: expected 1 to equal 2"
    assert b.startswith("- `b fails`: EEE") and len(b) < mattermost.MAX_ERROR_CHARS + 20 and b.endswith("…")
    assert c == "- `c fails`"  # no error known: the title alone


def test_flaky_tests_are_named_and_counted_also_in_a_completed_post():
    flaky = [f"flaky {i}" for i in range(mattermost.MAX_FLAKY + 2)]
    p = render(verdict("COMPLETED", (), None), REQ, Context(hostname="h", flaky=flaky, flaky_count=len(flaky) + 3))
    f = fields(p)
    assert f["Tests"].endswith(f", {len(flaky) + 3} flaky") and p["attachments"][0]["color"] == "#2eb886"
    shown = f[f"Flaky: passed on a retry ({len(flaky) + 3})"].splitlines()
    assert shown[0] == "- `flaky 0`" and len(shown) == mattermost.MAX_FLAKY + 1 and shown[-1] == "- and 5 more"
    assert "Flaky" not in json.dumps(render(verdict("COMPLETED", (), None), REQ, Context(hostname="h")))


def test_the_html_report_link_is_the_title_link_and_a_field():
    url = "https://ci.example.invalid/atvm/b/windows/index.html"
    p = render(verdict(), REQ, Context(hostname="h", report_url=url))
    assert p["attachments"][0]["title_link"] == url and fields(p)["HTML report"] == f"[open the report]({url})"
    for bad in ("javascript:alert(1)", "https://x/a b", "https://x/a)(b"):
        q = render(verdict(), REQ, Context(hostname="h", report_url=bad))
        assert "title_link" not in q["attachments"][0] and "HTML report" not in fields(q)


def test_a_sub_runs_own_vms_are_named_as_such():
    p = render(verdict(), REQ, Context(hostname="h", vm_labels=["w2k25-src"], vm_group="windows"))
    assert fields(p)["VMs of sub-run windows"] == "w2k25-src"


def test_completed_is_green_and_plain_run_has_no_subrun():
    p = render(verdict("COMPLETED", (), None), REQ, Context(hostname="h"), channel="town-square")
    assert p["attachments"][0]["color"] == "#2eb886" and "Sub-run" not in fields(p)
    assert p["channel"] == "town-square" and "Failed tests" not in json.dumps(p)


def test_titles_are_capped_with_and_n_more():
    titles = [f"test {i}" for i in range(MAX_TITLES + 7)]
    value = fields(render(verdict(titles=titles), REQ, CTX))[f"Failed tests ({len(titles)})"]
    assert value.count("\n- `test") == MAX_TITLES - 1 and value.endswith("- and 7 more")


def test_mentions_and_markup_are_defused():
    req = Request("b", False, scope_description="@channel please look @all", template="a`b")
    p = render(verdict(titles=["@here broke"]), req, Context(hostname="h", vm_labels=["@all vm"]))
    text = json.dumps(p, ensure_ascii=False)
    for mention in ("@channel", "@all", "@here"):
        assert mention not in text
    assert fields(p)["Template"] == "`a'b`"


def test_inventory_problem_is_said_in_the_vm_line():
    p = render(verdict(), REQ, Context(hostname="h", inventory_problem="vm-inventory.md does not exist"))
    assert "inventory could not be read" in fields(p)["VMs of the whole build"]


@pytest.mark.parametrize("seconds,text", [(None, "unknown"), (-1, "unknown"), (59.6, "1m 00s"), (3600, "1h 00m 00s")])
def test_duration(seconds, text):
    assert duration(seconds) == text


def test_worst_case_post_stays_far_under_the_split_limit_and_the_server_makes_one_post():
    huge = "x" * 100_000
    req = Request("b" * 200, True, huge, huge, huge, huge, huge)
    v = verdict(titles=[huge] * 5000)
    p = render(v, req, Context(hostname=huge, vm_labels=[huge] * 300, inventory_problem=huge, position=9,
                               log_path="/" + huge, report_path="/" + huge, report_url="https://x/" + huge,
                               errors={huge: huge}, flaky=[huge] * 500, flaky_count=10**6, version=huge))
    assert runes(p) < 12_000  # bounded by construction, well under the 16383-rune split limit
    with MattermostDouble() as mm:
        assert post(mm.url, p, timeout=5).kind == "posted"
        assert len(mm.posts) == 1


# --- the size limits, checked on every payload before it is sent -------------------------------------


def oversized(titles: int = 3000) -> dict:
    p = render(verdict(), REQ, CTX)
    failed = "\n".join(f"- `spec {i} fails with a long enough title to add up`" for i in range(titles))
    p["attachments"][0]["fields"][-1]["value"] = failed  # as a payload stored by an uncapped renderer would be
    return p


def test_an_oversized_payload_loses_the_end_of_its_failed_list_and_nothing_else():
    p = oversized()
    assert runes(p) > mattermost.MAX_RUNES
    fitted = mattermost.fit(p)
    assert mattermost.fits(fitted) and runes(fitted) < mattermost.MAX_RUNES
    before, after = fields(p), fields(fitted)
    failed = "Failed tests (1)"
    assert {k: v for k, v in after.items() if k != failed} == {k: v for k, v in before.items() if k != failed}
    lines = after[failed].splitlines()
    assert lines[-1].endswith(mattermost.CUT_NOTE.strip()) and len(lines) > 100
    assert all(line.endswith("to add up`") for line in lines[:-1])  # whole lines kept: still a list
    assert p == oversized()  # the caller's payload is left as it was
    assert mattermost.fit(fitted) is fitted  # what fits is sent as it is


def test_an_oversized_payload_is_sent_as_one_post_never_split():
    with MattermostDouble() as mm:
        assert post(mm.url, oversized(), timeout=5).kind == "posted"
        assert post(mm.url, {"text": "y" * 40_000}, timeout=5).kind == "posted"
        assert len(mm.posts) == 2 and len(mm.requests) == 2
    assert len(mm.posts[1]["text"]) < mattermost.MAX_RUNES


def test_a_body_over_the_byte_limit_keeps_only_its_text():
    p = {"text": "x", "channel": "c", "props": {"card": "y" * mattermost.MAX_PAYLOAD_BYTES}}
    assert mattermost.fit(p) == {"text": "x", "channel": "c"}
