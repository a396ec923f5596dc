"""What a post says: a pure function of the verdict, the request and a few facts of the controller.

Plain text only, whatever it is posted to: how it looks (markup, colours, mention defusing) and how
big it may get is ``mattermost.py``'s. A new item in the post is a new ``Field`` here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

from .decide import Verdict
from .request import Request


@dataclass(frozen=True)
class Context:
    """Facts about where and how the run happened that are not in the verdict."""

    hostname: str
    vm_labels: Sequence[str] = ()
    inventory_problem: Optional[str] = None
    position: Optional[int] = None  # 1-based sub-run position, categorized runs only


@dataclass(frozen=True)
class Field:
    """One labelled item. ``name`` is an identifier taken as it is (a build, a template, a host),
    shown apart from the prose of ``value``, which follows it; both empty reads as "-"."""

    title: str
    value: str = ""
    short: bool = True
    name: str = ""


@dataclass(frozen=True)
class Message:
    state: str  # COMPLETED | FAILED
    subject: str  # one line naming the state, the build and the sub-run
    summary: str  # the subject with the counts and the host: for notifications and plain-text readers
    fields: Tuple[Field, ...]
    failed_titles: Tuple[str, ...]  # every one; how many are shown is up to the renderer
    footer: str


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


def subject(verdict: Verdict, build: str, ctx: Context) -> str:
    where = f" sub-run {verdict.group} (#{ctx.position})" if verdict.group else ""
    return f"ATVM run {verdict.state}: {build}{where}"


def vms_line(ctx: Context) -> str:
    vms = ", ".join(ctx.vm_labels)
    if ctx.inventory_problem:
        vms = (vms + "; " if vms else "") + f"inventory could not be read fully: {ctx.inventory_problem}"
    return vms or "none matched in the inventory"


def fields_for(verdict: Verdict, request: Request, ctx: Context) -> Tuple[Field, ...]:
    rows = [Field("Build", name=request.build_name)]
    if verdict.group:
        rows.append(Field("Sub-run", f"(#{ctx.position})", name=verdict.group))
    rows += [
        Field("Template", name=request.template),
        Field("Config family", name=request.config_family),
        Field("Migration style", name=request.migration_style),
        Field("Integration plugin", name=request.integration_plugin),
        Field("Scope", request.scope_description, short=False),
        Field("VMs under test", vms_line(ctx), short=False),
        Field("Tests", counts_line(verdict)),
        Field("Duration", duration(verdict.elapsed)),
        Field("Controller", name=ctx.hostname),
    ]
    return tuple(rows)


def compose(verdict: Verdict, request: Request, ctx: Context) -> Message:
    """What the post for one COMPLETED or FAILED run or sub-run says."""
    head = subject(verdict, request.build_name, ctx)
    return Message(
        state=verdict.state,
        subject=head,
        summary=f"{head} - {counts_line(verdict)} - on {ctx.hostname}",
        fields=fields_for(verdict, request, ctx),
        failed_titles=tuple(verdict.failed_titles),
        footer=f"atvm-watcher on {ctx.hostname} - rule {verdict.rule}",
    )
