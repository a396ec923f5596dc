"""``inspect --discover``: which files under the log and report folders belong to a build, and which
layout setting reads each, so that the first real run tells the operator what to set.

A file belongs to the build when its path (below the folder) or its first line names the build (as a
name of its own: not B inside B2). Each is matched against every template of the layout; for a file
that no template reads, a setting is suggested from its kind (a log, an outcome file, a pid file, a
report) with its folder and the build name made fields. Reading is bounded (folders, files, bytes).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

from .layout import RunLayout, build_token
from .safefile import read_first_line
from .vocab import TERMINAL_WORDS

MAX_DEPTH = 8
MAX_ENTRIES = 20000
FIRST_LINE_BYTES = 4096
REPORT_SUFFIXES = (".json", ".xml")


@dataclass(frozen=True)
class Found:
    path: str
    why: str  # "path" | "first line"
    settings: Tuple[str, ...]  # the settings whose template reads it
    kind: str  # what it looks like: log, exit, status, pid, report, other
    suggestion: Optional[str] = None  # SETTING=template, when no setting reads it


def walk(roots: List[Path]) -> Iterator[Tuple[Path, Optional[str]]]:
    """(regular file, None) under the roots, links not followed; (root, note) when a limit cut it short."""
    seen = 0
    for root in roots:
        stack = [(root, 0)]
        while stack:
            folder, depth = stack.pop()
            try:
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except OSError:
                continue
            for e in entries:
                seen += 1
                if seen > MAX_ENTRIES:
                    yield root, f"stopped after {MAX_ENTRIES} entries"
                    return
                try:
                    mode = e.stat(follow_symlinks=False).st_mode
                except OSError:
                    continue
                if stat.S_ISDIR(mode) and depth < MAX_DEPTH:
                    stack.append((Path(e.path), depth + 1))
                elif stat.S_ISREG(mode):
                    yield Path(e.path), None


def kind_of(path: Path, first_line: str) -> str:
    name = path.name.lower()
    if name.endswith(REPORT_SUFFIXES):
        return "report"
    for kind, marks in (("exit", (".exit", ".rc", "exit-code", "exitcode", ".code")), ("status", (".status",)),
                        ("pid", (".pid",)), ("log", (".log", ".txt", ".out"))):
        if any(m in name for m in marks):
            return kind
    words = first_line.strip()
    if words.upper() in TERMINAL_WORDS:
        return "status"
    if words.isdigit():
        return "exit"
    return "other"


SETTING_OF_KIND = {"log": "ATVM_LOG_FILE", "exit": "ATVM_EXIT_FILE", "status": "ATVM_STATUS_FILE",
                   "pid": "ATVM_PID_FILE", "report": "ATVM_REPORT_FOLDER"}


def suggest(layout: RunLayout, path: Path, kind: str) -> Optional[str]:
    setting = SETTING_OF_KIND.get(kind)
    if setting is None:
        return None
    target = path
    if kind == "report":  # the folder the reports are in: the deepest one that names the build
        named = [p for p in path.parents if build_token(layout.build).search(p.name)]
        if not named:
            return None
        target = named[0]
    template = layout.template_for(target)
    return f"{setting}={template}" if template else None


def discover(layout: RunLayout, setting_names: Dict[str, str]) -> Tuple[List[Found], List[str]]:
    """(the files that mention the build, notes): ``setting_names`` maps Templates fields to settings."""
    token = build_token(layout.build)
    roots = [layout.log_dir, layout.report_dir]
    roots = [r for r in roots if not any(r != o and r.is_relative_to(o) for o in roots)]
    found, notes = [], []
    for path, note in walk(sorted(set(roots))):
        if note:
            notes.append(f"{path}: {note}")
            continue
        first = ""
        by_path = bool(token.search(str(path.relative_to(next(r for r in roots if path.is_relative_to(r))))))
        try:
            first, _ = read_first_line(path, FIRST_LINE_BYTES, follow_symlinks=False)
        except OSError:
            pass
        if not by_path and not token.search(first):
            continue
        settings = tuple(setting_names[k] for k in layout.matches(path))
        kind = kind_of(path, first)
        found.append(Found(str(path), "path" if by_path else "first line", settings, kind,
                           None if settings else suggest(layout, path, kind)))
    return sorted(found, key=lambda f: f.path), notes
