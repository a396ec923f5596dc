"""What the watcher keeps per report is small and bounded, and keeping it small loses nothing.

A finished run with 200,000 reports used to peak at 255 MiB: a parsed object per report and its
bookkeeping. The scanner now keeps columns (evidence.ReportScanner) and hands the decision a
ReportSet that makes each report as it is read. The peak RSS of the real watcher on 200,000 reports
is measured by ``bench/bench_watchers.py`` (section ``hugereports``, docs/PERFORMANCE.md); here the
bounds are asserted on Python's own allocation count (tracemalloc), which is deterministic, on a
smaller run; and the columns are checked against reading every file, through random changes.
"""

from __future__ import annotations

import gc
import json
import os
import random
import time
import tracemalloc
from pathlib import Path
from typing import Dict, List, Tuple

from atvm_dev.simulate import mochawesome_report
from atvm_watcher import decide as decide_mod
from atvm_watcher.evidence import ReportScanner, parse_file
from atvm_watcher.vocab import Report, ReportSet

COUNT = 5000
OLD = time.time() - 7200
PASSING = json.dumps(mochawesome_report("spec.cy.js", "suite", ["a", "b", "c"], False)).encode()


def report(failed: bool, title: str = "c") -> bytes:
    return json.dumps(mochawesome_report("spec.cy.js", "suite", ["a", "b", title], failed)).encode()


def many(folder: Path, count: int) -> None:
    folder.mkdir(parents=True)
    for i in range(count):
        path = folder / f"mochawesome_{i:06d}.json"
        path.write_bytes(report(True) if i == count - 1 else PASSING)
        os.utime(path, (OLD + i, OLD + i))
    os.utime(folder, (OLD, OLD))


def test_the_scanner_keeps_a_few_dozen_bytes_per_report(tmp_path):
    """Kept after the scan, about 80 bytes a report (the columns and its packed name; it was about 850,
    a parsed object per report); at the scan's peak under 400 (it was about 1,100); and the decision's
    totals over every report add nothing that stays."""
    folder = tmp_path / "reports"
    many(folder, COUNT)
    gc.collect()
    tracemalloc.start()
    try:
        scanner = ReportScanner(folder)
        reports = scanner.scan(time.time())
        kept, peak = tracemalloc.get_traced_memory()
        counts, titles, unreadable = decide_mod.tally(reports)
        after_tally, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (len(reports), counts.failed, counts.tests, unreadable) == (COUNT, 1, 3 * COUNT, [])
    assert kept / COUNT < 150 and peak / COUNT < 400, (kept / COUNT, peak / COUNT)
    assert (after_tally - kept) / COUNT < 10


def test_a_subset_of_a_report_set_keeps_positions_not_reports(tmp_path):
    """The decision's "this run's reports" is made from a generator over the scanner's set: it keeps 8 bytes
    a report, and reads back the very same reports."""
    folder = tmp_path / "reports"
    many(folder, COUNT)
    reports = ReportScanner(folder).scan(time.time())
    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        subset = ReportSet(r for i, r in enumerate(reports) if i % 2)
        kept, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (kept - before) / (COUNT // 2) < 20
    assert len(subset) == COUNT // 2 and list(subset) == [r for i, r in enumerate(reports) if i % 2]
    assert subset[-1].result.failed == 1 and subset[0] == reports[1]
    first = reports[0]
    assert first == Report(first.mtime, first.size, first.result, first.changed_at, first.seen_change)
    assert hash(first) == hash(Report(first.mtime, first.size, first.result, first.changed_at, first.seen_change))
    assert first.mtime == os.stat(first.result.path).st_mtime and first.size == os.stat(first.result.path).st_size


def oracle(root: Path) -> List[Tuple[str, str, int, Tuple[str, ...]]]:
    """Every report under root, read afresh, in the scanner's order: folder by folder, then by name."""
    found: Dict[str, List[str]] = {}
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(dirpath, d))]
        found[dirpath] = sorted(f for f in files if f.endswith((".json", ".xml"))
                                and not os.path.islink(os.path.join(dirpath, f)))
    rows = []
    for folder in sorted(found):
        for name in found[folder]:
            path = os.path.join(folder, name)
            res = parse_file(path, os.stat(path).st_size)
            rows.append((path, res.status, res.failed, res.failed_titles))
    return rows


def seen(reports) -> List[Tuple[str, str, int, Tuple[str, ...]]]:
    return [(r.result.path, r.result.status, r.result.failed, r.result.failed_titles) for r in reports]


def test_the_columns_agree_with_reading_every_file_through_random_changes(tmp_path):
    """Files added, removed, rewritten (same name, new content), replaced by a rename, turned into a link;
    folders added and removed: after each step the scanner's reports are what reading every file gives."""
    rng = random.Random(20260611)
    root = tmp_path / "reports"
    folders = [root, root / "linux", root / "windows", root / "linux" / "deep"]
    root.mkdir()
    scanner = ReportScanner(root)
    now = time.time()
    for step in range(150):
        folder = rng.choice(folders)
        name = f"r{rng.randrange(40):02d}.{rng.choice(['json', 'json', 'xml'])}"
        path = folder / name
        action = rng.choice(["write", "write", "write", "remove", "rename", "link", "rmdir"])
        if action == "write":
            folder.mkdir(parents=True, exist_ok=True)
            path.write_bytes(report(rng.random() < 0.3, f"t{step}") if name.endswith(".json") else
                             f"<testsuites><testsuite tests='1'><testcase name='t{step}'/></testsuite></testsuites>"
                             .encode())
        elif action == "remove" and path.exists() and not path.is_symlink():
            path.unlink()
        elif action == "rename" and folder.exists():
            tmp = tmp_path / "incoming.json"
            tmp.write_bytes(report(rng.random() < 0.5, f"renamed{step}"))
            os.replace(tmp, path)
        elif action == "link" and folder.exists() and not path.exists():
            path.symlink_to(tmp_path / "nowhere.json")
        elif action == "rmdir" and folder != root and folder.exists():
            for p in sorted(folder.rglob("*"), reverse=True):
                p.unlink() if not p.is_dir() or p.is_symlink() else p.rmdir()
            folder.rmdir()
        now += rng.choice([0.0, 0.5, 3.0])
        got = scanner.scan(now, thorough=True)
        assert seen(got) == oracle(root), (step, action, path)


def test_named_changes_and_relisting_agree_with_reading_every_file_without_the_sweep(tmp_path, monkeypatch):
    """The same random changes, polled as a watcher on file events polls: no sweep, no thorough scan, old
    mtimes (nothing is young); only the names the events give (every write) and the folders' listings.
    Together they must find every change."""
    from atvm_watcher import evidence

    monkeypatch.setattr(evidence, "SWEEP_PER_LOOK", 0)
    rng = random.Random(20261202)
    root = tmp_path / "reports"
    folders = [root, root / "linux", root / "linux" / "deep"]
    root.mkdir()
    scanner = ReportScanner(root)
    now = time.time()
    old = now - 3600
    for step in range(150):
        folder = rng.choice(folders)
        name = f"r{rng.randrange(30):02d}.json"
        path = folder / name
        action = rng.choice(["write", "write", "write", "remove", "rename"])
        if action == "write":
            folder.mkdir(parents=True, exist_ok=True)
            path.write_bytes(report(rng.random() < 0.3, f"t{step % 10}"))  # often the same size
            os.utime(path, (old + step, old + step))  # an old mtime, distinct per write
            scanner.touch(str(folder), name)
        elif action == "remove" and path.exists():
            path.unlink()
        elif action == "rename" and folder.exists():
            tmp = tmp_path / "incoming.json"
            tmp.write_bytes(report(rng.random() < 0.5, f"renamed{step}"))
            os.utime(tmp, (old + step, old + step))
            os.replace(tmp, path)
        now += rng.choice([0.0, 0.5, 3.0, 60.0])
        got = scanner.scan(now)
        assert seen(got) == oracle(root), (step, action, path)
