"""The run layout: every evidence path of a build, as CONTRACT.md ("Where the run's evidence is") gives it."""

from __future__ import annotations

from pathlib import Path

from atvm_watcher.layout import RunLayout

LOGS, REPORTS = Path("/l"), Path("/r")
LAYOUT = RunLayout("B", LOGS, REPORTS)


def test_the_run_and_the_categorized_parent():
    run = LAYOUT.run()
    assert (run.log, run.status, run.exit, run.reports) == (LOGS / "B.log", LOGS / "B.status", LOGS / "B.exit",
                                                            REPORTS / "B")
    assert LAYOUT.pid_file() == LOGS / "B.pid"


def test_a_group():
    g = LAYOUT.group("linux")
    assert (g.log, g.status, g.exit, g.reports) == (LOGS / "B" / "linux.log", LOGS / "B" / "linux.status",
                                                    LOGS / "B" / "linux.exit", REPORTS / "B" / "linux")


def test_groups_are_discovered_where_their_files_appear():
    files, reports = LAYOUT.group_folders()
    assert (files.path, files.holds_files, reports.path, reports.holds_files) == (LOGS / "B", True, REPORTS / "B",
                                                                                  False)
    assert [files.group_of(n) for n in ("linux.log", "linux.status", "w.2.exit", "notes.txt", ".log")] == [
        "linux", "linux", "w.2", None, ""]
    assert reports.group_of("windows") == "windows"


def test_every_discovered_group_name_gives_back_the_same_group_paths():
    files, _ = LAYOUT.group_folders()
    g = LAYOUT.group("linux")
    for path in (g.log, g.status, g.exit):
        assert path.parent == files.path and files.group_of(path.name) == "linux"
