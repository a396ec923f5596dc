"""The evidence adapter's incremental readers: what they may skip, and that skipping never loses a change.

LogTail reads only appended bytes; ReportScanner does not stat every report on every poll. Each
test builds files in tmp_path and drives time through the ``now`` the watcher would pass.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import List

import pytest

from atvm_dev.simulate import mochawesome_report
from atvm_watcher import evidence
from atvm_watcher.evidence import EvidenceReader, LogTail, ReportScanner
from atvm_watcher.layout import RunLayout

OLD = time.time() - 3600  # an mtime well outside every "recent" window


# The summary table's last row, as Cypress prints it (tests/fixtures/cypress has whole logs)
PASSED_ROW = "    ✔  All specs passed!                        00:03        6        6        -        -        -  \n"
FAILED_ROW = "    ✖  1 of 2 failed (50%)                      00:03        6        5        1        -        -  \n"


def append(path: Path, text: str) -> None:
    with path.open("ab") as fh:
        fh.write(text.encode())


# --- LogTail ------------------------------------------------------------------------------------------


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "B.log"
    path.write_text("  (Run Starting)\n")
    return path


def test_banner_and_summary_are_read_as_they_are_appended(log):
    tail = LogTail(log)
    assert not tail.facts().finished_banner
    append(log, "  Running: a.cy.js (1 of 2)\n\n  (Run Finished)\n")
    facts = tail.facts()
    assert facts.finished_banner and facts.summary is None
    append(log, "    ✖  1 of 2 failed (50%)   00:03   6   5   1   -   -\n")
    facts = tail.facts()
    assert (facts.summary, facts.failed_specs, facts.total_specs) == ("failed", 1, 2)
    assert tail.offset == log.stat().st_size


def test_a_line_split_across_two_reads_is_seen_once_complete(log):
    tail = LogTail(log)
    append(log, "  (Run Fin")
    assert not tail.facts().finished_banner
    append(log, "ished)\n    ✔  All specs pas")
    facts = tail.facts()
    assert facts.finished_banner and facts.summary is None
    append(log, "sed!   00:03   6   6   -   -   -\n")
    assert tail.facts().summary == "passed"


def test_a_summary_without_a_final_newline_counts(log):
    tail = LogTail(log)
    append(log, "  (Run Finished)\n    ✖  2 of 3 failed (66%)   00:03   6   4   2   -   -")
    facts = tail.facts()
    assert (facts.summary, facts.failed_specs, facts.total_specs) == ("failed", 2, 3)


def test_only_the_summary_after_the_last_banner_counts(log):
    tail = LogTail(log)
    append(log, "    ✓ reports 1 of 2 failed disks correctly\n  (Run Finished)\n" + PASSED_ROW)
    assert tail.facts().summary == "passed"
    append(log, "  (Run Starting)\n  (Run Finished)\n")
    assert tail.facts().summary is None  # a later Cypress run in the same log: its summary is still due
    append(log, "    ✖  1 of 4 failed (25%)   00:09   8   7   1   -   -\n")
    assert tail.facts().summary == "failed"


def test_old_bytes_are_never_read_again(log):
    """Cost of a poll independent of the log's size: rewriting the start of the log goes unseen."""
    append(log, "x" * 4096 + "\n")
    tail = LogTail(log)
    tail.facts()
    with log.open("r+b") as fh:
        fh.write(b"  (Run Finished)\n")  # inside what was already read
    append(log, "one more line\n")
    assert not tail.facts().finished_banner


def test_first_read_covers_only_the_window_at_the_end_and_the_beginning(log, monkeypatch):
    monkeypatch.setattr(evidence, "LOG_FIRST_READ_WINDOW", 1000)
    append(log, "filler line\n" * 200 + "  (Run Finished)\n" + FAILED_ROW + "filler line\n" * 200)
    size = log.stat().st_size
    tail = LogTail(log)
    facts = tail.facts()
    assert not facts.finished_banner  # in the middle: more than the window from either end
    assert facts.unfinished and facts.unread  # the beginning's (Run Starting) was read; the middle was not
    assert tail.offset == size
    append(log, "  (Run Finished)\n" + PASSED_ROW)
    assert tail.facts().summary == "passed"

    fresh = LogTail(log)
    assert fresh.facts().summary == "passed"  # within the window of a newly opened log


def test_a_killed_run_with_more_output_than_the_window_still_shows_it_never_finished(tmp_path, monkeypatch):
    """(Run Starting) more than the window before the end of a run killed mid-spec (DEBUG lines, say)."""
    monkeypatch.setattr(evidence, "LOG_FIRST_READ_WINDOW", 4096)
    killed = (CORPUS / "killed-sigterm.log").read_bytes()
    head, rest = killed.split(b"  Running:  projects.cy.js", 1)
    noise = b"2026-01-01T00:00:00.000Z cypress:server:socket-base backend:request {}\n" * 200
    path = tmp_path / "B.log"
    path.write_bytes(head + noise + b"  Running:  projects.cy.js" + rest)
    facts = LogTail(path).facts()
    assert (facts.unfinished, facts.finished_banner, facts.unread) == (True, False, True)


def test_a_log_no_larger_than_two_windows_is_read_whole(log, monkeypatch):
    monkeypatch.setattr(evidence, "LOG_FIRST_READ_WINDOW", 1000)
    append(log, "x" * 999 + "\n  2 passing (3s)\n  2 failing\n" + "y" * 900 + "\n")
    facts = LogTail(log).facts()
    assert (facts.failed_tests, facts.unread, facts.unfinished) == (2, False, True)


def test_rotation_starts_over_on_the_new_file(log):
    tail = LogTail(log)
    append(log, "  (Run Finished)\n" + FAILED_ROW)
    assert tail.facts().summary == "failed"
    log.rename(log.with_name("B.log.1"))
    log.write_text("  (Run Starting)\n")
    facts = tail.facts()
    assert not facts.finished_banner and facts.summary is None
    assert facts.size == log.stat().st_size


def test_truncation_starts_over(log):
    append(log, "  (Run Finished)\n" + FAILED_ROW)
    tail = LogTail(log)
    assert tail.facts().summary == "failed"
    log.write_text("new\n")  # same inode, smaller
    facts = tail.facts()
    assert not facts.finished_banner
    assert tail.offset == 4


def test_truncated_and_regrown_past_the_offset_between_polls_starts_over(log):
    """copytruncate: same inode, larger size than before, but different bytes before the old offset."""
    append(log, "  Running: a.cy.js (1 of 2)\n" * 5)
    tail = LogTail(log)
    tail.facts()
    old_offset = tail.offset
    log.write_text("  (Run Finished)\n" + PASSED_ROW + "after the run\n" * 10)
    assert log.stat().st_size > old_offset > log.read_text().index("passed")
    assert tail.facts().summary == "passed"


def test_an_endless_line_keeps_memory_bounded(log):
    tail = LogTail(log)
    append(log, "y" * (3 * evidence.MAX_LINE))
    tail.facts()
    assert len(tail.carry) <= evidence.MAX_LINE
    append(log, "\n  (Run Finished)\n")  # the endless line ends; the banner is alone on its line
    assert tail.facts().finished_banner


def test_a_missing_log_has_no_facts(tmp_path):
    assert LogTail(tmp_path / "absent.log").facts() is None


# --- LogTail on what Cypress 13.17 really prints (tests/fixtures/cypress: the corpus) -------------------

CORPUS = Path(__file__).parent / "fixtures" / "cypress"
# case -> (finished_banner, unfinished, summary, failed_specs, total_specs, failed_tests, cancelled, error)
CORPUS_FACTS = {
    "all-passed": (True, False, "passed", 0, 0, 0, False, None),
    "some-failed": (True, False, "failed", 2, 3, 3, False, None),
    "failing-hook": (True, False, "failed", 1, 2, 1, False, None),
    "retries-flaky-pass": (True, False, "passed", 0, 0, 0, False, None),
    "retries-then-fail": (True, False, "failed", 1, 3, 1, False, None),
    "cloud-cancelled": (True, False, None, 0, 0, 0, True, None),
    "no-spec-files": (False, False, None, 0, 0, 0, False, "Can't run because no spec files were found"),
    "config-error": (False, False, None, 0, 0, 0, False, "Your configFile is invalid"),
    "baseurl-unreachable": (False, False, None, 0, 0, 0, False,
                            "Cypress failed to verify that your server is running"),
    "renderer-crash": (True, False, "failed", 1, 3, 1, False, None),
    "crash-mid-run": (False, True, None, 0, 0, 0, False, "The Test Runner unexpectedly exited"),
    "crash-mid-run-killed": (False, True, None, 0, 0, 0, False, None),
    "quiet-passed": (False, False, None, 0, 0, 0, False, None),
    "quiet-failed": (False, False, None, 0, 0, 1, False, None),
    "failed-130": (True, False, "failed", 3, 3, 130, False, None),
    "failed-256": (True, False, "failed", 4, 4, 256, False, None),
    "killed-sigterm": (False, True, None, 0, 0, 0, False, None),
    "some-failed-ci": (True, False, "failed", 1, 3, 1, False, None),
    "some-failed-ci-ansi": (True, False, "failed", 1, 3, 1, False, None),
}


def facts_tuple(f):
    return (f.finished_banner, f.unfinished, f.summary, f.failed_specs, f.total_specs, f.failed_tests, f.cancelled,
            f.error)


def test_every_corpus_case_has_its_facts():
    cases = {c["case"] for c in json.loads((CORPUS / "manifest.json").read_text())}
    assert cases == set(CORPUS_FACTS)


@pytest.mark.parametrize("case", sorted(CORPUS_FACTS))
def test_corpus_log_read_at_once_and_in_small_pieces(case, tmp_path):
    """The same facts whether the log is read whole or as it is written, 37 bytes at a time."""
    assert facts_tuple(LogTail(CORPUS / f"{case}.log").facts()) == CORPUS_FACTS[case]
    assert facts_tuple(read_as_written(CORPUS / f"{case}.log", tmp_path / "B.log", 37)) == CORPUS_FACTS[case]


def read_as_written(source: Path, path: Path, piece: int):
    """The facts of ``source`` copied to ``path`` ``piece`` bytes at a time, read after each piece."""
    data = source.read_bytes()
    path.write_bytes(b"")
    tail = LogTail(path)
    for at in range(0, len(data), piece):
        append_bytes(path, data[at : at + piece])
        facts = tail.facts()
    return facts


def append_bytes(path: Path, data: bytes) -> None:
    with path.open("ab") as fh:
        fh.write(data)


def test_colour_codes_do_not_hide_the_banner_or_the_closing_line(tmp_path):
    plain = LogTail(CORPUS / "some-failed-ci.log").facts()
    coloured = LogTail(CORPUS / "some-failed-ci-ansi.log").facts()
    assert b"\x1b[" in (CORPUS / "some-failed-ci-ansi.log").read_bytes()
    assert facts_tuple(plain) == facts_tuple(coloured)


def test_a_test_title_is_not_taken_for_cypress_speaking(log):
    """Titles are indented behind a mark; Cypress's own lines are not, or come after its banner."""
    tail = LogTail(log)
    append(log, "    ✓ shows that the run was canceled (12ms)\n    ✓ says 2 of 3 failed migrations (9ms)\n"
                "    ✓ prints 3 failing hosts (5ms)\n    1) Can't run because no spec files were found\n")
    facts = tail.facts()
    assert (facts.cancelled, facts.summary, facts.failed_tests, facts.error) == (False, None, 0, None)


# Titles that hold Cypress's own words, each printed where mocha prints it: a passing test, a pending
# test ("  - <title>"), a failed test, a suite. None of them is Cypress speaking.
TITLES = [
    "    ✓ shows (Run Finished) and All specs passed! after a dry run (812ms)",
    "  (Run Finished) and All specs passed!   00:03   6   6   -   -   -",
    "    - the run was canceled by the operator: rollback restores the source VM",
    "  - The run was canceled",
    "    ✓ Failing: 2 disks are reported on the source VM (412ms)",
    "    1) Failing: 3",
    "    2 failing",
    "  2 failing",  # a suite titled so, at the top level: not after mocha's "N passing (T)" line
    "    ✓ -  The run was canceled   00:07   4   4   -   -   - (3ms)",
]


@pytest.mark.parametrize("title", TITLES)
def test_a_title_holding_cypress_words_is_not_cypress_speaking(log, title):
    tail = LogTail(log)
    append(log, "  Migrated users\n" + title + "\n    ✓ keeps disabled accounts disabled (1021ms)\n")
    facts = tail.facts()
    assert (facts.finished_banner, facts.summary, facts.cancelled, facts.failed_tests) == (False, None, False, 0)
    assert facts.unfinished  # the log fixture's (Run Starting): nothing above ended the run


def test_cypress_speaking_in_the_forms_it_prints(log):
    """The same words where Cypress (and mocha's epilogue) print them do count."""
    tail = LogTail(log)
    append(log, "\n\n  3 passing (5s)\n  2 failing\n\n  2 passing (1s)\n  1 pending\n  1 failing\n")
    append(log, "  \u2502 Failing:      2                                                           \u2502\n")
    assert tail.facts().failed_tests == 3
    append(log, "  (Run Finished)\n" + FAILED_ROW)
    append(log, "    -  The run was canceled                     00:07        4        4        -        -        -\n")
    facts = tail.facts()
    assert (facts.finished_banner, facts.summary, facts.cancelled) == (True, "failed", True)
    quiet = log.with_name("quiet.log")
    quiet.write_text("  Exiting with non-zero exit code because the run was canceled.\n")
    assert LogTail(quiet).facts().cancelled


def test_an_error_after_a_finished_run_is_a_later_runs_end(tmp_path):
    """A pass, then a rerun in the same log that cannot find its specs: what ended the log is the error."""
    path = tmp_path / "B.log"
    path.write_bytes((CORPUS / "all-passed.log").read_bytes() + (CORPUS / "no-spec-files.log").read_bytes())
    facts = LogTail(path).facts()
    assert (facts.finished_banner, facts.summary, facts.error) == (False, None,
                                                                    "Can't run because no spec files were found")


def test_failed_tests_of_an_earlier_cypress_run_in_the_same_log_are_kept(log):
    tail = LogTail(log)
    append(log, "  2 failing\n  (Run Finished)\n    ✖  1 of 1 failed (100%)   00:03   4   2   2   -   -\n")
    append(log, "  (Run Starting)\n  (Run Finished)\n    ✔  All specs passed!   00:03   4   4   -   -   -\n")
    facts = tail.facts()
    assert (facts.summary, facts.failed_tests, facts.unfinished) == ("passed", 2, False)


def test_a_later_run_starting_clears_what_ended_the_earlier_one(log):
    tail = LogTail(log)
    append(log, "Cypress failed to verify that your server is running.\n")
    assert tail.facts().error
    append(log, "  (Run Starting)\n")
    facts = tail.facts()
    assert (facts.error, facts.unfinished, facts.finished_banner) == (None, True, False)


def test_a_count_on_an_unfinished_line_is_counted_once(log):
    tail = LogTail(log)
    append(log, "  0 passing (3s)\n  3 failing")
    tail.facts()
    append(log, "\n")
    assert tail.facts().failed_tests == 3


def test_the_outcome_files_are_read_before_the_log(tmp_path, monkeypatch):
    """A launcher writes the log, then .exit: an exit code is never weighed against an older read of the log."""
    layout = RunLayout("B", tmp_path / "log", tmp_path / "reports")
    run = layout.run()
    write(run.log, b"  (Run Starting)\n", mtime=time.time())
    reader = EvidenceReader(layout, False)
    real = evidence.read_outcome

    def launcher_finishes_meanwhile(path, *args):
        if path == run.exit and not path.exists():
            append(run.log, "  (Run Finished)\n" + PASSED_ROW)
            run.exit.write_text("0\n")
        return real(path, *args)

    monkeypatch.setattr(evidence, "read_outcome", launcher_finishes_meanwhile)
    snap = reader.snapshot()
    assert snap.parent.exit is not None and snap.parent.log.summary == "passed"


# --- ReportScanner ------------------------------------------------------------------------------------


def report_bytes(failed: bool, spec: str = "a.cy.js") -> bytes:
    return json.dumps(mochawesome_report(spec, "suite", ["one", "two"], failed), indent=2).encode()


def write(path: Path, data: bytes, mtime: float = OLD) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))
    return path


def settle(*folders: Path) -> None:
    """Give folders an old mtime, as a run's folders have long after they were created."""
    for folder in folders:
        os.utime(folder, (OLD, OLD))


def failures(reports) -> List[int]:
    return [r.result.failed for r in reports]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "reports" / "B"
    for i in range(3):
        write(folder / f"mochawesome_{i:03d}.json", report_bytes(False, f"s{i}.cy.js"))
    settle(folder)
    return folder


def test_reports_are_found_recursively_and_in_path_order(root):
    write(root / "sub" / "junit.xml", b"<testsuites><testsuite tests='1'><testcase name='t'/></testsuite></testsuites>")
    write(root / "notes.txt", b"not a report")
    settle(root / "sub", root)
    reports = ReportScanner(root).scan(OLD + 10)
    assert [Path(r.result.path).name for r in reports] == [f"mochawesome_{i:03d}.json" for i in range(3)] + [
        "junit.xml"]
    assert {r.result.status for r in reports} == {"ok"}


def test_an_unchanged_poll_returns_the_same_tuple(root):
    scanner = ReportScanner(root)
    first = scanner.scan(time.time())
    assert scanner.scan(time.time() + 1) is first


def test_an_added_report_is_seen_on_the_next_poll(root):
    scanner = ReportScanner(root)
    now = time.time()
    assert len(scanner.scan(now)) == 3
    write(root / "deeper" / "mochawesome_009.json", report_bytes(True))  # new folder, new file
    reports = scanner.scan(now + 1)
    assert len(reports) == 4 and sum(failures(reports)) == 1


def test_removed_reports_and_folders_disappear(root):
    write(root / "sub" / "m.json", report_bytes(True))
    scanner = ReportScanner(root)
    now = time.time()
    assert len(scanner.scan(now)) == 4
    (root / "mochawesome_000.json").unlink()
    (root / "sub" / "m.json").unlink()
    (root / "sub").rmdir()
    assert [Path(r.result.path).name for r in scanner.scan(now + 1)] == ["mochawesome_001.json",
                                                                         "mochawesome_002.json"]


def test_a_young_report_rewritten_in_place_is_seen_on_the_next_poll(root):
    now = time.time()
    young = write(root / "mochawesome_003.json", b'{"stats": {', mtime=now)  # half-written
    scanner = ReportScanner(root)
    assert [r.result.status for r in scanner.scan(now)][-1] == "incomplete"
    young.write_bytes(report_bytes(True))
    assert failures(scanner.scan(now + 1))[-1] == 1


def test_an_old_report_rewritten_in_place_is_seen_within_the_sweep(root):
    scanner = ReportScanner(root)
    now = time.time()
    scanner.scan(now)
    write(root / "mochawesome_001.json", report_bytes(True, "s1.cy.js"), mtime=OLD + 1)  # old mtime: not young
    seen_at = None
    for step in range(1, int(evidence.SWEEP_SECONDS) + 2):
        if sum(failures(scanner.scan(now + step))) == 1:
            seen_at = step
            break
    assert seen_at is not None and seen_at <= evidence.SWEEP_SECONDS + 1


def test_a_quiet_poll_does_not_stat_every_report(tmp_path, monkeypatch):
    folder = tmp_path / "many"
    data = report_bytes(False)
    for i in range(600):
        write(folder / f"r{i:04d}.json", data)
    settle(folder)
    scanner = ReportScanner(folder)
    now = time.time()
    scanner.scan(now)
    calls = []
    real_stat = os.stat
    monkeypatch.setattr(evidence.os, "stat", lambda *a, **k: calls.append(a[0]) or real_stat(*a, **k))
    scanner.scan(now + 1)
    assert len(calls) <= 1 + 600 / evidence.SWEEP_SECONDS + 1  # the folder, and this poll's share of the sweep
    calls.clear()
    scanner.scan(now + 2, thorough=True)
    assert len(calls) == 601


def many_reports(folder: Path, count: int) -> Path:
    """``count`` small reports with old mtimes, written with os calls (10,000 in well under a second)."""
    folder.mkdir(parents=True)
    data = report_bytes(False)
    for i in range(count):
        fd = os.open(folder / f"r{i:05d}.json", os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, data)
        os.close(fd)
        os.utime(folder / f"r{i:05d}.json", (OLD, OLD))
    settle(folder)
    return folder


def counting_stats(monkeypatch) -> List:
    calls: List = []
    real_stat = os.stat
    monkeypatch.setattr(evidence.os, "stat", lambda *a, **k: calls.append(a[0]) or real_stat(*a, **k))
    return calls


def test_a_look_after_a_long_wait_stats_a_bounded_slice_of_10000_reports(tmp_path, monkeypatch):
    folder = many_reports(tmp_path / "many", 10_000)
    scanner = ReportScanner(folder)
    now = time.time()
    assert len(scanner.scan(now)) == 10_000
    calls = counting_stats(monkeypatch)
    for look in range(1, 6):  # looks a safety wait apart (file events: nothing changed)
        calls.clear()
        scanner.scan(now + 60 * look)
        assert len(calls) == 1 + evidence.SWEEP_PER_LOOK  # the folder, and this look's slice of the sweep
    calls.clear()
    scanner.scan(now + 10 * 3600)  # however long the wait
    assert len(calls) == 1 + evidence.SWEEP_PER_LOOK
    calls.clear()
    scanner.scan(now + 10 * 3600 + 1, thorough=True)  # finish evidence is new: every report
    assert len(calls) == 1 + 10_000


def test_reports_that_were_young_at_the_last_look_are_not_all_stat_ed_once_old(tmp_path, monkeypatch):
    folder = many_reports(tmp_path / "many", 10_000)
    now = time.time()
    for i in range(10_000):
        os.utime(folder / f"r{i:05d}.json", (now - 1, now - 1))  # just written: young
    scanner = ReportScanner(folder)
    scanner.scan(now)
    calls = counting_stats(monkeypatch)
    scanner.scan(now + 5)
    assert len(calls) == 1 + 10_000  # young: each stat-ed on every poll (a reporter writes in bursts)
    calls.clear()
    scanner.scan(now + 65)  # the next look, a safety wait later: all are old by their last stat's mtime
    assert len(calls) == 1 + evidence.SWEEP_PER_LOOK
    write(folder / "r00042.json", report_bytes(True), mtime=now + 70)  # young again: one row, not all
    scanner.touch(str(folder), "r00042.json")
    scanner.scan(now + 71)
    calls.clear()
    assert sum(failures(scanner.scan(now + 72))) == 1
    assert len(calls) == 1 + 1 + evidence.SWEEP_PER_LOOK  # the folder, the young one, the slice


def test_an_old_report_rewritten_in_place_without_an_event_is_seen_within_the_sweep_of_slices(tmp_path):
    count = 1000
    folder = many_reports(tmp_path / "many", count)
    scanner = ReportScanner(folder)
    now = time.time()
    scanner.scan(now)
    write(folder / "r00500.json", report_bytes(True), mtime=OLD + 1)  # in place, old mtime: not young
    looks = -(-count // evidence.SWEEP_PER_LOOK)  # the documented bound: one look per SWEEP_PER_LOOK reports
    seen_at = next((look for look in range(1, looks + 2) if sum(failures(scanner.scan(now + 60 * look)))), None)
    assert seen_at is not None and seen_at <= looks


def test_a_report_a_file_event_named_is_seen_on_the_next_look(tmp_path, monkeypatch):
    folder = many_reports(tmp_path / "many", 10_000)
    scanner = ReportScanner(folder)
    now = time.time()
    scanner.scan(now)
    monkeypatch.setattr(evidence, "SWEEP_PER_LOOK", 0)  # the sweep alone would take many looks: not it
    write(folder / "r07777.json", report_bytes(True), mtime=OLD + 1)
    scanner.touch(str(folder), "r07777.json")
    scanner.touch(str(folder), "not-a-report.txt")  # a name the scanner does not know: ignored
    calls = counting_stats(monkeypatch)
    assert sum(failures(scanner.scan(now + 60))) == 1
    assert len(calls) == 1 + 1  # the folder and the named file, no other
    calls.clear()
    scanner.scan(now + 120)
    assert len(calls) == 1  # the name is stat-ed once, not on every look after


def test_the_reader_hands_named_reports_to_the_scope_whose_folder_holds_them(tmp_path, monkeypatch):
    layout = RunLayout("B", tmp_path / "log", tmp_path / "reports")
    folder = layout.run().reports
    write(folder / "deep" / "a.json", report_bytes(False), mtime=OLD)
    settle(folder / "deep", folder)
    reader = EvidenceReader(layout, False)
    reader.snapshot()
    monkeypatch.setattr(evidence, "SWEEP_PER_LOOK", 0)
    write(folder / "deep" / "a.json", report_bytes(True, "x.cy.js"), mtime=OLD + 1)
    reader.reports_touched([str(tmp_path / "elsewhere" / "a.json")])  # not a report folder of this run
    assert sum(failures(reader.snapshot().parent.reports)) == 0
    reader.reports_touched([str(folder / "deep" / "a.json")])
    assert sum(failures(reader.snapshot().parent.reports)) == 1


def test_a_report_parsed_again_only_to_be_sure_keeps_the_same_set(tmp_path):
    folder = tmp_path / "r"
    now = time.time()
    write(folder / "a.json", report_bytes(False), mtime=now)  # parsed within RACY_SECONDS of its mtime
    scanner = ReportScanner(folder)
    first = scanner.scan(now)
    assert scanner.scan(now + 1) is first  # parsed again (racy), found the same: no new set to walk
    write(folder / "a.json", report_bytes(True), mtime=now)  # same mtime, new content: a new set
    assert sum(failures(scanner.scan(now + 1.5))) == 1


def test_a_report_replaced_by_rename_is_seen_on_the_next_poll(root):
    scanner = ReportScanner(root)
    now = time.time()
    scanner.scan(now)
    tmp = write(root.parent / "tmp.json", report_bytes(True, "s2.cy.js"))
    os.replace(tmp, root / "mochawesome_002.json")  # new inode, old mtime, same name
    assert failures(scanner.scan(now + 1)) == [0, 0, 1]


def test_a_file_added_in_the_same_timestamp_tick_as_the_listing_is_still_found(tmp_path):
    folder = tmp_path / "racy"
    write(folder / "a.json", report_bytes(False))
    scanner = ReportScanner(folder)
    now = time.time()
    assert len(scanner.scan(now)) == 1
    mtime_ns = folder.stat().st_mtime_ns  # recent: listed within RACY_SECONDS of its mtime
    write(folder / "b.json", report_bytes(True))
    os.utime(folder, ns=(mtime_ns, mtime_ns))  # as if created within the same tick: mtime unchanged
    assert len(scanner.scan(now + 1)) == 2


def test_a_same_size_rewrite_within_the_same_tick_is_parsed_again(tmp_path):
    folder = tmp_path / "same"
    path = write(folder / "a.json", report_bytes(False), mtime=time.time())
    scanner = ReportScanner(folder)
    now = time.time()
    assert failures(scanner.scan(now)) == [0]
    st = path.stat()
    changed = report_bytes(False).replace(b'"failures": 0', b'"failures": 1')
    assert len(changed) == st.st_size
    path.write_bytes(changed)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime, same inode
    assert failures(scanner.scan(now + 1)) == [1]


def test_reports_dated_in_the_future_are_not_parsed_on_every_poll(tmp_path, monkeypatch):
    folder = tmp_path / "skewed"
    future = time.time() + 86400  # copied from a machine whose clock is a day ahead
    for i in range(20):
        write(folder / f"r{i:02d}.json", report_bytes(False), mtime=future)
    os.utime(folder, (future, future))
    scanner = ReportScanner(folder)
    now = time.time()
    scanner.scan(now)
    parsed = []
    real = evidence.parse_file
    monkeypatch.setattr(evidence, "parse_file", lambda *a: parsed.append(a[0]) or real(*a))
    calls = []
    real_scandir = os.scandir
    monkeypatch.setattr(evidence.os, "scandir", lambda *a: calls.append(a[0]) or real_scandir(*a))
    for step in range(1, 4):
        scanner.scan(now + step)
    assert parsed == [] and calls == []


def test_symlinks_are_not_followed(root, tmp_path):
    outside = write(tmp_path / "elsewhere" / "x.json", report_bytes(True))
    (root / "link.json").symlink_to(outside)
    (root / "linkdir").symlink_to(outside.parent)
    assert len(ReportScanner(root).scan(time.time())) == 3


def test_a_missing_folder_has_no_reports_until_it_appears(tmp_path):
    folder = tmp_path / "later"
    scanner = ReportScanner(folder)
    assert scanner.scan(time.time()) == ()
    write(folder / "a.json", report_bytes(False))
    assert len(scanner.scan(time.time() + 1)) == 1
    for f in folder.iterdir():
        f.unlink()
    folder.rmdir()
    assert scanner.scan(time.time() + 2) == ()


def test_skip_dirs_leaves_top_level_folders_out(root):
    write(root / "linux" / "m.json", report_bytes(True))
    assert len(ReportScanner(root, skip_dirs=("linux",)).scan(time.time())) == 3


# --- a FIFO where a file belongs: read as a problem, never a blocked watcher --------------------------------


def test_a_fifo_as_outcome_file_is_unreadable_evidence(tmp_path, no_hang):
    os.mkfifo(tmp_path / "B.exit")
    outcome = evidence.read_outcome(tmp_path / "B.exit")
    assert outcome is not None and outcome.problem == "unreadable: not a regular file"


def test_a_fifo_as_log_is_no_log(tmp_path, no_hang):
    os.mkfifo(tmp_path / "B.log")
    assert LogTail(tmp_path / "B.log").facts() is None


def test_a_fifo_among_reports_is_skipped(root, no_hang):
    os.mkfifo(root / "zz.json")
    assert len(ReportScanner(root).scan(time.time())) == 3
    assert evidence.parse_file(str(root / "zz.json"), 0).status == "invalid"


# --- EvidenceReader: finish evidence makes the next poll thorough ------------------------------------------


class StepClock:
    """Both clocks at one value that a test moves by hand."""

    def __init__(self, t: float):
        self.t = t

    def wall(self) -> float:
        return self.t

    def mono(self) -> float:
        return self.t

    def step(self, seconds: float) -> None:
        self.t += seconds


def test_fresh_finish_evidence_rereads_every_report(tmp_path):
    layout = RunLayout("B", tmp_path / "log", tmp_path / "reports")
    run = layout.run()
    for i in range(200):
        write(run.reports / f"m{i:03d}.json", report_bytes(False, f"s{i}.cy.js"))
    settle(run.reports)
    write(run.log, b"  (Run Starting)\n")
    clock = StepClock(time.time())
    reader = EvidenceReader(layout, False, clock)
    reader.snapshot()
    write(run.reports / "m150.json", report_bytes(True, "s150.cy.js"), mtime=OLD + 1)
    run.exit.write_text("0\n")  # finish evidence, just written
    clock.step(1)
    snap = reader.snapshot()
    assert sum(r.result.failed for r in snap.parent.reports) == 1


def test_categorized_groups_keep_their_reports_apart(tmp_path):
    layout = RunLayout("B", tmp_path / "log", tmp_path / "reports")
    write(layout.group("linux").log, b"x\n", mtime=time.time() - 20)
    write(layout.group("windows").log, b"x\n", mtime=time.time() - 10)
    write(layout.group("linux").reports / "m.json", report_bytes(False))
    write(layout.group("windows").reports / "m.json", report_bytes(True))
    reader = EvidenceReader(layout, True)
    snap = reader.snapshot()
    assert reader.group_order == ("linux", "windows")
    assert snap.parent.reports == ()
    assert [failures(g.reports) for g in snap.groups] == [[0], [1]]


def test_groups_are_found_where_the_templates_put_their_files(tmp_path):
    """A group whose log is <log_dir>/B/<group>/cypress.log shows up once that file exists."""
    from atvm_watcher.layout import Templates

    layout = RunLayout("B", tmp_path / "log", tmp_path / "reports",
                       Templates(group_log="{log_dir}/{build}/{group}/cypress.log",
                                 group_reports="{report_dir}/groups/{build}/{group}",
                                 status="{log_dir}/{build}/run.status"))
    (tmp_path / "log" / "B" / "empty-folder").mkdir(parents=True)
    write(layout.run().status, b"", mtime=time.time())  # the run's own file in the groups' folder
    write(layout.group("linux").log, b"x\n", mtime=time.time() - 20)
    write(layout.group("windows").reports / "m.json", report_bytes(True), mtime=time.time() - 10)
    reader = EvidenceReader(layout, True)
    snap = reader.snapshot()
    assert reader.group_order == ("linux", "windows")
    assert [failures(g.reports) for g in snap.groups] == [[], [1]]


# --- flaky tests: a failed attempt, then a pass (Cypress's retries) ------------------------------------


def test_flaky_tests_are_the_retried_ones_that_passed():
    facts = LogTail(CORPUS / "retries-flaky-pass.log").facts()
    assert facts.flaky == ("keeps issue counts per project", "has the same number of active accounts")
    assert facts.flaky_count == 2
    failed = LogTail(CORPUS / "retries-then-fail.log").facts()  # retried, then failed: not flaky
    assert failed.flaky == () and failed.flaky_count == 0


def test_flaky_tests_are_found_when_the_log_is_read_in_small_pieces(tmp_path):
    facts = read_as_written(CORPUS / "retries-flaky-pass.log", tmp_path / "B.log", 29)
    assert facts.flaky_count == 2 and len(facts.flaky) == 2


def test_flaky_titles_in_colour_and_memory_stays_bounded(log):
    green, grey, reset = "\x1b[32m", "\x1b[90m", "\x1b[0m"
    lines = [f"    (Attempt 1 of 2) t{i}\n    {green}✓{reset}{grey} t{i}{reset}{grey} (12ms){reset}\n"
             for i in range(evidence.MAX_FLAKY + 10)]
    lines += [f"    (Attempt 1 of 2) never resolved {i}\n" for i in range(evidence.MAX_RETRIED * 3)]
    append(log, "".join(lines))
    tail = LogTail(log)
    facts = tail.facts()
    assert facts.flaky[:2] == ("t0", "t1") and len(facts.flaky) == evidence.MAX_FLAKY
    assert facts.flaky_count == evidence.MAX_FLAKY + 10
    assert len(tail.retried) == evidence.MAX_RETRIED
    append(log, "    (Attempt 1 of 2) " + "x" * 100_000 + "\n    ✓ " + "x" * 100_000 + "\n")
    assert all(len(t) <= evidence.MAX_TITLE_BYTES for t in tail.facts().flaky)
