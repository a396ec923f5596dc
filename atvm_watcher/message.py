"""What a post says: a pure function of the verdict, the request and a few facts of the controller.

Plain text only, whatever it is posted to: how it looks (markup, colours, mention defusing) and how
big it may get is ``mattermost.py``'s. A new item in the post is a new ``Field`` here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence, Tuple

from .decide import Verdict
from .request import Request


@dataclass(frozen=True)
class Context:
    """Facts about where and how the run happened that are not in the verdict."""

    hostname: str
    vm_labels: Sequence[str] = ()
    inventory_problem: Optional[str] = None
    position: Optional[int] = None  # 1-based sub-run position, categorized runs only
    of: Optional[int] = None  # how many sub-runs the run has, when that is known (README.md, "Message")
    vm_group: str = ""  # the sub-run the VMs were narrowed to by the inventory; "" for the whole build's
    log_path: str = ""  # the run's (or sub-run's) log on the controller
    report_path: str = ""  # its report folder
    report_url: str = ""  # its HTML report (ATVM_REPORT_URL), when set
    errors: Mapping[str, str] = field(default_factory=dict)  # failed test title -> first line of its error
    flaky: Sequence[str] = ()  # titles of tests that failed an attempt, then passed on a retry (capped)
    flaky_count: int = 0  # every such test, also those past the cap
    version: str = ""  # e.g. "atvm-watcher 0.1.0 (bundle v0.1.0-3-gabc)"


@dataclass(frozen=True)
class Field:
    """One labelled item. ``name`` is an identifier taken as it is (a build, a template, a host, a path),
    shown apart from the prose of ``value``, which follows it; both empty reads as "-"."""

    title: str
    value: str = ""
    short: bool = True
    name: str = ""


@dataclass(frozen=True)
class Message:
    state: str  # COMPLETED | FAILED (TEST for check --send-test)
    subject: str  # one line naming the state, the build and the sub-run
    summary: str  # the subject with the counts and the host: for notifications and plain-text readers
    fields: Tuple[Field, ...]
    failed_titles: Tuple[str, ...]  # every one; how many are shown is up to the renderer
    footer: str
    failed_errors: Tuple[str, ...] = ()  # the first line of each failed test's error, "" when none is known
    flaky_titles: Tuple[str, ...] = ()
    flaky_count: int = 0
    link: str = ""  # the HTML report


def duration(seconds: Optional[float]) -> str:
    if seconds is None or seconds < 0:
        return "unknown"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h {m:02d}m {s:02d}s" if h else f"{m}m {s:02d}s"


def counts_line(v: Verdict, flaky: int = 0) -> str:
    c = v.counts
    return f"{c.passed} passed, {c.failed} failed, {c.pending} pending, {c.skipped} skipped, {flaky} flaky"


def position_text(ctx: Context) -> str:
    """``2 of 3`` when the number of sub-runs is known, else ``2``."""
    if ctx.position is None:
        return ""
    return f"{ctx.position} of {ctx.of}" if ctx.of and ctx.of >= ctx.position else str(ctx.position)


def subject(verdict: Verdict, build: str, ctx: Context) -> str:
    where = f", sub-run {verdict.group} ({position_text(ctx)})" if verdict.group else ""
    return f"ATVM run {verdict.state}: {build}{where}"


def vms_field(ctx: Context) -> Field:
    vms = ", ".join(ctx.vm_labels)
    if ctx.inventory_problem:
        vms = (vms + "; " if vms else "") + f"inventory could not be read fully: {ctx.inventory_problem}"
    title = f"VMs of sub-run {ctx.vm_group}" if ctx.vm_group else "VMs of the whole build"
    return Field(title, vms or "none matched in the inventory", short=False)


def fields_for(verdict: Verdict, request: Request, ctx: Context) -> Tuple[Field, ...]:
    rows = [Field("Build", name=request.build_name)]
    if verdict.group:
        rows.append(Field("Sub-run", position_text(ctx), name=verdict.group))
    rows += [
        Field("Template", name=request.template),
        Field("Config family", name=request.config_family),
        Field("Migration style", name=request.migration_style),
        Field("Integration plugin", name=request.integration_plugin),
        Field("Scope", request.scope_description, short=False),
        vms_field(ctx),
        Field("Tests", counts_line(verdict, ctx.flaky_count)),
        Field("Duration", duration(verdict.elapsed)),
        Field("Controller", name=ctx.hostname),
    ]
    rows += [Field(title, name=path, short=False) for title, path in (("Log", ctx.log_path),
                                                                     ("Reports", ctx.report_path)) if path]
    return tuple(rows)


def footer(ctx: Context) -> str:
    return f"{ctx.version or 'atvm-watcher'} on {ctx.hostname}"


def compose(verdict: Verdict, request: Request, ctx: Context) -> Message:
    """What the post for one COMPLETED or FAILED run or sub-run says."""
    head = subject(verdict, request.build_name, ctx)
    titles = tuple(verdict.failed_titles)
    return Message(
        state=verdict.state,
        subject=head,
        summary=f"{head} - {counts_line(verdict, ctx.flaky_count)} - on {ctx.hostname}",
        fields=fields_for(verdict, request, ctx),
        failed_titles=titles,
        footer=footer(ctx),
        failed_errors=tuple(ctx.errors.get(t, "") for t in titles),
        flaky_titles=tuple(ctx.flaky),
        flaky_count=ctx.flaky_count,
        link=ctx.report_url,
    )


def probe_message(hostname: str, version: str) -> Message:
    """``check --send-test``: clearly a test, so nobody in the channel takes it for a run's result."""
    head = f"ATVM watcher TEST post from {hostname}: no run is reported, nothing to do"
    return Message(
        state="TEST",
        subject=head,
        summary=head,
        fields=(Field("Controller", name=hostname),
                Field("Why", "an operator ran `check --send-test`: the webhook and the channel work", short=False)),
        failed_titles=(),
        footer=f"{version} on {hostname}",
    )
