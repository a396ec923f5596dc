"""The picture of a post: ``watch --dry-run --preview`` writes the payload as an HTML page laid out the
way Mattermost shows a message attachment, escaping everything (no browser needed to check it; the
README's PNGs are made from the same pages by tools/render-demo-posts.sh)."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from typing import Dict, List, Optional, Tuple

from atvm_watcher import preview


class Tree(HTMLParser):
    """Every element as (tag, attributes, text directly inside it), and the page's script-like tags."""

    def __init__(self, text: str):
        super().__init__()
        self.elements: List[Tuple[str, Dict[str, Optional[str]], List[str]]] = []
        self.stack: List[int] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs), []))
        if tag not in ("br", "meta"):
            self.stack.append(len(self.elements) - 1)

    def handle_endtag(self, tag):
        if self.stack:
            self.stack.pop()

    def handle_data(self, data):
        if self.stack:
            self.elements[self.stack[-1]][2].append(data)

    def by_class(self, name: str) -> List[Tuple[str, Dict[str, Optional[str]], List[str]]]:
        return [e for e in self.elements if name in (e[1].get("class") or "").split()]

    def texts(self, name: str) -> List[str]:
        return ["".join(e[2]) for e in self.by_class(name)]


def dry_run_preview(world, build: str, *args: str) -> Tuple[str, Tree]:
    out = world.root / "post.html"
    res = world.cli("watch", "--build-name", build, "--dry-run", "--preview", str(out), *args)
    assert res.returncode == 0, res.stderr
    assert f"laid out as Mattermost shows them: {out}" in res.stdout
    return res.stdout, Tree(out.read_text(encoding="utf-8"))


def test_a_dry_run_writes_each_post_as_mattermost_lays_it_out(world):
    build = "e2e-preview-redhat9.6-w2k25"
    world.launch(build, "--group", "linux:pass", "--group", "windows:fail", "--step-seconds", "0.02").wait(20)
    _, page = dry_run_preview(world, build, "--categorize", "--groups", "2", "--template", "tmpl-a")
    assert len(page.by_class("post")) == 2 and len(page.by_class("attachment")) == 2
    bars = [e[1]["style"] for e in page.by_class("bar")]
    assert bars == ["background:#2eb886", "background:#d00000"]  # the colour bar: green, then red
    titles = page.texts("title")
    assert titles[0].endswith("sub-run linux (1 of 2)") and titles[1].endswith("sub-run windows (2 of 2)")
    fields = page.by_class("field")
    short = [e for e in fields if "short" in e[1]["class"].split()]
    assert short and len(short) < len(fields)  # short fields pair up in two columns, long ones take a row
    assert "Build" in page.texts("field-title") and "Failed tests (1)" in page.texts("field-title")
    assert all(t.endswith(" on " + t.split(" on ")[-1]) for t in page.texts("footer"))
    assert [e for e in page.elements if e[0] == "code"]  # identifiers as code spans
    assert world.receiver.requests == [] and not world.build_dir(build).exists()  # a dry run: nothing else


def test_everything_in_the_page_is_escaped(world):
    build = "e2e-preview-escape"
    world.launch(build, "--outcome", "fail", "--step-seconds", "0.02").wait(20)
    hostile = '<script>alert(1)</script> [x](javascript:alert(2)) <img src=x onerror=alert(3)> "q" &amp;'
    _, page = dry_run_preview(world, build, "--scope-description", hostile, "--template", "<b>t</b>")
    tags = {e[0] for e in page.elements}
    assert not tags & {"script", "img", "b", "iframe"}
    assert not [e for e in page.elements if e[0] == "a" and not (e[1].get("href") or "").startswith("http")]
    scope = [e for e in page.by_class("field-value") if "alert(1)" in "".join(e[2])]
    assert scope and "<script>alert(1)</script>" in "".join(scope[0][2])  # shown as text, as written


def test_a_run_that_would_not_be_posted_says_so(world):
    build = "e2e-preview-killed"
    run = world.layout(build).run()
    run.log.write_text("  (Run Starting)\n")
    run.exit.write_text("137\n")
    stdout, page = dry_run_preview(world, build)
    assert page.by_class("post") == [] and "Nothing would be posted" in "".join(page.texts("note"))
    assert "0 post(s)" in stdout


def test_preview_goes_with_dry_run_only(world):
    res = world.cli("watch", "--build-name", "b1", "--preview", str(world.root / "x.html"))
    assert res.returncode == 2 and "--preview goes with --dry-run" in res.stderr
    assert not (world.root / "x.html").exists()


def test_only_http_links_and_only_colours_pass():
    payload = {"text": ":x: t", "attachments": [{
        "color": "red;background:url(http://x)", "title": "T", "title_link": "javascript:alert(1)",
        "fields": [{"title": "L", "value": "[ok](https://ci.example.invalid/a) [no](javascript:x) `c`\n- one\n- two",
                    "short": False}, "not a field"], "footer": "f"}]}
    page = Tree(preview.page([payload]))
    links = [e[1]["href"] for e in page.elements if e[0] == "a"]
    assert links == ["https://ci.example.invalid/a"]
    assert page.by_class("bar")[0][1]["style"] == "background:#808080"
    assert [e[0] for e in page.elements].count("li") == 2
    assert "\u274c" in "".join(page.texts("text"))  # the icon's short code as Mattermost shows it
    assert json.dumps(payload)  # the payload itself is left as it was
