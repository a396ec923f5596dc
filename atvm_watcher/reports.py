"""Read one test report (mochawesome JSON or JUnit XML) into counts the watcher can decide on.

Report files are written in place while a run goes on, so a half-written file must come back as
"incomplete" (not yet), never as a crash and never as a pass. Nothing here raises on any bytes.
"""

from __future__ import annotations

import json
import re
import unicodedata
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Tuple

from .vocab import ReportResult

MAX_REPORT_BYTES = 32 * 1024 * 1024
MAX_TITLE_CHARS = 300
MAX_ERROR_CHARS = 300  # the first line of a failed test's error, as kept
# A count above this is nonsense from a broken writer; capping keeps messages and arithmetic small.
MAX_COUNT = 10**9

STATUSES = ("ok", "incomplete", "invalid", "not-a-report")


@dataclass(frozen=True)
class _Counts:
    tests: int = 0
    passed: int = 0
    failed: int = 0
    pending: int = 0
    skipped: int = 0
    failed_titles: Tuple[str, ...] = ()
    failed_errors: Tuple[str, ...] = ()


class _Refused(Exception):
    """Carries a non-ok status and its one-line detail out of the parsing helpers."""

    def __init__(self, status: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def parse_report(path: str, data: bytes) -> ReportResult:
    kind = _kind_of(path)
    if kind == "unknown":
        return ReportResult(path, kind, "not-a-report", "not a .json or .xml file")
    try:
        counts = _parse(kind, bytes(data))
    except _Refused as refused:
        return ReportResult(path, kind, refused.status, refused.detail)
    except Exception as exc:  # noqa: BLE001 - "never a crash" is the contract for whatever a run leaves
        return ReportResult(path, kind, "invalid", f"cannot read report ({type(exc).__name__})")
    return ReportResult(path, kind, "ok", "", counts.tests, counts.passed, counts.failed,
                        counts.pending, counts.skipped, counts.failed_titles, counts.failed_errors)


def _kind_of(path: str) -> str:
    lower = str(path).lower()
    if lower.endswith(".json"):
        return "mochawesome"
    if lower.endswith(".xml"):
        return "junit"
    return "unknown"


def _parse(kind: str, data: bytes) -> _Counts:
    if len(data) > MAX_REPORT_BYTES:
        raise _Refused("invalid", f"report is larger than {MAX_REPORT_BYTES // (1024 * 1024)} MiB")
    if not data.strip():
        raise _Refused("incomplete", "file is empty: still being written?")
    if kind == "mochawesome":
        return _mochawesome_counts(_load_json(data))
    return _junit_counts(_load_xml(data))


# ---------------------------------------------------------------- text and counts shared by both kinds


def _decode(data: bytes, what: str) -> Tuple[str, bool]:
    """Returns the text and whether the bytes stopped in the middle of a UTF-8 character."""
    try:
        return data.decode("utf-8-sig"), False
    except UnicodeDecodeError as err:
        cut_at_end = err.reason == "unexpected end of data" and err.end == len(data)
        if not cut_at_end:
            raise _Refused("invalid", f"{what} is not UTF-8 text (bad byte at offset {err.start})") from None
        return data[: err.start].decode("utf-8-sig"), True


def _ends_early(what: str, data: bytes) -> _Refused:
    return _Refused("incomplete", f"{what} ends early at byte {len(data)}: still being written?")


def _count(value: Any) -> int:
    """A non-negative int from whatever a stats field holds (str, float, null, bool, negative)."""
    if isinstance(value, bool) or value is None:
        return 0
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return 0
    if isinstance(value, float):
        if value != value or value <= 0:  # NaN compares unequal to itself
            return 0
        return MAX_COUNT if value >= MAX_COUNT else int(value)
    if isinstance(value, int):
        return min(max(value, 0), MAX_COUNT)
    return 0


_UNPRINTABLE = {"Cc", "Zl", "Zp"}


def _clean_title(title: Any) -> str:
    # Cut before the per-character work: a hostile title may be megabytes long.
    text = title[: MAX_TITLE_CHARS * 4] if isinstance(title, str) else ""
    text = "".join(" " if unicodedata.category(ch) in _UNPRINTABLE else ch for ch in text)
    text = " ".join(text.split()) or "(no title)"
    if len(text) > MAX_TITLE_CHARS:
        text = text[: MAX_TITLE_CHARS - 1] + "\u2026"
    return text


def _error_line(message: Any) -> str:
    """The first non-blank line of an error message (what an assertion says), capped; "" for none."""
    text = message[: MAX_ERROR_CHARS * 8] if isinstance(message, str) else ""
    line = next((ln for ln in text.splitlines() if ln.strip()), "")
    line = " ".join("".join(" " if unicodedata.category(ch) in _UNPRINTABLE else ch for ch in line).split())
    return line if len(line) <= MAX_ERROR_CHARS else line[: MAX_ERROR_CHARS - 1] + "\u2026"


# ---------------------------------------------------------------- mochawesome JSON

# Python's json also takes NaN/Infinity, so a cut one of those is a cut token too.
_LITERALS = ("true", "false", "null", "NaN", "Infinity", "-Infinity")
_NUMBER_TAIL = re.compile(r"(?:\.|[eE][-+]?)\Z")
_HEX_PREFIX = re.compile(r"u[0-9a-fA-F]{0,4}\Z")


def _load_json(data: bytes) -> Any:
    text, cut_char = _decode(data, "JSON")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        if _json_prefix_error(err, text):
            raise _ends_early("JSON", data) from None
        where = f"line {err.lineno} column {err.colno}"
        raise _Refused("invalid", f"not valid JSON: {err.msg} at {where}") from None
    except RecursionError:
        raise _Refused("invalid", "JSON is nested too deeply to read") from None
    except ValueError:
        # int() refuses numbers with thousands of digits; no real report holds one.
        raise _Refused("invalid", "JSON holds a number too long to read") from None
    if cut_char:
        raise _Refused("invalid", "bytes follow the end of the JSON document")
    return doc


def _json_prefix_error(err: json.JSONDecodeError, text: str) -> bool:
    """True when the decoder failed only because the text stops: more bytes could still make it valid."""
    rest = text[err.pos:]
    if err.pos >= len(text) or err.msg.startswith("Unterminated string"):
        return True
    if err.msg.startswith("Invalid \\uXXXX escape"):
        return bool(_HEX_PREFIX.match(rest))
    if any(lit != rest and lit.startswith(rest) for lit in _LITERALS):
        return True
    return err.pos > 0 and text[err.pos - 1].isdigit() and bool(_NUMBER_TAIL.match(rest))


def _mochawesome_counts(doc: Any) -> _Counts:
    stats = doc.get("stats") if isinstance(doc, dict) else None
    if not isinstance(stats, dict):
        raise _Refused("not-a-report", 'JSON is not a mochawesome report (no "stats" object)')
    results = doc.get("results")
    walked = _walk_results(results if isinstance(results, list) else [])
    stated_failed = _count(stats.get("failures")) + _count(stats.get("other"))
    # Take the larger of stats and tests: a report whose stats say 0 but holds a failed test has failed.
    return _Counts(
        tests=max(_count(stats.get("tests")), walked.tests),
        passed=max(_count(stats.get("passes")), walked.passed),
        failed=min(max(stated_failed, walked.failed), MAX_COUNT),
        pending=max(_count(stats.get("pending")), walked.pending),
        skipped=max(_count(stats.get("skipped")), walked.skipped),
        failed_titles=walked.failed_titles,
        failed_errors=walked.failed_errors,
    )


def _walk_results(results: List[Any]) -> _Counts:
    tests = passed = failed = pending = skipped = 0
    titles: List[str] = []
    errors: List[str] = []
    for item, is_hook in _suite_items(results):
        if not is_hook:
            tests += 1
            passed += item.get("pass") is True or item.get("state") == "passed"
            pending += item.get("pending") is True or item.get("state") == "pending"
            skipped += item.get("skipped") is True
        if item.get("fail") is True or item.get("state") == "failed":
            failed += 1
            titles.append(_clean_title(item.get("fullTitle") or item.get("title")))
            err = item.get("err")
            errors.append(_error_line(err.get("message")) if isinstance(err, dict) else "")
    return _Counts(tests, passed, failed, pending, skipped, tuple(titles), tuple(errors))


def _suite_items(results: List[Any]) -> Iterator[Tuple[Dict[str, Any], bool]]:
    """Tests and hooks in the order mocha ran them; a stack, not recursion, so any depth is safe."""
    stack: List[Tuple[str, Any]] = [("suite", s) for s in reversed(results)]
    while stack:
        step, suite = stack.pop()
        if not isinstance(suite, dict):
            continue  # mochawesome writes `false` for a spec without tests
        if step == "after":
            yield from _entries(suite.get("afterHooks"), True)
            continue
        yield from _entries(suite.get("beforeHooks"), True)
        yield from _entries(suite.get("tests"), False)
        stack.append(("after", suite))
        children = suite.get("suites")
        if isinstance(children, list):
            stack.extend(("suite", child) for child in reversed(children))


def _entries(items: Any, is_hook: bool) -> Iterator[Tuple[Dict[str, Any], bool]]:
    if isinstance(items, list):
        for item in items:
            if isinstance(item, dict):
                yield item, is_hook


# ---------------------------------------------------------------- JUnit XML

# Comments and CDATA are skipped the way expat reads them, so a failure whose stack quotes a page's
# "<!DOCTYPE html>" is still a report; a declaration anywhere else, in any case, is refused.
_DECLARATION_SCAN = re.compile(
    rb"<!--.*?(?:-->|\Z)"  # comment
    rb"|<!\[CDATA\[.*?(?:\]\]>|\Z)"  # CDATA section
    rb"|(<!(?i:DOCTYPE|ENTITY))",
    re.DOTALL,
)
# Expat reports these only when the input stops inside a token or before the root closes.
_XML_CUT_CODES = {3, 5, 6, 20}  # no element found, unclosed token, partial char, unclosed CDATA


def _load_xml(data: bytes) -> ET.Element:
    # Refused before parsing: no entity expansion (billion laughs), no external entities.
    if any(m.group(1) for m in _DECLARATION_SCAN.finditer(data)):
        raise _Refused("invalid", "XML with a DOCTYPE or ENTITY declaration is refused")
    text, cut_char = _decode(data, "XML")
    if "\x00" in text:
        raise _Refused("invalid", "XML contains NUL bytes (not UTF-8 text)")
    try:
        # Parsing a str makes expat read UTF-8 whatever the encoding declaration claims.
        root = ET.fromstring(text)
    except ET.ParseError as err:
        if err.code in _XML_CUT_CODES:
            raise _ends_early("XML", data) from None
        raise _Refused("invalid", f"not valid XML: {_clean_title(str(err))}") from None
    if cut_char:
        raise _Refused("invalid", "bytes follow the end of the XML document")
    return root


def _junit_counts(root: ET.Element) -> _Counts:
    if root.tag not in ("testsuites", "testsuite"):
        tag = _clean_title(root.tag)[:60]
        raise _Refused("not-a-report", f"XML root is <{tag}>, not <testsuites> or <testsuite>")
    tests = passed = failed = skipped = 0
    titles: List[str] = []
    errors: List[str] = []
    for case in root.iter("testcase"):
        tests += 1
        children = {child.tag for child in case}
        if children & {"failure", "error"}:
            failed += 1
            titles.append(_junit_title(case))
            bad = next(child for child in case if child.tag in ("failure", "error"))
            errors.append(_error_line(bad.get("message") or bad.text))
        elif "skipped" in children:
            skipped += 1
        else:
            passed += 1
    if failed == 0:
        failed = _suite_total(root, "failures") + _suite_total(root, "errors")
    # mocha-junit-reporter leaves pending tests out as <testcase>s but counts them in the attributes.
    return _Counts(
        tests=max(tests, _suite_total(root, "tests")),
        passed=passed,
        failed=min(failed, MAX_COUNT),
        skipped=max(skipped, _suite_total(root, "skipped")),
        failed_titles=tuple(titles),
        failed_errors=tuple(errors),
    )


def _junit_title(case: ET.Element) -> str:
    name = case.get("name") or ""
    classname = case.get("classname") or ""
    # mocha-junit-reporter writes name=fullTitle and classname=title, so the name already says it all;
    # other writers use classname=class, name=method.
    if not classname or name.endswith(classname):
        return _clean_title(name)
    return _clean_title(f"{classname} {name}" if name else classname)


def _suite_total(root: ET.Element, attr: str) -> int:
    if root.tag == "testsuites" and attr in root.attrib:
        return _count(root.get(attr))
    leaves = [s for s in root.iter("testsuite") if s.find("testsuite") is None]
    return min(sum(_count(s.get(attr)) for s in leaves), MAX_COUNT)
