"""The VM inventory: which VMs a build exercises, read from a Markdown table (docs/INVENTORY.md).

The inventory is hand-edited by operators, so reading it never raises: whatever goes wrong
comes back as a one-line problem, and the status post goes out anyway with what could be read.
"""

from __future__ import annotations

import codecs
import hashlib
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

from .safefile import read_capped

MAX_READ_BYTES = 1024 * 1024
MAX_CELL_CHARS = 200
MAX_PROBLEM_CHARS = 400
MAX_LINES_NAMED = 5
# A line of the shipped example inventory (inventory/vm-inventory.md): while it is there, check warns
# that the watcher names fictional VMs.
EXAMPLE_MARKER = "atvm-watcher: example inventory, fictional VMs"

COLUMNS = ("token", "vm", "os", "role", "address", "notes", "group")
_BUILD_SEPARATORS = re.compile(r"[-_]+")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_ALIGNMENT_CELL = re.compile(r"\s*:?-+:?\s*")
_FENCE = re.compile(r"\s{0,3}(`{3,}|~{3,})")
_MARKDOWN_ESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")
# Cc/Cf/Zl/Zp: control and invisible format characters (bidi overrides, zero-width) that could
# garble or disguise a chat line; Cs and Co cannot be printed sensibly either.
_STRIPPED_CATEGORIES = frozenset(("Cc", "Cf", "Cs", "Co", "Zl", "Zp"))


@dataclass(frozen=True)
class VM:
    token: str  # one token, or aliases as a comma-separated list; lowercased when read from a file
    name: str
    os: str = ""
    role: str = ""
    address: str = ""
    notes: str = ""
    group: str = ""  # the sub-runs (groups) of a categorized run this VM serves, comma-separated; "" for any

    @property
    def tokens(self) -> Tuple[str, ...]:
        """The lowercased build-name tokens that select this VM."""
        return _split_token_cell(str(self.token or ""))

    @property
    def groups(self) -> Tuple[str, ...]:
        """The lowercased sub-run names of the Group column."""
        return _split_token_cell(str(self.group or ""))

    def label(self) -> str:
        """One line for a chat message: ``rh96-src (RHEL 9.6, source, 192.0.2.11)``."""
        details = [str(part) for part in (self.os, self.role, self.address) if part]
        return f"{self.name} ({', '.join(details)})" if details else str(self.name)


def build_tokens(build_name: str) -> List[str]:
    """Tokens of a build name: split on '-' and '_' ('.' stays inside), lowercased, first seen first."""
    if not isinstance(build_name, str):
        return []
    tokens: List[str] = []
    for token in _BUILD_SEPARATORS.split(build_name.lower()):
        if token and token not in tokens:
            tokens.append(token)
    return tokens


def match_vms(vms: Sequence[VM], build_name: str) -> List[VM]:
    """VMs whose token equals a build token, in build-token order then inventory order, once each."""
    matched: List[VM] = []
    for token in build_tokens(build_name):
        for vm in vms:
            if token in vm.tokens and vm not in matched:
                matched.append(vm)
    return matched


def load_inventory(path: Union[Path, str]) -> Tuple[List[VM], Optional[str]]:
    """Read the inventory file: (VMs, None), or what could be read plus a one-line problem."""
    shown = _clean(str(path))
    try:
        data, _ = read_capped(path, MAX_READ_BYTES + 1)  # a FIFO or device named by mistake cannot hang us
        vms, problem = _parse_bytes_once(data[:MAX_READ_BYTES], len(data) > MAX_READ_BYTES)
    except (OSError, ValueError) as exc:
        return [], _problem(f"cannot read {shown}: {_os_reason(exc)}")
    except Exception as exc:  # the post must go out even if this parser has a bug
        return [], _problem(f"cannot parse {shown}: internal error ({type(exc).__name__})")
    return vms, (_problem(f"{shown}: {problem}") if problem else None)


def parse_inventory(text: str) -> Tuple[List[VM], Optional[str]]:
    """Parse inventory Markdown already in memory; same result shape as ``load_inventory``."""
    vms, problem = _parse_text(text if isinstance(text, str) else "", [])
    return vms, (_problem(problem) if problem else None)


def for_group(vms: Sequence[VM], group: Optional[str]) -> List[VM]:
    """Of a build's VMs, a sub-run's: those whose Group names it (ignoring case) and those with no Group
    (shared by every sub-run). [] when no VM names it: the post then lists the whole build's VMs."""
    wanted = (group or "").lower()
    if not wanted or not any(wanted in vm.groups for vm in vms):
        return []
    return [vm for vm in vms if wanted in vm.groups or not vm.groups]


def groups_of(vms: Sequence[VM]) -> Tuple[str, ...]:
    """The sub-runs these VMs' Group columns name, first seen first."""
    return tuple(dict.fromkeys(g for vm in vms for g in vm.groups))


def is_shipped_example(path: Union[Path, str]) -> bool:
    """Is this the shipped example inventory (it still holds EXAMPLE_MARKER)? False when unreadable."""
    try:
        data, _ = read_capped(path, MAX_READ_BYTES)
    except (OSError, ValueError):
        return False
    return EXAMPLE_MARKER.encode() in data


def vms_for_build(path: Union[Path, str], build_name: str) -> Tuple[List[VM], Optional[str]]:
    """Load and match in one call, for the message: (matched VMs, problem or None)."""
    vms, problem = load_inventory(path)
    return match_vms(vms, build_name), problem


# --- reading ------------------------------------------------------------------------------------


def _os_reason(exc: Exception) -> str:
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, OSError) and exc.strerror:
        return str(exc.strerror).lower()
    return _clean(str(exc)) or type(exc).__name__


# The last file content parsed (its SHA-256, whether it was cut) and what it gave. The watcher reads the
# inventory when it starts and again for its post: the same bytes are then not parsed a second time, at
# the moment a post is due (the parse is the largest part of composing a message). Keyed by the content,
# never by a file's times: a changed file is always parsed anew.
_last_parsed: Optional[Tuple[bytes, bool, Tuple[VM, ...], Optional[str]]] = None


def _parse_bytes_once(data: bytes, truncated: bool) -> Tuple[List[VM], Optional[str]]:
    global _last_parsed
    key = hashlib.sha256(data).digest()
    last = _last_parsed
    if last is not None and last[0] == key and last[1] == truncated:
        return list(last[2]), last[3]
    vms, problem = _parse_bytes(data, truncated)
    _last_parsed = (key, truncated, tuple(vms), problem)
    return vms, problem


def _parse_bytes(data: bytes, truncated: bool) -> Tuple[List[VM], Optional[str]]:
    notes: List[str] = []
    if not data.strip():
        return [], "file is empty"
    if truncated:
        notes.append(f"file is larger than {MAX_READ_BYTES // 1024} KiB; read only the start")
        data = data[: data.rfind(b"\n") + 1] or data  # drop the last, probably cut, line
    text = _decode(data, notes)
    if text is None:
        return [], "looks binary (contains NUL bytes), not a Markdown table"
    return _parse_text(text, notes)


def _decode(data: bytes, notes: List[str]) -> Optional[str]:
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16", errors="replace")  # Windows editors' "Unicode"
    if b"\x00" in data:
        return None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        notes.append("not valid UTF-8; odd bytes replaced")
        return data.decode("utf-8-sig", errors="replace")


# --- parsing ------------------------------------------------------------------------------------


def _parse_text(text: str, notes: List[str]) -> Tuple[List[VM], Optional[str]]:
    vms: List[VM] = []
    skipped: List[str] = []
    unmatchable: List[str] = []
    saw_table = False
    for number, columns, cells in _table_rows(text.lstrip("\ufeff")):
        saw_table = True
        if cells is None:
            continue
        vm, why = _row_to_vm(columns, cells)
        if why:
            skipped.append(f"line {number} ({why})")
        if vm is not None:
            vms.append(vm)
            unmatchable.extend(f"line {number} ({token!r})" for token in _unmatchable_tokens(vm))
    notes.extend(_summary(vms, skipped, saw_table))
    if unmatchable:
        notes.append(f"tokens holding '-', '_' or a space can never match: {_name_some(unmatchable)}")
    return vms, ("; ".join(notes) if notes else None)


def _summary(vms: List[VM], skipped: List[str], saw_table: bool) -> List[str]:
    notes: List[str] = []
    if not saw_table:
        notes.append("no table with Token and VM columns")
    elif not vms and not skipped:
        notes.append("the Token/VM table has no rows")
    if skipped:
        notes.append(f"skipped {_name_some(skipped)}")
    return notes


def _name_some(items: List[str]) -> str:
    more = len(items) - MAX_LINES_NAMED
    return ", ".join(items[:MAX_LINES_NAMED]) + (f" and {more} more" if more > 0 else "")


def _table_rows(text: str) -> Iterator[Tuple[int, Dict[str, int], Optional[List[str]]]]:
    """Yield (line number, column map, cells) for rows under a Token/VM header.

    cells is None for the header itself, so the caller knows a table was found.
    """
    lines = _LINE_BREAK.split(text)
    columns: Optional[Dict[str, int]] = None
    fence: Optional[str] = None
    for index, line in enumerate(lines):
        fence_match = _FENCE.match(line)
        if fence is not None or fence_match:
            fence = _next_fence(fence, fence_match, line)
            columns = None  # a code block ends a table, and rows inside one are examples
            continue
        cells = _split_row(line)
        if cells is None:
            if line.strip():
                columns = None  # prose ends a table; blank lines do not, by choice
            continue
        if _is_alignment(cells):
            continue
        header = _header(cells, index, lines)
        if header is not None:
            columns = header if {"token", "vm"} <= header.keys() else None
            if columns is not None:
                yield index + 1, columns, None
        elif columns is not None:
            yield index + 1, columns, cells


def _next_fence(fence: Optional[str], fence_match: Optional[re.Match], line: str) -> Optional[str]:
    if fence is None:
        return fence_match.group(1) if fence_match else None
    stripped = line.strip()
    closes = stripped.startswith(fence) and not stripped.strip(fence[0])
    return None if closes else fence


def _header(cells: List[str], index: int, lines: List[str]) -> Optional[Dict[str, int]]:
    """A column map if this row is a header: followed by an alignment row, or naming Token and VM."""
    names = [_header_name(cell) for cell in cells]
    following = _split_row(lines[index + 1]) if index + 1 < len(lines) else None
    if not (following is not None and _is_alignment(following)) and not {"token", "vm"} <= set(names):
        return None
    columns: Dict[str, int] = {}
    for position, name in enumerate(names):
        columns.setdefault(name, position)
    return columns


def _header_name(cell: str) -> str:
    return _clean(cell).strip("`*_ ").lower()


def _is_alignment(cells: List[str]) -> bool:
    return all(_ALIGNMENT_CELL.fullmatch(cell) for cell in cells)


def _split_row(line: str) -> Optional[List[str]]:
    """Cells of a table row, or None if the line has no unescaped pipe (not a row)."""
    cells: List[str] = []
    current: List[str] = []
    chars = iter(line.strip())
    ends_with_pipe = False
    for char in chars:
        ends_with_pipe = char == "|"
        if char == "\\":
            current.append(char + next(chars, ""))  # an escaped pair is never a separator
        elif ends_with_pipe:
            cells.append("".join(current))
            current = []
        else:
            current.append(char)
    cells.append("".join(current))
    if len(cells) < 2:
        return None
    if ends_with_pipe:
        cells.pop()
    if line.strip().startswith("|"):
        cells.pop(0)
    return cells


def _row_to_vm(columns: Dict[str, int], cells: List[str]) -> Tuple[Optional[VM], str]:
    values = {name: _cell_value(cells, columns.get(name)) for name in COLUMNS}
    if not any(_cell_value(cells, position) for position in range(len(cells))):
        return None, ""  # an empty row is layout, not a mistake worth reporting
    tokens = _split_token_cell(values["token"])
    if not tokens:
        return None, "no Token"
    if not values["vm"]:
        return None, "no VM"
    values["token"] = ", ".join(tokens)
    return VM(name=values.pop("vm"), **values), ""


def _cell_value(cells: List[str], position: Optional[int]) -> str:
    if position is None or position >= len(cells):
        return ""
    value = _clean(cells[position].strip())
    inner = value.strip("`")
    if value.startswith("`") and value.endswith("`") and inner and "`" not in inner:
        value = inner.strip().replace("\\|", "|")  # a code span keeps its other backslashes
    else:
        value = _MARKDOWN_ESCAPE.sub(r"\1", value)
    return value[:MAX_CELL_CHARS]


def _split_token_cell(cell: str) -> Tuple[str, ...]:
    tokens: List[str] = []
    for part in cell.split(","):
        token = part.strip().strip("`").strip().lower()
        if token and token not in tokens:
            tokens.append(token)
    return tuple(tokens)


def _unmatchable_tokens(vm: VM) -> List[str]:
    # build tokens are split on '-' and '_' and never hold them; a space means a missing comma
    return [token for token in vm.tokens if re.search(r"[-_\s]", token)]


def _clean(value: str) -> str:
    value = value.replace("\t", " ")
    return "".join(ch for ch in value if unicodedata.category(ch) not in _STRIPPED_CATEGORIES)


def _problem(text: str) -> str:
    text = " ".join(_clean(text).split())
    return text if len(text) <= MAX_PROBLEM_CHARS else text[: MAX_PROBLEM_CHARS - 3] + "..."
