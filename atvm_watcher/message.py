"""What a post says: a pure function of the verdict, the request and a few facts of the controller.

The payload stays far below Mattermost's 16383-rune message limit (so the server never splits
it, and a 500 can be read as "not posted"): every value is capped, failed titles are capped in
number and length. Values typed by people have '@' defused so a scope description can never
ping a whole channel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

from .decide import Verdict
from .request import Request

COLORS = {"COMPLETED": "#2eb886", "FAILED": "#d00000"}
ICONS = {"COMPLETED": ":white_check_mark:", "FAILED": ":x:"}
MAX_TITLES = 10
MAX_TITLE_CHARS = 200
MAX_VALUE_CHARS = 1000


@dataclass(frozen=True)
class Context:
    """Facts about where and how the run happened that are not in the verdict."""

    hostname: str
    vm_labels: Sequence[str] = ()
    inventory_problem: Optional[str] = None
    position: Optional[int] = None  # 1-based sub-run position, categorized runs only
    channel: str = ""
    username: str = ""


def defuse(text: str, limit: int = MAX_VALUE_CHARS) -> str:
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace("@", "@\u200b")


def code(text: str, limit: int = MAX_VALUE_CHARS) -> str:
    return "`" + defuse(text, limit).replace("`", "'") + "`" if text else "-"


def duration(seconds: Optional[float]) -> str:
    if seconds is None or seconds < 0:
        return "unknown"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h {m:02d}m {s:02d}s" if h else f"{m}m {s:02d}s"


def counts_line(v: Verdict) -> str:
    c = v.counts
    return f"{c.passed} passed, {c.failed} failed, {c.pending} pending, {c.skipped} skipped"


def failed_list(titles: Sequence[str]) -> str:
    shown = [f"- {code(t, MAX_TITLE_CHARS)}" for t in titles[:MAX_TITLES]]
    if len(titles) > MAX_TITLES:
        shown.append(f"- and {len(titles) - MAX_TITLES} more")
    return "\n".join(shown)


def subject(verdict: Verdict, build: str, ctx: Context) -> str:
    where = f" sub-run {verdict.group} (#{ctx.position})" if verdict.group else ""
    return f"ATVM run {verdict.state}: {defuse(build, 300)}{where}"


def fields_for(verdict: Verdict, request: Request, ctx: Context) -> List[Dict[str, Any]]:
    def field(title: str, value: str, short: bool = True) -> Dict[str, Any]:
        return {"title": title, "value": value, "short": short}

    vms = ", ".join(defuse(v, 200) for v in ctx.vm_labels)
    if ctx.inventory_problem:
        vms = (vms + "; " if vms else "") + f"inventory could not be read fully: {defuse(ctx.inventory_problem, 300)}"
    vms = vms or "none matched in the inventory"
    rows = [field("Build", code(request.build_name, 300))]
    if verdict.group:
        rows.append(field("Sub-run", f"{code(verdict.group, 200)} (#{ctx.position})"))
    rows += [
        field("Template", code(request.template)),
        field("Config family", code(request.config_family)),
        field("Migration style", code(request.migration_style)),
        field("Integration plugin", code(request.integration_plugin)),
        field("Scope", defuse(request.scope_description) or "-", short=False),
        field("VMs under test", vms[:MAX_VALUE_CHARS], short=False),
        field("Tests", counts_line(verdict)),
        field("Duration", duration(verdict.elapsed)),
        field("Controller", code(ctx.hostname, 200)),
    ]
    if verdict.failed_titles:
        rows.append(field(f"Failed tests ({len(verdict.failed_titles)})", failed_list(verdict.failed_titles),
                          short=False))
    return rows


def render(verdict: Verdict, request: Request, ctx: Context) -> Dict[str, Any]:
    """The webhook payload for one COMPLETED or FAILED run or sub-run."""
    head = subject(verdict, request.build_name, ctx)
    fallback = f"{head} - {counts_line(verdict)} - on {ctx.hostname[:200]}"
    payload: Dict[str, Any] = {
        "text": f"{ICONS.get(verdict.state, '')} {head}".strip(),
        "attachments": [
            {
                "fallback": fallback,
                "color": COLORS.get(verdict.state, "#808080"),
                "title": head,
                "fields": fields_for(verdict, request, ctx),
                "footer": f"atvm-watcher on {ctx.hostname[:100]} - rule {verdict.rule}",
            }
        ],
    }
    if ctx.channel:
        payload["channel"] = ctx.channel
    if ctx.username:
        payload["username"] = ctx.username
    return payload


def runes(payload: Dict[str, Any]) -> int:
    """Characters the server counts against its message limit (text and attachment strings)."""
    total = len(payload.get("text", ""))
    for att in payload.get("attachments", []):
        total += sum(len(str(att.get(k, ""))) for k in ("fallback", "title", "text", "footer", "pretext"))
        total += sum(len(f["title"]) + len(f["value"]) for f in att.get("fields", []))
    return total
