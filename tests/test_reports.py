"""Report parsing against output of the real reporters (tests/fixtures/reports/) and hostile bytes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atvm_watcher.reports import MAX_COUNT, MAX_ERROR_CHARS, MAX_REPORT_BYTES, MAX_TITLE_CHARS, parse_report
from atvm_watcher.vocab import ReportResult

FIXTURES = Path(__file__).parent / "fixtures" / "reports"
STATUSES = {"ok", "incomplete", "invalid", "not-a-report"}

LONG_TITLE = "a very long title that keeps going " + "and going " * 40 + "until it ends"
LONG_FULL = "ATVM mixed suite i18n " + LONG_TITLE
LONG_SHOWN = LONG_FULL[: MAX_TITLE_CHARS - 1] + "\u2026"
MIXED_FAILED = ("ATVM mixed suite network settings rejects an invalid gateway", LONG_SHOWN)
HOOK_TITLE = 'device setup "before all" hook for "opens the dashboard"'

# (file, tests, passed, failed, pending, skipped, failed_titles), read from what the reporters wrote.
FIXTURE_TABLE = [
    ("pass/mochawesome.json", 2, 2, 0, 0, 0, ()),
    ("pass/junit.xml", 2, 2, 0, 0, 0, ()),
    ("fail/mochawesome.json", 2, 1, 1, 0, 0, ("checkout computes the total",)),
    ("fail/junit.xml", 2, 1, 1, 0, 0, ("checkout computes the total",)),
    # stats.tests is 0 and stats.failures is 0: the failed hook is only in stats.other and beforeHooks.
    ("failed-hook/mochawesome.json", 2, 0, 1, 0, 2, (HOOK_TITLE,)),
    # JUnit lists the hook as the only testcase; tests="2" comes from the suite attributes.
    ("failed-hook/junit.xml", 2, 0, 1, 0, 0, (HOOK_TITLE,)),
    ("pending/mochawesome.json", 2, 0, 0, 2, 0, ()),
    # mocha-junit-reporter writes no testcase for pending tests, only skipped="2" on <testsuites>.
    ("pending/junit.xml", 2, 0, 0, 0, 2, ()),
    ("empty/mochawesome.json", 0, 0, 0, 0, 0, ()),
    ("empty/junit.xml", 0, 0, 0, 0, 0, ()),
    # this.skip() is "pending" to mochawesome; JUnit has only "skipped" (from the attributes).
    ("mixed/mochawesome.json", 8, 4, 2, 2, 0, MIXED_FAILED),
    ("mixed/junit.xml", 8, 4, 2, 0, 2, MIXED_FAILED),
]
FIXTURE_FILES = [row[0] for row in FIXTURE_TABLE]


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def parse(name: str, data: bytes) -> ReportResult:
    result = parse_report(name, data)
    assert result.status in STATUSES
    assert result.status == "ok" or result.detail, "a non-ok result must say why"
    assert "\n" not in result.detail
    return result


def mochawesome(stats: object, results: object = None) -> bytes:
    doc = {"stats": stats} if results is None else {"stats": stats, "results": results}
    return json.dumps(doc).encode()


def suite(tests=(), suites=(), before=(), after=(), title="s") -> dict:
    return {"title": title, "tests": list(tests), "suites": list(suites),
            "beforeHooks": list(before), "afterHooks": list(after)}


# ---------------------------------------------------------------- the real reporters' output


def test_every_committed_fixture_is_in_the_table():
    reports = [p for p in FIXTURES.glob("*/*") if p.suffix in (".json", ".xml")]
    on_disk = sorted(str(p.relative_to(FIXTURES)) for p in reports)
    assert on_disk == sorted(FIXTURE_FILES)


@pytest.mark.parametrize("name,tests,passed,failed,pending,skipped,titles", FIXTURE_TABLE)
def test_real_reporter_output(name, tests, passed, failed, pending, skipped, titles):
    result = parse(name, fixture_bytes(name))
    expected_kind = "mochawesome" if name.endswith(".json") else "junit"
    assert (result.kind, result.status, result.detail) == (expected_kind, "ok", "")
    assert (result.tests, result.passed, result.failed, result.pending, result.skipped) == (
        tests, passed, failed, pending, skipped)
    assert result.failed_titles == titles
    assert result.path == name


def test_long_title_is_cut_to_the_limit():
    title = parse("mixed/junit.xml", fixture_bytes("mixed/junit.xml")).failed_titles[1]
    assert len(title) == MAX_TITLE_CHARS and title.endswith("\u2026")


def test_fixtures_hold_the_shapes_the_parser_relies_on():
    # If a regenerated fixture loses these, the table above no longer tests what it claims to.
    hook = json.loads(fixture_bytes("failed-hook/mochawesome.json"))
    assert (hook["stats"]["failures"], hook["stats"]["other"]) == (0, 1)
    assert [t["state"] for t in hook["results"][0]["suites"][0]["tests"]] == [None, None]
    assert json.loads(fixture_bytes("pending/mochawesome.json"))["stats"]["passPercent"] is None
    assert json.loads(fixture_bytes("empty/mochawesome.json"))["results"] == [False]


# ---------------------------------------------------------------- half-written files


def cut_offsets(size: int) -> list:
    """Every offset of a small file, a spread over a big one (always the first and last few)."""
    if size <= 4000:
        return list(range(size))
    return sorted(set(range(0, size, 37)) | set(range(8)) | set(range(size - 40, size)))


@pytest.mark.parametrize("name", FIXTURE_FILES)
def test_truncated_fixture_is_incomplete(name):
    data = fixture_bytes(name).rstrip()
    for offset in cut_offsets(len(data)):
        result = parse(name, data[:offset])
        assert result.status == "incomplete", (offset, data[max(0, offset - 20):offset], result.detail)


@pytest.mark.parametrize("name", ["mixed/mochawesome.json", "mixed/junit.xml"])
def test_cut_inside_a_multibyte_character_is_incomplete(name):
    data = fixture_bytes(name)
    start = data.index("日本語".encode())
    for offset in range(start, start + 9):
        assert parse(name, data[:offset]).status == "incomplete", offset


def test_incomplete_detail_says_where_and_why():
    data = fixture_bytes("fail/mochawesome.json")[:812]
    assert parse("r.json", data).detail == "JSON ends early at byte 812: still being written?"
    assert "ends early" in parse("r.xml", fixture_bytes("fail/junit.xml")[:100]).detail


@pytest.mark.parametrize("text", [
    '{"a": [1', '{"a": [1.', '{"a": 1.5e', '{"a": 1E-', '{"a": -', '{"a": t', '{"a": fals', '{"a": nu',
    '{"a": Infin', '{"a": -Inf', '{"a": "x\\', '{"a": "x\\u00', '{"a": "x\\u00e9', '{"a"', '{"a" ', '{"a":',
    '{"a": 1, ', "[", "   ", "",
])
def test_json_prefixes_are_incomplete(text):
    assert parse("r.json", text.encode()).status == "incomplete"


@pytest.mark.parametrize("text", [
    '{"a": 1}}', '{"a" 1', "[1,]", '{"a": tx', '{"a": 1.x', "{'a': 1}", '{"a": "\x01"}', "{}x", '{"a": -x',
    '{"a": "\\q"}',
])
def test_json_errors_before_the_end_are_invalid(text):
    assert parse("r.json", text.encode()).status == "invalid"


@pytest.mark.parametrize("text", ["<testsuites", "<?xml", "<testsuites><testcase name='a'>",
                                  "<a><![CDATA[x", "<testsuites>&am", "<!-- still"])
def test_xml_prefixes_are_incomplete(text):
    assert parse("r.xml", text.encode()).status == "incomplete"


@pytest.mark.parametrize("text", ["<a></b>", "<a>&foo;</a>", "<a></a>junk", "junk", "<a b='1' b='2'/>"])
def test_xml_errors_are_invalid(text):
    assert parse("r.xml", text.encode()).status == "invalid"


# ---------------------------------------------------------------- hostile and odd bytes

BINARY = bytes(range(256)) * 4


@pytest.mark.parametrize("name", ["r.json", "r.xml"])
@pytest.mark.parametrize("data", [BINARY, b"\x00" * 64, b"\xff\xfe{\x00}\x00", b"\x89PNG\r\n\x1a\n" + BINARY])
def test_binary_is_invalid(name, data):
    assert parse(name, data).status == "invalid"


@pytest.mark.parametrize("text", ["{}", "[]", '"str"', "null", "42", "true", '{"stats": []}',
                                  '{"results": [{"tests": [{"fail": true}]}]}'])
def test_json_without_mochawesome_shape_is_not_a_report(text):
    result = parse("r.json", text.encode())
    assert result.status == "not-a-report"
    assert result.failed == 0


def test_deep_json_nesting_is_invalid():
    assert parse("r.json", b"[" * 100000 + b"]" * 100000).status == "invalid"
    assert parse("r.json", b'{"stats": {}, "results": ' + b"[" * 100000).status == "invalid"


def test_deep_suite_nesting_is_walked_without_recursion():
    bottom = suite(tests=[{"state": "failed", "fullTitle": "bottom"}])
    top = bottom
    for _ in range(400):  # json.dumps itself recurses, so stay below the interpreter's limit
        top = suite(suites=[top])
    result = parse("r.json", mochawesome({"failures": 0}, [top]))
    assert (result.failed, result.failed_titles) == (1, ("bottom",))


def test_deep_xml_nesting_is_read():
    data = (b"<testsuites>" + b"<testsuite>" * 50000 + b"<testcase name='x'><failure/></testcase>"
            + b"</testsuite>" * 50000 + b"</testsuites>")
    assert (parse("r.xml", data).status, parse("r.xml", data).failed) == ("ok", 1)


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<testsuites><testcase name="&lol9;"/></testsuites>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE testsuites [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<testsuites><testcase name="&xxe;"><failure/></testcase></testsuites>"""


@pytest.mark.parametrize("data", [
    BILLION_LAUGHS,
    EXTERNAL_ENTITY,
    b'<?xml version="1.0"?><!doctype testsuites SYSTEM "http://127.0.0.1:1/x.dtd"><testsuites/>',
    b'<!EnTiTy x "y"><testsuites/>',
    # The same declaration in UTF-16 or in a declared single-byte encoding must not slip past the check.
    '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE t [<!ENTITY a "b">]><testsuites/>'.encode("utf-16"),
    '<?xml version="1.0" encoding="cp037"?><!DOCTYPE t [<!ENTITY a "b">]><testsuites/>'.encode("cp037"),
])
def test_xml_declarations_are_refused_before_parsing(data):
    result = parse("r.xml", data)
    assert result.status == "invalid"
    # Expat might refuse some of these itself; the detail shows our check, not expat, refused them.
    assert "DOCTYPE or ENTITY" in result.detail or "not UTF-8" in result.detail
    if data.isascii():
        assert "DOCTYPE or ENTITY" in result.detail


def test_declaration_hidden_behind_a_fake_cdata_in_comments_is_refused():
    data = (b"<!-- <![CDATA[ --><!DOCTYPE t [<!ENTITY a 'b'>]><!-- ]]> -->"
            b"<testsuites><testcase name='&a;'/></testsuites>")
    assert parse("r.xml", data).status == "invalid"


def test_doctype_quoted_in_a_failure_stack_or_comment_is_still_a_report():
    # A Cypress assertion on a page's HTML quotes "<!DOCTYPE html>" in the stack mocha-junit-reporter writes.
    body = ('<!-- <!DOCTYPE in a comment --><testsuite><testcase name="home page">'
            '<failure message="expected &apos;&lt;!DOCTYPE html&gt;&apos;"><![CDATA[AssertionError: '
            "expected '<!DOCTYPE html><html>' to include 'Welcome'\n<!ENTITY x>]]>"
            "</failure></testcase></testsuite>")
    result = parse("r.xml", junit(body))
    assert (result.status, result.failed, result.failed_titles) == ("ok", 1, ("home page",))


def test_encoding_declaration_cannot_change_how_bytes_are_read():
    # Valid UTF-8 declared as Latin-1 is read as UTF-8; Latin-1 bytes that are not UTF-8 are refused.
    utf8 = '<?xml version="1.0" encoding="ISO-8859-1"?><testsuites><testcase name="Größe"/></testsuites>'
    assert parse("r.xml", utf8.encode()).status == "ok"
    assert parse("r.xml", utf8.encode("latin-1")).status == "invalid"


def test_non_utf8_json_is_invalid():
    result = parse("r.json", '{"stats": {"tests": "Größe"}}'.encode("latin-1"))
    assert result.status == "invalid" and "UTF-8" in result.detail


def test_complete_document_followed_by_a_cut_character_is_invalid():
    assert parse("r.json", b'{"stats": {}}\xe6\x97').status == "invalid"
    assert parse("r.xml", b"<testsuites/>\xe6\x97").status == "invalid"


def test_utf8_bom_is_accepted():
    assert parse("r.json", b"\xef\xbb\xbf" + fixture_bytes("pass/mochawesome.json")).status == "ok"


def test_oversized_input_is_invalid():
    result = parse("r.json", b" " * (MAX_REPORT_BYTES + 1))
    assert result.status == "invalid" and "MiB" in result.detail


def test_bytes_like_input_is_accepted():
    data = fixture_bytes("fail/mochawesome.json")
    assert parse("r.json", bytearray(data)).failed == 1
    assert parse("r.json", memoryview(data)).failed == 1


@pytest.mark.parametrize("path,kind", [("a/b.JSON", "mochawesome"), ("x.Xml", "junit"), ("x.txt", "unknown"),
                                       ("mochawesome", "unknown"), ("", "unknown")])
def test_kind_is_chosen_by_extension(path, kind):
    result = parse(path, fixture_bytes("pass/junit.xml"))
    assert result.kind == kind
    if kind == "unknown":
        assert result.status == "not-a-report"


# ---------------------------------------------------------------- mochawesome counting


@pytest.mark.parametrize("raw,expected", [
    ("3", 3), (2.7, 2), (-5, 0), (None, 0), (True, 0), ([1], 0), ({"a": 1}, 0), ("x", 0), (" 4 ", 4),
    (10**100, MAX_COUNT), (1e308, MAX_COUNT), ("1e999", MAX_COUNT), ("nan", 0), ("-3", 0),
])
def test_stats_of_any_type_become_non_negative_counts(raw, expected):
    stats = {"tests": raw, "passes": raw, "failures": raw, "pending": raw, "skipped": raw, "other": 0}
    result = parse("r.json", mochawesome(stats))
    assert result.status == "ok"
    assert (result.tests, result.passed, result.failed, result.pending, result.skipped) == (expected,) * 5


def test_infinity_and_nan_in_json_are_counted_as_numbers():
    result = parse("r.json", b'{"stats": {"tests": Infinity, "failures": NaN, "passes": -Infinity}}')
    assert (result.status, result.tests, result.failed, result.passed) == ("ok", MAX_COUNT, 0, 0)


def test_number_with_thousands_of_digits_is_invalid():
    assert parse("r.json", b'{"stats": {"tests": ' + b"9" * 5000 + b"}}").status == "invalid"


def test_failed_test_counts_even_when_stats_say_zero():
    tests = [{"fullTitle": "a passes", "pass": True, "state": "passed"},
             {"fullTitle": "a fails", "fail": True}, {"fullTitle": "a state fails", "state": "failed"}]
    result = parse("r.json", mochawesome({"tests": 3, "passes": 3, "failures": 0}, [suite(tests)]))
    assert (result.failed, result.failed_titles) == (2, ("a fails", "a state fails"))


def test_failed_hooks_count_without_stats_other():
    before = [{"fullTitle": "s before all", "fail": True, "isHook": True}]
    after = [{"fullTitle": "s after all", "state": "failed", "isHook": True}]
    result = parse("r.json", mochawesome({}, [suite(before=before, after=after)]))
    assert (result.tests, result.failed, result.failed_titles) == (0, 2, ("s before all", "s after all"))


def test_stats_failures_count_when_tests_say_nothing():
    result = parse("r.json", mochawesome({"failures": 3, "other": 1}, [False]))
    assert (result.failed, result.failed_titles) == (4, ())


def test_failed_titles_come_in_run_order():
    inner = suite(tests=[{"fullTitle": "inner test", "fail": True}],
                  before=[{"fullTitle": "inner before", "fail": True}])
    outer = suite(tests=[{"fullTitle": "outer test", "fail": True}], suites=[inner],
                  before=[{"fullTitle": "outer before", "fail": True}],
                  after=[{"fullTitle": "outer after", "fail": True}])
    second = suite(tests=[{"fullTitle": "second file", "fail": True}])
    result = parse("r.json", mochawesome({}, [outer, False, second]))
    assert result.failed_titles == ("outer before", "outer test", "inner before", "inner test",
                                    "outer after", "second file")


@pytest.mark.parametrize("results", [None, "x", 3, {"a": 1}, [False, None, 3, "x", [], {}],
                                     [{"tests": "x", "suites": 5, "beforeHooks": {}, "afterHooks": [None]}],
                                     [{"tests": [None, 3, "x", {"fail": "yes"}]}]])
def test_junk_in_results_is_skipped(results):
    result = parse("r.json", mochawesome({"tests": 1, "passes": 1}, results))
    assert (result.status, result.failed, result.passed) == ("ok", 0, 1)


@pytest.mark.parametrize("title,shown", [
    ("a\nb\tc\x00d\x1b[31mred", "a b c d [31mred"),
    ("line\u2028sep", "line sep"),
    ("", "(no title)"),
    ("  \n ", "(no title)"),
    ("x" * 10000, "x" * (MAX_TITLE_CHARS - 1) + "\u2026"),
])
def test_failed_titles_are_cleaned(title, shown):
    result = parse("r.json", mochawesome({}, [suite([{"fullTitle": title, "fail": True}])]))
    assert result.failed_titles == (shown,)


def test_title_is_used_when_full_title_is_missing():
    tests = [{"title": "short", "fail": True}, {"fullTitle": 5, "title": None, "fail": True}]
    assert parse("r.json", mochawesome({}, [suite(tests)])).failed_titles == ("short", "(no title)")


def test_walked_tests_raise_low_stats():
    tests = [{"pass": True}, {"pending": True}, {"state": "pending"}, {"skipped": True, "state": None}]
    result = parse("r.json", mochawesome({"tests": 0}, [suite(tests)]))
    assert (result.tests, result.passed, result.pending, result.skipped) == (4, 1, 2, 1)


# ---------------------------------------------------------------- JUnit counting


def junit(body: str, root_attrs: str = "") -> bytes:
    return f'<?xml version="1.0" encoding="UTF-8"?><testsuites {root_attrs}>{body}</testsuites>'.encode()


def test_junit_error_and_failure_both_fail():
    body = ('<testsuite name="s"><testcase classname="com.acme.Login" name="rejects"><error/></testcase>'
            '<testcase classname="com.acme.Login" name="accepts"><failure/></testcase>'
            '<testcase name="ok"/><testcase name="skip"><skipped/></testcase></testsuite>')
    result = parse("r.xml", junit(body))
    assert (result.tests, result.passed, result.failed, result.skipped) == (4, 1, 2, 1)
    assert result.failed_titles == ("com.acme.Login rejects", "com.acme.Login accepts")


def test_junit_attributes_count_when_no_testcase_says_failed():
    result = parse("r.xml", junit('<testsuite tests="3" failures="1" errors="1"/>'))
    assert (result.tests, result.failed, result.failed_titles) == (3, 2, ())
    result = parse("r.xml", junit("", 'tests="5" failures="2"'))
    assert (result.tests, result.failed) == (5, 2)


def test_junit_bad_attributes_are_not_counts():
    result = parse("r.xml", junit('<testsuite tests="many" failures="-4" errors="1e999"/>'))
    assert (result.status, result.tests, result.failed) == ("ok", 0, MAX_COUNT)


def test_junit_testsuite_root_is_a_report():
    result = parse("r.xml", b'<testsuite failures="1"><testcase name="a"><failure/></testcase></testsuite>')
    assert (result.status, result.failed, result.failed_titles) == ("ok", 1, ("a",))


def test_junit_title_falls_back_to_classname():
    body = '<testsuite><testcase classname="only class"><failure/></testcase></testsuite>'
    result = parse("r.xml", junit(body))
    assert result.failed_titles == ("only class",)


@pytest.mark.parametrize("text", ["<html><body/></html>", "<testcase name='a'><failure/></testcase>",
                                  "<ns:testsuites xmlns:ns='urn:x'/>"])
def test_xml_with_another_root_is_not_a_report(text):
    result = parse("r.xml", text.encode())
    assert result.status == "not-a-report" and result.failed == 0


# ---------------------------------------------------------------- properties


@settings(max_examples=400, deadline=None)
@given(data=st.binary(max_size=2000), name=st.sampled_from(["r.json", "r.xml", "r.txt"]))
def test_never_raises_on_arbitrary_bytes(data, name):
    result = parse_report(name, data)
    assert result.status in STATUSES
    assert min(result.tests, result.passed, result.failed, result.pending, result.skipped) >= 0


@settings(max_examples=200, deadline=None)
@given(prefix=st.sampled_from([b"", b"{", b'{"stats": {', b"<testsuites>", b'{"stats": {}, "results": [']),
       text=st.text(max_size=300), name=st.sampled_from(["r.json", "r.xml"]))
def test_never_raises_on_almost_reports(prefix, text, name):
    result = parse_report(name, prefix + text.encode("utf-8", "surrogatepass"))
    assert result.status in STATUSES
    assert all(len(t) <= MAX_TITLE_CHARS for t in result.failed_titles)


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(FIXTURE_FILES), fraction=st.floats(min_value=0, max_value=0.9999))
def test_any_proper_prefix_of_a_real_report_is_incomplete(name, fraction):
    data = fixture_bytes(name).rstrip()
    assert parse_report(name, data[: int(len(data) * fraction)]).status == "incomplete"


# --- the first line of each failed test's error, for the post ------------------------------------------


@pytest.mark.parametrize("name, errors", [
    ("fail/mochawesome.json", ("AssertionError: total should be 5",)),
    ("fail/junit.xml", ("total should be 5 4 !== 5",)),
    ("failed-hook/mochawesome.json", ("Error: VM did not answer on port 8443",)),
])
def test_failed_tests_carry_the_first_line_of_their_error(name, errors):
    result = parse(name, fixture_bytes(name))
    assert result.failed_errors == errors and len(result.failed_errors) == len(result.failed_titles)


def test_error_lines_are_one_line_capped_and_empty_when_missing():
    long = {"title": "t1", "fullTitle": "s t1", "state": "failed", "fail": True,
            "err": {"message": "\n\n  first line\tof it  \nsecond line"}}
    none = {"title": "t2", "fullTitle": "s t2", "state": "failed", "fail": True, "err": {}}
    huge = {"title": "t3", "fullTitle": "s t3", "state": "failed", "fail": True, "err": {"message": "x" * 10**6}}
    result = parse_report("r.json", mochawesome({"tests": 3, "failures": 3}, [suite([long, none, huge])]))
    assert result.failed_errors[:2] == ("first line of it", "")
    assert len(result.failed_errors[2]) == MAX_ERROR_CHARS and result.failed_errors[2].endswith("\u2026")
    xml = (b'<testsuite><testcase name="a"><failure>\n  boom happened\n  at x</failure></testcase>'
           b'<testcase name="b"><error message="bad"/></testcase></testsuite>')
    assert parse_report("r.xml", xml).failed_errors == ("boom happened", "bad")
