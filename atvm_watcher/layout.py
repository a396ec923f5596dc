"""Where a run leaves its evidence: the ONE place that knows the file layout.

Every path is a template the operator may set (settings.py names the settings); the fields are
``{log_dir}``, ``{report_dir}``, ``{build}`` and, for a group of a categorized run, ``{group}``.
The default layout for build B (README.md lists the settings that move it):

    $ATVM_LOG_DIR/B.log  B.status  B.exit  B.pid     the run (or the categorized parent)
    $ATVM_REPORT_DIR/B/                              its reports
    $ATVM_LOG_DIR/B/g.log  g.status  g.exit          group g of a categorized run
    $ATVM_REPORT_DIR/B/g/                            group g's reports

Groups are discovered where their files would be: the folder holding the path component that
carries ``{group}`` is listed, and each entry matching that component names a group (by default files
``g.log``/``g.status``/``g.exit`` in ``$ATVM_LOG_DIR/B/`` and folders ``g/`` in ``$ATVM_REPORT_DIR/B/``).

The reader (evidence.py), the launch wrapper, the development tools and the tests ask this module for
every path, so that matching a controller whose launcher writes elsewhere is a matter of settings.
Only paths are computed here: no file is read or written.
"""

from __future__ import annotations

import posixpath
import re
import string
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Dict, List, Optional, Pattern, Tuple

FOLDER_FIELDS = ("log_dir", "report_dir")
RUN_FIELDS = FOLDER_FIELDS + ("build",)
GROUP_MARK = "\0group\0"  # stands for the group while a group template is split at it (no path holds a NUL)
GROUP_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9._-]*"  # buildname.GROUP_NAME_RE


def build_token(build: str) -> Pattern[str]:
    """The build name where it stands as a name of its own (not inside a longer one, e.g. B in B2)."""
    return re.compile(r"(?<![A-Za-z0-9])" + re.escape(build) + r"(?![A-Za-z0-9])")


@dataclass(frozen=True)
class ScopePaths:
    """The files of one run or sub-run."""

    log: Path
    status: Path
    exit: Path
    reports: Path  # a folder, read recursively


@dataclass(frozen=True)
class Templates:
    """The path templates of the evidence layout (the defaults are the contract's layout)."""

    log: str = "{log_dir}/{build}.log"
    status: str = "{log_dir}/{build}.status"
    exit: str = "{log_dir}/{build}.exit"
    pid: str = "{log_dir}/{build}.pid"
    reports: str = "{report_dir}/{build}"
    group_log: str = "{log_dir}/{build}/{group}.log"
    group_status: str = "{log_dir}/{build}/{group}.status"
    group_exit: str = "{log_dir}/{build}/{group}.exit"
    group_reports: str = "{report_dir}/{build}/{group}"

    def items(self) -> List[Tuple[str, str]]:
        return [(f.name, getattr(self, f.name)) for f in fields(self)]


def is_group_template(name: str) -> bool:
    return name.startswith("group_")


def check_template(value: str, group: bool) -> Optional[str]:
    """Why this template is refused, or None.

    A template starts with ``{log_dir}/``, ``{report_dir}/`` or ``/``, names the build (and, for a group,
    the group exactly once), holds no other field and no ``..``: so whatever a (validated) build or group
    name is, the path stays inside the folder the template names.
    """
    if ".." in value:
        return "contains '..': a path could leave its folder"
    try:
        parsed = list(string.Formatter().parse(value))
    except ValueError as exc:
        return f"is not a valid template ({exc}); fields are written {{build}}, a brace {{{{ or }}}}"
    allowed = RUN_FIELDS + (("group",) if group else ())
    names = []
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in allowed or spec or conversion:
            return f"has the field {{{name}}}{spec or ''}; the fields are {', '.join('{' + a + '}' for a in allowed)}"
        names.append(name)
    if "build" not in names:
        return "lacks {build}: every build would share the same path"
    if group and names.count("group") != 1:
        return "must hold {group} exactly once: every group needs its own path"
    starts_with_folder = parsed[0][0] == "" and names[0] in FOLDER_FIELDS
    if starts_with_folder and not value[len(names[0]) + 2 :].startswith("/"):
        return f"must go on with '/' after {{{names[0]}}}: a path could leave its folder"
    if not starts_with_folder and not value.startswith("/"):
        return "must start with {log_dir}/, {report_dir}/ or an absolute path"
    if any(n in FOLDER_FIELDS for n in names[1 if starts_with_folder else 0 :]):
        return "may hold {log_dir} or {report_dir} only at its very start"
    if value.endswith("/"):
        return "must not end with '/'"
    if group:
        return _group_folder_problem(parsed)
    return None


def _group_folder_problem(parsed) -> Optional[str]:
    """Why a group template could take another build's files for a group, or None.

    Groups are found by listing the folder that holds the path component with ``{group}`` (see
    group_folders). That folder must be this build's alone, a ``{build}`` component of its own, and the
    ``{group}`` component must not hold ``{build}`` too: with ``{log_dir}/{build}-{group}.log`` the file
    ``e2e-rhel9-fc.log`` of build ``e2e-rhel9-fc`` would be read as group ``fc`` of build ``e2e-rhel9``.
    """
    marked = "".join(literal + ("" if name is None else GROUP_MARK if name == "group" else f"\0{name}\0")
                     for literal, name, _, _ in parsed)
    parts = marked.split("/")
    at = next(i for i, part in enumerate(parts) if GROUP_MARK in part)
    example = "e.g. {log_dir}/{build}/{group}.log"
    if "\0build\0" in parts[at]:
        return ("has {group} and {build} in one path component: another build's files (build B-x's, for group x "
                f"of build B) would be taken for a group; give {{group}} a path component of its own, {example}")
    if "\0build\0" not in parts[:at]:
        return ("must have {group} inside a folder that is a {build} path component of its own: groups are found by "
                f"listing that folder, which must hold this build's files alone, {example}")
    return None


def same_path(templates: Templates) -> Optional[Tuple[str, str]]:
    """Two templates (Templates field names) that name the same path for every build, or None.

    Each must have a path of its own: an exit file that is the log (ATVM_EXIT_FILE={log_dir}/{build}.log)
    would be overwritten by the wrapper and read as an exit code by the watcher.
    """
    seen: Dict[str, str] = {}
    for key, template in templates.items():
        path = posixpath.normpath(template.format(**{name: f"\0{name}\0" for name in RUN_FIELDS + ("group",)}))
        if path in seen:
            return seen[path], key
        seen[path] = key
    return None


@dataclass(frozen=True)
class GroupFolder:
    """A folder in which a group of a categorized run shows up as an entry named after it.

    An entry ``<prefix><group><suffix>`` (one of ``suffixes``) names a group: a file when ``holds_files``,
    else a folder, in which the group's file is at ``rest`` when the template goes on below the group.
    ``exclude`` holds the names of the run's own files in this folder: never a group.
    """

    path: Path
    holds_files: bool
    prefix: str = ""
    suffixes: Tuple[str, ...] = ("",)
    rest: Tuple[str, ...] = ()
    exclude: Tuple[str, ...] = ()

    def group_of(self, name: str) -> Optional[str]:
        """The group an entry of this folder names (not yet checked as a group name), or None."""
        if name in self.exclude or not name.startswith(self.prefix):
            return None
        for suffix in self.suffixes:
            if name.endswith(suffix) and len(name) >= len(self.prefix) + len(suffix):
                return name[len(self.prefix) : len(name) - len(suffix)]
        return None


@dataclass(frozen=True)
class RunLayout:
    """Every path of one build's evidence, from the build name, the two folders and the templates."""

    build: str
    log_dir: Path
    report_dir: Path
    templates: Templates = Templates()

    def _path(self, template: str, group: str = "") -> Path:
        return Path(template.format(log_dir=self.log_dir, report_dir=self.report_dir, build=self.build, group=group))

    def run(self) -> ScopePaths:
        """The run itself, or the parent of a categorized run."""
        t = self.templates
        return ScopePaths(log=self._path(t.log), status=self._path(t.status), exit=self._path(t.exit),
                          reports=self._path(t.reports))

    def pid_file(self) -> Path:
        """The launcher's pid, when it writes one (one per build: the parent's)."""
        return self._path(self.templates.pid)

    def group(self, group: str) -> ScopePaths:
        """Group ``group`` of a categorized run (the watcher only asks for names check_group_name accepts)."""
        t = self.templates
        return ScopePaths(log=self._path(t.group_log, group), status=self._path(t.group_status, group),
                          exit=self._path(t.group_exit, group), reports=self._path(t.group_reports, group))

    def group_folders(self) -> Tuple[GroupFolder, ...]:
        """Where the groups of a categorized run appear, and by which entries (one per distinct place)."""
        t = self.templates
        run = self.run()
        own = (run.log, run.status, run.exit, run.reports, self.pid_file())
        found: Dict[Tuple[Path, str, bool, Tuple[str, ...]], List[str]] = {}
        for template, is_file in ((t.group_log, True), (t.group_status, True), (t.group_exit, True),
                                  (t.group_reports, False)):
            parts = self._path(template, GROUP_MARK).parts
            at = next(i for i, part in enumerate(parts) if GROUP_MARK in part)
            prefix, _, suffix = parts[at].partition(GROUP_MARK)
            rest = parts[at + 1 :]
            suffixes = found.setdefault((Path(*parts[:at]), prefix, is_file and not rest, rest), [])
            if suffix not in suffixes:
                suffixes.append(suffix)
        return tuple(GroupFolder(folder, files, prefix, tuple(suffixes), rest,
                                 tuple(p.name for p in own if p.parent == folder))
                     for (folder, prefix, files, rest), suffixes in found.items())

    # --- the other way round: which template a file found on disk matches (inspect --discover) -------

    def matches(self, path: Path) -> Tuple[str, ...]:
        """The templates (Templates field names) under which this file would be read."""
        found = []
        for key, template in self.templates.items():
            pattern = self._pattern(template)
            folder = key in ("reports", "group_reports")
            text = str(path)
            if pattern.fullmatch(text) or folder and any(pattern.fullmatch(str(p)) for p in path.parents):
                found.append(key)
        return tuple(found)

    def _pattern(self, template: str) -> Pattern[str]:
        out = []
        for literal, name, _, _ in string.Formatter().parse(template):
            out.append(re.escape(literal))
            if name == "group":
                out.append(GROUP_PATTERN)
            elif name is not None:
                out.append(re.escape(str({"log_dir": self.log_dir, "report_dir": self.report_dir,
                                          "build": self.build}[name])))
        return re.compile("".join(out))

    def template_for(self, path: Path) -> Optional[str]:
        """A template naming this path for any build (its folder and build name made fields), or None."""
        prefix, text = "", str(path)
        for name, folder in sorted((("log_dir", self.log_dir), ("report_dir", self.report_dir)),
                                   key=lambda item: -len(str(item[1]))):
            if path != folder and path.is_relative_to(folder):
                prefix, text = "{" + name + "}", "/" + str(path.relative_to(folder))
                break
        template = prefix + build_token(self.build).sub("{build}", text.replace("{", "{{").replace("}", "}}"))
        return template if check_template(template, group=False) is None else None
