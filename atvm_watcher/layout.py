"""Where a run leaves its evidence: the ONE place that knows the file layout.

Default layout for build B (README.md lists it with the settings that move it):

    $ATVM_LOG_DIR/B.log  B.status  B.exit  B.pid     the run (or the categorized parent)
    $ATVM_REPORT_DIR/B/                              its reports
    $ATVM_LOG_DIR/B/g.log  g.status  g.exit          group g of a categorized run
    $ATVM_REPORT_DIR/B/g/                            group g's reports

Groups are discovered where they appear: files ``g.log``/``g.status``/``g.exit`` in
``$ATVM_LOG_DIR/B/`` and folders ``g/`` in ``$ATVM_REPORT_DIR/B/``.

The reader (evidence.py), the simulated launcher and the tests ask this module for every path, so
that matching a controller whose launcher writes elsewhere changes this file (and the settings that
feed it) alone. Only paths are computed here: no file is read or written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

GROUP_FILE_SUFFIXES = (".log", ".status", ".exit")  # the files by which a group shows up in the log folder


@dataclass(frozen=True)
class ScopePaths:
    """The files of one run or sub-run."""

    log: Path
    status: Path
    exit: Path
    reports: Path  # a folder, read recursively


@dataclass(frozen=True)
class GroupFolder:
    """A folder in which a group of a categorized run shows up as an entry named after it.

    With ``file_suffixes``, the entries are files ``<group><suffix>``; without, folders ``<group>``.
    """

    path: Path
    file_suffixes: Tuple[str, ...] = ()

    @property
    def holds_files(self) -> bool:
        return bool(self.file_suffixes)

    def group_of(self, name: str) -> Optional[str]:
        """The group an entry of this folder names (not yet checked as a group name), or None."""
        if not self.holds_files:
            return name
        for suffix in self.file_suffixes:
            if name.endswith(suffix):
                return name[: -len(suffix)]
        return None


@dataclass(frozen=True)
class RunLayout:
    """Every path of one build's evidence, from the build name and the two folders of the settings."""

    build: str
    log_dir: Path
    report_dir: Path

    def run(self) -> ScopePaths:
        """The run itself, or the parent of a categorized run."""
        return ScopePaths(log=self.log_dir / f"{self.build}.log", status=self.log_dir / f"{self.build}.status",
                          exit=self.log_dir / f"{self.build}.exit", reports=self.report_dir / self.build)

    def pid_file(self) -> Path:
        """The launcher's pid, when it writes one (one per build: the parent's)."""
        return self.log_dir / f"{self.build}.pid"

    def group(self, group: str) -> ScopePaths:
        """Group ``group`` of a categorized run (the watcher only asks for names check_group_name accepts)."""
        logs = self.log_dir / self.build
        return ScopePaths(log=logs / f"{group}.log", status=logs / f"{group}.status", exit=logs / f"{group}.exit",
                          reports=self.report_dir / self.build / group)

    def group_folders(self) -> Tuple[GroupFolder, ...]:
        """Where the groups of a categorized run appear, and by which entries."""
        return (GroupFolder(self.log_dir / self.build, GROUP_FILE_SUFFIXES), GroupFolder(self.report_dir / self.build))
