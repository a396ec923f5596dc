"""The post: every item of the contract's "Message content", small enough never to be split."""

from __future__ import annotations

import json

import pytest

from atvm_dev.receiver import MattermostDouble
from atvm_watcher.decide import Counts, Verdict
from atvm_watcher.message import MAX_TITLES, Context, duration, render, runes
from atvm_watcher.request import Request
from atvm_watcher.webhook import post

REQ = Request("e2e-redhat9.6-ubuntu24.04-w2k25-fc", True, "tmpl", "family", "live", "plugin", "scope words")
CTX = Context(hostname="controller-1", vm_labels=["rh96-src (RHEL 9.6)"], position=2)


def verdict(state="FAILED", titles=("suite a fails",), group="windows"):
    return Verdict(state, "exit-code", "why", group=group, counts=Counts(10, 7, 1, 1, 1), failed_titles=tuple(titles),
                   run_start=1000.0, finished_at=1000.0 + 3725, elapsed=3725.0)


def fields(payload):
    return {f["title"]: f["value"] for f in payload["attachments"][0]["fields"]}


def test_every_item_of_the_contract_is_in_the_post():
    p = render(verdict(), REQ, CTX)
    f = fields(p)
    assert "FAILED" in p["text"] and REQ.build_name in p["text"] and "windows (#2)" in p["text"]
    assert f["Sub-run"] == "`windows` (#2)"
    assert (f["Template"], f["Config family"], f["Migration style"], f["Integration plugin"]) == (
        "`tmpl`", "`family`", "`live`", "`plugin`")
    assert f["Scope"] == "scope words"
    assert f["VMs under test"] == "rh96-src (RHEL 9.6)"
    assert f["Tests"] == "7 passed, 1 failed, 1 pending, 1 skipped"
    assert f["Duration"] == "1h 02m 05s"
    assert f["Controller"] == "`controller-1`"
    assert f["Failed tests (1)"] == "- `suite a fails`"
    att = p["attachments"][0]
    assert att["color"] == "#d00000" and att["fallback"].startswith("ATVM run FAILED")
    assert "channel" not in p


def test_completed_is_green_and_plain_run_has_no_subrun():
    p = render(verdict("COMPLETED", (), None), REQ, Context(hostname="h", channel="town-square"))
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
    assert "inventory could not be read" in fields(p)["VMs under test"]


@pytest.mark.parametrize("seconds,text", [(None, "unknown"), (-1, "unknown"), (59.6, "1m 00s"), (3600, "1h 00m 00s")])
def test_duration(seconds, text):
    assert duration(seconds) == text


def test_worst_case_post_stays_far_under_the_split_limit_and_the_server_makes_one_post():
    huge = "x" * 100_000
    req = Request("b" * 200, True, huge, huge, huge, huge, huge)
    v = verdict(titles=[huge] * 5000)
    p = render(v, req, Context(hostname=huge, vm_labels=[huge] * 300, inventory_problem=huge, position=9))
    assert runes(p) < 12_000  # bounded by construction, well under the 16383-rune split limit
    with MattermostDouble() as mm:
        assert post(mm.url, p, timeout=5).kind == "posted"
        assert len(mm.posts) == 1
