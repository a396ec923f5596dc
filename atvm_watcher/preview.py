"""A picture of a post: the webhook payload as an HTML page laid out the way Mattermost shows a
message attachment (``watch --dry-run --preview FILE``, ``demo --preview DIR``).

Mattermost's layout, as far as a post needs it: the bot's name and the post's ``text``; below it the
attachment with a colour bar down its left edge, its ``title`` (a link when ``title_link`` is set),
its ``fields`` (two ``short`` fields side by side, a long one on a row of its own, each a bold title
over its value), its ``text`` and its grey ``footer``. Values are Markdown there; the subset the
watcher writes is rendered here: code spans, ``[text](http...)`` links, ``- `` list lines, line
breaks. Everything else is text: every string from the payload is escaped, and only http(s) links
become links, so the page cannot run or load anything a payload holds.
"""

from __future__ import annotations

import html
import re
from typing import Any, Dict, List, Sequence

EMOJI = {":white_check_mark:": "\u2705", ":x:": "\u274c", ":information_source:": "\u2139\ufe0f"}
_INLINE = re.compile(r"`([^`\n]*)`|\[([^\]\n]+)\]\((https?://[^\s()<>`]+)\)")
_COLOR = re.compile(r"#[0-9A-Fa-f]{3,8}")

STYLE = """
body { font-family: "Open Sans", "Segoe UI", Arial, sans-serif; font-size: 14px; color: #3d3c40;
       background: #fff; margin: 0; padding: 16px 20px; }
.post { display: flex; gap: 10px; margin-bottom: 22px; max-width: 840px; }
.avatar { width: 36px; height: 36px; border-radius: 50%; background: #1e325c; color: #fff;
          font-weight: 600; display: flex; align-items: center; justify-content: center; flex: none; }
.body { flex: 1; min-width: 0; }
.header { margin-bottom: 2px; } .name { font-weight: 600; }
.bot { font-size: 10px; font-weight: 600; background: #e8e8ea; border-radius: 2px; padding: 1px 4px; margin-left: 4px; }
.time { color: #8b8a8f; font-size: 12px; margin-left: 6px; }
.text { margin: 2px 0 6px; }
.attachment { display: flex; margin-top: 4px; border: 1px solid #e2e2e4; border-left: none; border-radius: 4px; }
.bar { width: 4px; flex: none; border-radius: 4px 0 0 4px; }
.content { padding: 10px 12px; flex: 1; min-width: 0; }
.title { font-weight: 600; font-size: 14px; margin-bottom: 6px; } .title a { color: #2389d7; text-decoration: none; }
.fields { display: flex; flex-wrap: wrap; }
.field { box-sizing: border-box; padding: 4px 12px 6px 0; width: 100%; }
.field.short { width: 50%; }
.field-title { font-weight: 600; margin-bottom: 2px; }
.field-value { overflow-wrap: anywhere; }
code { font-family: Menlo, Consolas, monospace; font-size: 12px; background: #f2f2f3; color: #c7254e;
       border: 1px solid #e2e2e4; border-radius: 3px; padding: 0 3px; }
ul { margin: 0; padding-left: 18px; } a { color: #2389d7; }
.footer { color: #8b8a8f; font-size: 12px; margin-top: 6px; }
.note { color: #8b8a8f; font-style: italic; }
"""


def _inline(text: str) -> str:
    """One line of Markdown (the subset above), escaped."""
    out: List[str] = []
    at = 0
    for m in _INLINE.finditer(text):
        out.append(html.escape(text[at : m.start()]))
        if m.group(1) is not None:
            out.append(f"<code>{html.escape(m.group(1))}</code>")
        else:
            out.append(f'<a href="{html.escape(m.group(3), quote=True)}">{html.escape(m.group(2))}</a>')
        at = m.end()
    out.append(html.escape(text[at:]))
    return "".join(out)


def markdown(text: str) -> str:
    """A field value: lines, of which ``- `` lines form a list."""
    out: List[str] = []
    items: List[str] = []
    for line in str(text).split("\n"):
        if line.startswith("- "):
            items.append(f"<li>{_inline(line[2:])}</li>")
            continue
        if items:
            out.append("<ul>" + "".join(items) + "</ul>")
            items = []
        out.append(_inline(line) + "<br>")
    if items:
        out.append("<ul>" + "".join(items) + "</ul>")
    joined = "".join(out)
    return joined[: -len("<br>")] if joined.endswith("<br>") else joined


def _emoji(text: str) -> str:
    for code, char in EMOJI.items():
        text = text.replace(code, char)
    return text


def _field(f: Any) -> str:
    if not isinstance(f, dict):
        return ""
    short = " short" if f.get("short") is True else ""
    return (f'<div class="field{short}"><div class="field-title">{html.escape(str(f.get("title", "")))}</div>'
            f'<div class="field-value">{markdown(str(f.get("value", "")))}</div></div>')


def _attachment(att: Any) -> str:
    if not isinstance(att, dict):
        return ""
    color = str(att.get("color", ""))
    color = color if _COLOR.fullmatch(color) else "#808080"
    title = html.escape(str(att.get("title", "")))
    link = str(att.get("title_link", ""))
    if title and re.match(r"https?://[^\s()<>`]+$", link):
        title = f'<a href="{html.escape(link, quote=True)}">{title}</a>'
    parts = [f'<div class="title">{title}</div>' if title else ""]
    if att.get("text"):
        parts.append(f'<div class="att-text">{markdown(str(att["text"]))}</div>')
    fields = att.get("fields") if isinstance(att.get("fields"), list) else []
    parts.append('<div class="fields">' + "".join(_field(f) for f in fields) + "</div>")
    if att.get("footer"):
        parts.append(f'<div class="footer">{html.escape(str(att["footer"]))}</div>')
    return (f'<div class="attachment"><div class="bar" style="background:{color}"></div>'
            f'<div class="content">{"".join(parts)}</div></div>')


def post_html(payload: Dict[str, Any]) -> str:
    """One post as Mattermost lays it out (without the page around it)."""
    name = html.escape(str(payload.get("username") or "atvm-watcher"))
    channel = payload.get("channel")
    where = f'<span class="time">to {html.escape(str(channel))}</span>' if channel else ""
    atts = payload.get("attachments") if isinstance(payload.get("attachments"), list) else []
    return (f'<div class="post"><div class="avatar">A</div><div class="body">'
            f'<div class="header"><span class="name">{name}</span><span class="bot">BOT</span>{where}</div>'
            f'<div class="text">{_inline(_emoji(str(payload.get("text", ""))))}</div>'
            + "".join(_attachment(a) for a in atts) + "</div></div>")


def page(payloads: Sequence[Dict[str, Any]], heading: str = "", note: str = "") -> str:
    """A whole HTML page of posts, in order; ``note`` (escaped) says why there is none."""
    body = "".join(post_html(p) for p in payloads if isinstance(p, dict))
    if note:
        body += f'<p class="note">{html.escape(note)}</p>'
    title = html.escape(heading or "atvm-watcher post preview")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            f'<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; style-src \'unsafe-inline\'">'
            f"<style>{STYLE}</style></head><body>{body}</body></html>\n")
