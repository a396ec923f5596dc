"""The VM inventory: the shipped example, every Markdown tolerance, and files that cannot be read."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atvm_watcher.inventory import (
    EXAMPLE_MARKER,
    MAX_CELL_CHARS,
    MAX_READ_BYTES,
    VM,
    build_tokens,
    for_group,
    groups_of,
    is_shipped_example,
    load_inventory,
    match_vms,
    parse_inventory,
    vms_for_build,
)

SHIPPED = Path(__file__).resolve().parent.parent / "inventory" / "vm-inventory.md"
CONTRACT_BUILD = "e2e-redhat9.6-ubuntu24.04-w2k25-fc"
HEADER = "| Token | VM | OS | Role | Address | Notes |\n|---|---|---|---|---|---|\n"


def names(vms):
    return [vm.name for vm in vms]


def write(tmp_path: Path, data: bytes, name: str = "vm-inventory.md") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# --- the shipped example ---------------------------------------------------------------------------


def test_shipped_example_parses_cleanly():
    vms, problem = load_inventory(SHIPPED)
    assert problem is None
    tokens = {token for vm in vms for token in vm.tokens}
    wanted = {"redhat8.10", "redhat9.6", "ubuntu22.04", "ubuntu24.04", "sles15sp6", "w2k19", "w2k22", "w2k25"}
    assert wanted <= tokens
    assert all(vm.address.startswith("192.0.2.") for vm in vms)


def test_shipped_example_matches_the_contract_build_name():
    vms, problem = vms_for_build(SHIPPED, CONTRACT_BUILD)
    assert problem is None
    assert names(vms) == ["rh96-src", "ub2404-src", "w2k25-src", "w2k25-tgt"]
    assert vms[0].label() == "rh96-src (RHEL 9.6, source, 192.0.2.11)"


def test_shipped_example_alias_selects_the_same_vm():
    vms, _ = load_inventory(SHIPPED)
    assert names(match_vms(vms, "e2e-rhel9.6")) == names(match_vms(vms, "e2e-redhat9.6")) == ["rh96-src"]


# --- build tokens and matching ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "build, tokens",
    [
        (CONTRACT_BUILD, ["e2e", "redhat9.6", "ubuntu24.04", "w2k25", "fc"]),
        ("E2E_RedHat9.6__w2k25-w2k25", ["e2e", "redhat9.6", "w2k25"]),
        ("--a--", ["a"]),
        ("", []),
        ("single", ["single"]),
    ],
)
def test_build_tokens(build, tokens):
    assert build_tokens(build) == tokens


def test_match_order_is_build_token_order_then_inventory_order_without_duplicates():
    vms = [
        VM("w2k25", "win-a"),
        VM("redhat9.6", "rh"),
        VM("W2K25, rhel9.6", "both"),
        VM("w2k25", "win-b"),
    ]
    assert names(match_vms(vms, "x-w2k25-redhat9.6-rhel9.6")) == ["win-a", "both", "win-b", "rh"]
    assert match_vms(vms, "nothing-here") == []
    assert match_vms([], CONTRACT_BUILD) == []


def test_identical_rows_are_listed_once():
    vms, _ = parse_inventory(HEADER + "| w2k25 | win | | | | |\n| w2k25 | win | | | | |\n")
    assert len(vms) == 2 and names(match_vms(vms, "w2k25")) == ["win"]


def test_token_must_equal_a_whole_build_token():
    vms = [VM("redhat9", "rh9"), VM("9.6", "nine")]
    assert match_vms(vms, "e2e-redhat9.6") == []


@pytest.mark.parametrize(
    "vm, label",
    [
        (
            VM("t", "rh96-src", "RHEL 9.6", "source", "192.0.2.11", "n"),
            "rh96-src (RHEL 9.6, source, 192.0.2.11)",
        ),
        (VM("t", "bare"), "bare"),
        (VM("t", "half", role="target"), "half (target)"),
    ],
)
def test_label(vm, label):
    assert vm.label() == label


# --- Markdown tolerances (table-driven) ------------------------------------------------------------

TOLERANCES = {
    "no outer pipes": ("Token | VM\n--- | ---\nrh | rh-vm\n", [("rh", "rh-vm")]),
    "alignment row with colons": ("| Token | VM |\n|:---|---:|\n| rh | rh-vm |\n", [("rh", "rh-vm")]),
    "centred alignment, spaced": ("| Token | VM |\n| :-: | :---: |\n| rh | rh-vm |\n", [("rh", "rh-vm")]),
    "header without alignment row": ("| Token | VM |\n| rh | rh-vm |\n", [("rh", "rh-vm")]),
    "escaped pipe in a cell": (
        "| Token | VM | Notes |\n|-|-|-|\n| rh | rh-vm | a \\| b |\n",
        [("rh", "rh-vm")],
    ),
    "backticks around values": ("| Token | VM |\n|-|-|\n| `rh` | `rh-vm` |\n", [("rh", "rh-vm")]),
    "backticked aliases": ("| Token | VM |\n|-|-|\n| `rh`, `RHEL` | rh-vm |\n", [("rh, rhel", "rh-vm")]),
    "markdown escapes": ("| Token | VM |\n|-|-|\n| rh | rh\\_vm\\* |\n", [("rh", "rh_vm*")]),
    "blank lines between rows": (
        "\n\n| Token | VM |\n|-|-|\n\n| a | a-vm |\n\n| b | b-vm |\n\n",
        [("a", "a-vm"), ("b", "b-vm")],
    ),
    "crlf line endings": (
        "| Token | VM |\r\n|-|-|\r\n| a | a-vm |\r\n| b | b-vm |\r\n",
        [("a", "a-vm"), ("b", "b-vm")],
    ),
    "old mac line endings": ("| Token | VM |\r|-|-|\r| a | a-vm |\r", [("a", "a-vm")]),
    "bom in text": ("\ufeff| Token | VM |\n|-|-|\n| a | a-vm |\n", [("a", "a-vm")]),
    "header case and order, extra columns": (
        "| owner | ADDRESS | vm | **Token** | rack |\n|-|-|-|-|-|\n| me | 192.0.2.9 | x-vm | X | 4 |\n",
        [("x", "x-vm")],
    ),
    "indented table": ("   | Token | VM |\n   |-|-|\n   | a | a-vm |\n", [("a", "a-vm")]),
    "short row pads with empty cells": ("| Token | VM | OS |\n|-|-|-|\n| a | a-vm |\n", [("a", "a-vm")]),
    "several tables, one of them foreign": (
        "# Linux\n| Token | VM |\n|-|-|\n| a | a-vm |\n\nSome prose.\n\n"
        "| Name | Value |\n|-|-|\n| b | not-a-vm |\n\n# Windows\n| VM | Token |\n|-|-|\n| c-vm | c |\n",
        [("a", "a-vm"), ("c", "c-vm")],
    ),
    "rows in a code fence are examples": (
        "```markdown\n| Token | VM |\n|-|-|\n| no | no-vm |\n```\n| Token | VM |\n|-|-|\n| a | a-vm |\n"
        "~~~~\n| fenced | fenced-vm |\n~~~~\n| after | after-vm |\n",
        [("a", "a-vm")],
    ),
    "duplicate header column: first wins": (
        "| Token | VM | VM |\n|-|-|-|\n| a | first | second |\n",
        [("a", "first")],
    ),
    "empty row is ignored silently": ("| Token | VM |\n|-|-|\n| | |\n| a | a-vm |\n", [("a", "a-vm")]),
}


@pytest.mark.parametrize("text, expected", TOLERANCES.values(), ids=list(TOLERANCES))
def test_markdown_tolerances(text, expected):
    vms, problem = parse_inventory(text)
    assert problem is None
    assert [(vm.token, vm.name) for vm in vms] == expected


def test_escaped_pipe_and_columns_land_in_the_right_fields():
    text = (
        "OS | Notes | VM | Token | Role | Address\n-|-|-|-|-|-\n"
        "RHEL 9.6 | a \\| b | rh | RH | source | 192.0.2.1\n"
    )
    (vm,), problem = parse_inventory(text)
    assert problem is None
    assert vm == VM("rh", "rh", "RHEL 9.6", "source", "192.0.2.1", "a | b")


def test_code_span_keeps_backslashes_but_unescapes_pipes():
    (vm,), _ = parse_inventory("| Token | VM | Notes |\n|-|-|-|\n| a | b | `C:\\path \\| x` |\n")
    assert vm.notes == "C:\\path | x"


def test_cells_are_capped_and_control_characters_stripped():
    text = HEADER + f"| a | vm\x07\u202ename\x1b[31m | {'o' * 500} | r\u200bole | | |\n"
    (vm,), problem = parse_inventory(text)
    assert problem is None
    assert vm.name == "vmname[31m"
    assert vm.os == "o" * MAX_CELL_CHARS
    assert vm.role == "role"


@pytest.mark.parametrize(
    "row, reason",
    [
        ("|  | lonely-vm | | | | |", "line 4 (no Token)"),
        ("| rh |  | RHEL | | | |", "line 4 (no VM)"),
        ("| , | vm | | | | |", "line 4 (no Token)"),
    ],
)
def test_rows_missing_token_or_vm_are_skipped_and_named(row, reason):
    text = HEADER + "| ok | ok-vm | | | | |\n" + row + "\n"
    vms, problem = parse_inventory(text)
    assert names(vms) == ["ok-vm"]
    assert problem is not None and reason in problem


def test_many_skipped_rows_are_summarised_on_one_line():
    text = HEADER + "| | vm | | | | |\n" * 20 + "| ok | ok-vm | | | | |\n"
    vms, problem = parse_inventory(text)
    assert names(vms) == ["ok-vm"]
    assert "\n" not in problem and "and 15 more" in problem


def test_token_that_can_never_match_is_kept_but_reported():
    vms, problem = parse_inventory(HEADER + "| w2k25_dc | dc | | | | |\n| rh 9 | rh | | | | |\n")
    assert names(vms) == ["dc", "rh"]
    assert "can never match" in problem and "line 3" in problem and "line 4" in problem


def test_utf8_bom_crlf_file(tmp_path):
    path = write(
        tmp_path, b"\xef\xbb\xbf" + HEADER.replace("\n", "\r\n").encode() + b"| a | a-vm | | | | |\r\n"
    )
    vms, problem = load_inventory(path)
    assert problem is None and names(vms) == ["a-vm"]


def test_utf16_file_from_a_windows_editor(tmp_path):
    path = write(tmp_path, (HEADER + "| a | a-vm | | | | |\n").encode("utf-16"))
    vms, problem = load_inventory(path)
    assert problem is None and names(vms) == ["a-vm"]


def test_invalid_utf8_is_read_with_a_note(tmp_path):
    path = write(tmp_path, HEADER.encode() + b"| a | caf\xe9 | | | | |\n")
    vms, problem = load_inventory(path)
    assert names(vms) == ["caf\ufffd"]
    assert "UTF-8" in problem


def test_huge_file_is_read_up_to_the_cap(tmp_path):
    row = b"| a | a-vm | | | | |\n"
    path = write(tmp_path, HEADER.encode() + row * (MAX_READ_BYTES // len(row) + 100))
    vms, problem = load_inventory(path)
    assert 0 < len(vms) < MAX_READ_BYTES // len(row)
    assert "larger than" in problem and "skipped" not in problem


# --- files that cannot be used: ([], reason), never an exception -----------------------------------


def _fifo(tmp_path: Path) -> Path:
    path = tmp_path / "fifo.md"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda d: d / "absent.md", "no such file"),
        (lambda d: d, "directory"),
        (lambda d: write(d, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))), "binary"),
        (lambda d: write(d, b""), "empty"),
        (lambda d: write(d, b"  \n\n\t\n"), "empty"),
        (lambda d: write(d, b"# Inventory\n\nNo table here yet.\n"), "no table"),
        (lambda d: write(d, b"| Name | Value |\n|---|---|\n| a | b |\n"), "no table"),
        (lambda d: write(d, HEADER.encode()), "no rows"),
        (_fifo, "not a regular file"),
        (lambda d: d / "a\x00b.md", "cannot read"),
    ],
    ids=[
        "missing",
        "directory",
        "binary",
        "empty",
        "whitespace",
        "prose",
        "foreign-table",
        "header-only",
        "fifo",
        "nul-in-path",
    ],
)
def test_unusable_files_give_a_reason_not_an_exception(tmp_path, make, reason):
    vms, problem = load_inventory(make(tmp_path))
    assert vms == []
    assert problem is not None and reason in problem and "\n" not in problem


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file(tmp_path):
    path = write(tmp_path, HEADER.encode())
    path.chmod(0)
    assert load_inventory(path) == ([], f"cannot read {path}: permission denied")


def test_missing_inventory_still_matches_nothing_quietly(tmp_path):
    vms, problem = vms_for_build(tmp_path / "absent.md", CONTRACT_BUILD)
    assert vms == [] and "no such file" in problem


# --- properties ------------------------------------------------------------------------------------

MARKDOWNISH = st.lists(
    st.one_of(
        st.text(max_size=40),
        st.sampled_from(
            ["|", "\\|", "`", "---", ":--", "Token", "VM", "```", "~~~", "\r\n", "\n", ",", "\ufeff"]
        ),
    ),
    max_size=40,
).map("".join)


def _check_result(result):
    vms, problem = result
    assert all(isinstance(vm, VM) and vm.name and vm.tokens for vm in vms)
    assert all(len(getattr(vm, field)) <= MAX_CELL_CHARS for vm in vms for field in ("name", "os", "notes"))
    assert problem is None or (isinstance(problem, str) and "\n" not in problem)


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(), MARKDOWNISH))
def test_parse_never_raises(text):
    _check_result(parse_inventory(text))


@settings(max_examples=150, deadline=None)
@given(
    data=st.one_of(st.binary(max_size=2000), MARKDOWNISH.map(lambda t: t.encode("utf-8", "surrogatepass")))
)
def test_load_never_raises(data):
    with tempfile.TemporaryDirectory() as folder:
        _check_result(load_inventory(write(Path(folder), data)))


@settings(max_examples=300, deadline=None)
@given(build=st.text(), text=MARKDOWNISH)
def test_match_never_raises_and_only_returns_selected_vms(build, text):
    vms, _ = parse_inventory(text)
    matched = match_vms(vms, build)
    tokens = build_tokens(build)
    assert len(set(matched)) == len(matched)
    assert all(set(vm.tokens) & set(tokens) for vm in matched)
    assert all(token and "-" not in token and "_" not in token for token in tokens)


# --- the Group column: which sub-run of a categorized run uses a VM -----------------------------------


def test_a_sub_run_gets_its_own_vms_and_the_shared_ones():
    text = ("| Token | VM | Group |\n|---|---|---|\n| rhel9 | r9 | linux |\n| w2k25 | w25 | Windows, win2 |\n"
            "| agent | ag |  |\n")
    vms, problem = parse_inventory(text)
    assert problem is None and [vm.groups for vm in vms] == [("linux",), ("windows", "win2"), ()]
    build = match_vms(vms, "e2e-rhel9-w2k25-agent")
    assert names(for_group(build, "linux")) == ["r9", "ag"]
    assert names(for_group(build, "windows")) == names(for_group(build, "WIN2")) == ["w25", "ag"]
    assert for_group(build, "solaris") == [] and for_group(build, None) == []  # the whole build's, then
    assert groups_of(build) == ("linux", "windows", "win2")


def test_without_a_group_column_nothing_is_narrowed():
    vms, _ = vms_for_build(SHIPPED, CONTRACT_BUILD)
    plain = [VM(vm.token, vm.name) for vm in vms]
    assert for_group(plain, "linux") == [] and groups_of(plain) == ()


def test_the_shipped_example_names_the_groups_of_the_demo():
    vms, _ = vms_for_build(SHIPPED, CONTRACT_BUILD)
    assert names(for_group(vms, "linux")) == ["rh96-src", "ub2404-src"]
    assert names(for_group(vms, "windows")) == ["w2k25-src", "w2k25-tgt"]


def test_the_shipped_example_is_recognised_and_an_edited_copy_is_not(tmp_path):
    assert is_shipped_example(SHIPPED)
    lab = write(tmp_path, SHIPPED.read_bytes().replace(EXAMPLE_MARKER.encode(), b"our lab"))
    assert not is_shipped_example(lab) and not is_shipped_example(tmp_path / "missing.md")


# --- the same content is parsed once (the watcher reads the file at start and again for its post) -------


def test_the_same_content_is_parsed_once_and_a_changed_file_always_anew(tmp_path, monkeypatch):
    from atvm_watcher import inventory

    parsed = []
    real = inventory._parse_bytes
    monkeypatch.setattr(inventory, "_parse_bytes", lambda data, cut: parsed.append(data) or real(data, cut))
    monkeypatch.setattr(inventory, "_last_parsed", None)
    path = write(tmp_path, (HEADER + "| a | a-vm | | | | |\n").encode())
    first, problem = load_inventory(path)
    first.append(VM("x", "not-in-the-file"))  # the caller's list is its own
    again, again_problem = load_inventory(path)
    assert names(again) == ["a-vm"] and problem is again_problem is None and len(parsed) == 1
    # Rewritten with the same size and the same times: the content decides, not the file's stat.
    st = path.stat()
    path.write_bytes((HEADER + "| a | b-vm | | | | |\n").encode())
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size
    changed, _ = load_inventory(path)
    assert names(changed) == ["b-vm"] and len(parsed) == 2
    # A problem comes back as it was found, also from the remembered parse.
    odd = write(tmp_path, HEADER.encode() + b"| a | caf\xe9 | | | | |\n", "odd.md")
    assert load_inventory(odd) == load_inventory(odd) and len(parsed) == 3
    assert "UTF-8" in load_inventory(odd)[1]


def test_a_cut_file_is_not_taken_for_its_uncut_start(tmp_path, monkeypatch):
    from atvm_watcher import inventory

    monkeypatch.setattr(inventory, "_last_parsed", None)
    row = b"| a | a-vm | | | | |\n"
    start = HEADER.encode() + row * (MAX_READ_BYTES // len(row))
    whole = write(tmp_path, start[:MAX_READ_BYTES], "whole.md")
    cut = write(tmp_path, start[:MAX_READ_BYTES] + row * 10, "cut.md")
    assert load_inventory(whole)[1] is None
    assert "larger than" in load_inventory(cut)[1]
    assert load_inventory(whole)[1] is None
