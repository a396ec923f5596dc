"""The run layout: every evidence path of a build, as CONTRACT.md ("Where the run's evidence is") gives it by
default, and as the operator's templates place it."""

from __future__ import annotations

from pathlib import Path

import pytest

from atvm_watcher.layout import RunLayout, Templates, check_template
from atvm_watcher.settings import ConfigError, load

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


# --- the layout is the operator's: every path is a template setting ----------------------------------

CUSTOM = Templates(log="/var/log/atvm/{build}/cypress.log", status="{log_dir}/{build}/outcome.status",
                   exit="{log_dir}/{build}/outcome.exit", pid="{log_dir}/run-{build}.pid",
                   reports="{report_dir}/mochawesome/{build}", group_log="{log_dir}/{build}/{group}/cypress.log",
                   group_status="{log_dir}/{build}/{group}.status", group_exit="{log_dir}/{build}/{group}.exit",
                   group_reports="{report_dir}/groups/{build}/run-{group}")
CUSTOM_LAYOUT = RunLayout("B", LOGS, REPORTS, CUSTOM)


def test_the_default_templates_are_the_contract_layout():
    assert RunLayout("B", LOGS, REPORTS, Templates()) == LAYOUT


def test_custom_templates_place_every_file():
    run, g = CUSTOM_LAYOUT.run(), CUSTOM_LAYOUT.group("linux")
    assert (run.log, run.status, run.exit, run.reports) == (
        Path("/var/log/atvm/B/cypress.log"), LOGS / "B" / "outcome.status", LOGS / "B" / "outcome.exit",
        REPORTS / "mochawesome" / "B")
    assert CUSTOM_LAYOUT.pid_file() == LOGS / "run-B.pid"
    assert (g.log, g.status, g.exit, g.reports) == (LOGS / "B" / "linux" / "cypress.log", LOGS / "B" / "linux.status",
                                                    LOGS / "B" / "linux.exit", REPORTS / "groups" / "B" / "run-linux")


def test_custom_groups_are_discovered_where_their_files_would_be():
    folders = {(f.path, f.holds_files, f.prefix, f.suffixes, f.rest) for f in CUSTOM_LAYOUT.group_folders()}
    assert folders == {(LOGS / "B", False, "", ("",), ("cypress.log",)),
                       (LOGS / "B", True, "", (".status", ".exit"), ()),
                       (REPORTS / "groups" / "B", False, "run-", ("",), ())}
    for folder in CUSTOM_LAYOUT.group_folders():
        g = CUSTOM_LAYOUT.group("w.2")
        for path in (g.log, g.status, g.exit, g.reports):
            if path.parent == folder.path and folder.holds_files:
                assert folder.group_of(path.name) == "w.2"
    files = next(f for f in CUSTOM_LAYOUT.group_folders() if f.holds_files)
    # the run's own outcome files sit in the same folder: never taken for a group
    assert files.group_of("outcome.status") is None and files.group_of("outcome.exit") is None
    reports = next(f for f in CUSTOM_LAYOUT.group_folders() if f.prefix == "run-")
    assert reports.group_of("run-linux") == "linux" and reports.group_of("linux") is None


@pytest.mark.parametrize("template", ["{log_dir}/{build}.log", "{report_dir}/x/{build}", "/srv/atvm/{build}/run.log",
                                      "{log_dir}/{build}/{build}.txt", "/srv/{{odd}}/{build}.log"])
def test_templates_accepted(template):
    assert check_template(template, group=False) is None


@pytest.mark.parametrize("template", ["{log_dir}/{build}/{group}.log", "{report_dir}/{build}/{group}",
                                      "/srv/runs/{build}/{group}/cypress.log", "{log_dir}/{build}/grp-{group}.out",
                                      "/srv/{build}/{{x}}/{group}"])
def test_group_templates_accepted(template):
    assert check_template(template, group=True) is None


@pytest.mark.parametrize("template,group,why", [
    ("{log_dir}/run.log", False, "lacks {build}"),
    ("{log_dir}/{user}/{build}.log", False, "has the field {user}"),
    ("{log_dir}/{build!r}.log", False, "has the field {build}"),
    ("{log_dir}/{build:>9}.log", False, "has the field {build}>9"),
    ("{log_dir}/{0}/{build}.log", False, "has the field {0}"),
    ("{log_dir}/{}/{build}.log", False, "has the field {}"),
    ("{log_dir}/{build.real}.log", False, "has the field {build.real}"),
    ("{log_dir}/../{build}.log", False, "contains '..'"),
    ("{log_dir}/{build}..log", False, "contains '..'"),
    ("{log_dir}{build}.log", False, "must go on with '/'"),
    ("{log_dir}", False, "lacks {build}"),
    ("logs/{build}.log", False, "must start with"),
    ("/srv/{log_dir}/{build}.log", False, "only at its very start"),
    ("{log_dir}/{build}/{report_dir}", False, "only at its very start"),
    ("{log_dir}/{build}/", False, "must not end with '/'"),
    ("{log_dir}/{build", False, "is not a valid template"),
    ("{log_dir}/{build}/{group}.log", False, "has the field {group}"),
    ("{log_dir}/{build}/all.log", True, "must hold {group} exactly once"),
    ("{log_dir}/{build}/{group}/{group}.log", True, "must hold {group} exactly once"),
    # groups are found by listing a folder: it must be this build's alone
    ("{log_dir}/{build}-{group}.log", True, "in one path component"),
    ("{report_dir}/mochawesome/{build}-{group}", True, "in one path component"),
    ("{log_dir}/{build}/{group}-{build}.log", True, "in one path component"),
    ("{log_dir}/{group}/{build}.log", True, "inside a folder that is a {build} path component"),
    ("{log_dir}/runs-{build}/{group}.log", True, "inside a folder that is a {build} path component"),
])
def test_templates_refused(template, group, why):
    problem = check_template(template, group)
    assert problem is not None and why in problem, problem


def test_settings_build_the_layout_from_the_templates(tmp_path):
    env = {"ATVM_WATCHER_ENV_FILE": str(tmp_path / "none"), "ATVM_LOG_DIR": "/l", "ATVM_REPORT_DIR": "/r",
           "ATVM_LOG_FILE": "/var/log/atvm/{build}/cypress.log",
           "ATVM_GROUP_REPORT_FOLDER": "{report_dir}/groups/{build}/{group}"}
    layout = load(env).layout("B")
    assert layout.run().log == Path("/var/log/atvm/B/cypress.log") and layout.run().exit == Path("/l/B.exit")
    assert layout.group("g").reports == Path("/r/groups/B/g")


@pytest.mark.parametrize("name", ["ATVM_LOG_FILE", "ATVM_STATUS_FILE", "ATVM_EXIT_FILE", "ATVM_PID_FILE",
                                  "ATVM_REPORT_FOLDER", "ATVM_GROUP_LOG_FILE", "ATVM_GROUP_STATUS_FILE",
                                  "ATVM_GROUP_EXIT_FILE", "ATVM_GROUP_REPORT_FOLDER"])
def test_a_bad_template_is_refused_naming_its_setting(tmp_path, name):
    with pytest.raises(ConfigError) as info:
        load({"ATVM_WATCHER_ENV_FILE": str(tmp_path / "none"), name: "{log_dir}/../{build}/{group}"})
    assert name in str(info.value) and "'..'" in str(info.value)


@pytest.mark.parametrize("name,value,why", [
    ("ATVM_GROUP_LOG_FILE", "{log_dir}/{build}-{group}.log", "in one path component"),
    ("ATVM_GROUP_REPORT_FOLDER", "{report_dir}/mochawesome/{build}-{group}", "in one path component"),
])
def test_a_group_template_that_could_take_another_builds_files_is_refused(tmp_path, name, value, why):
    with pytest.raises(ConfigError) as info:
        load({"ATVM_WATCHER_ENV_FILE": str(tmp_path / "none"), name: value})
    assert name in str(info.value) and why in str(info.value)


@pytest.mark.parametrize("env,names", [
    ({"ATVM_EXIT_FILE": "{log_dir}/{build}.log"}, ("ATVM_LOG_FILE", "ATVM_EXIT_FILE")),
    ({"ATVM_STATUS_FILE": "{log_dir}//{build}.pid"}, ("ATVM_STATUS_FILE", "ATVM_PID_FILE")),
    ({"ATVM_GROUP_EXIT_FILE": "{log_dir}/{build}/{group}.status"}, ("ATVM_GROUP_STATUS_FILE", "ATVM_GROUP_EXIT_FILE")),
])
def test_two_settings_naming_the_same_file_are_refused(tmp_path, env, names):
    with pytest.raises(ConfigError) as info:
        load({"ATVM_WATCHER_ENV_FILE": str(tmp_path / "none"), **env})
    assert all(n in str(info.value) for n in names) and "the same file" in str(info.value)


def test_a_file_is_matched_to_the_templates_that_read_it():
    assert CUSTOM_LAYOUT.matches(Path("/var/log/atvm/B/cypress.log")) == ("log",)
    assert CUSTOM_LAYOUT.matches(LOGS / "B" / "w.2" / "cypress.log") == ("group_log",)
    assert CUSTOM_LAYOUT.matches(REPORTS / "groups" / "B" / "run-linux" / "deep" / "m.json") == ("group_reports",)
    assert CUSTOM_LAYOUT.matches(REPORTS / "mochawesome" / "B" / "m.json") == ("reports",)
    assert CUSTOM_LAYOUT.matches(LOGS / "B2.log") == () and LAYOUT.matches(LOGS / "B2.log") == ()


def test_a_path_is_turned_into_a_template_for_every_build():
    assert LAYOUT.template_for(LOGS / "runs" / "B" / "B.cypress.log") == "{log_dir}/runs/{build}/{build}.cypress.log"
    assert LAYOUT.template_for(REPORTS / "x{y}" / "B") == "{report_dir}/x{{y}}/{build}"
    assert LAYOUT.template_for(Path("/srv/B2/B-run.log")) == "/srv/B2/{build}-run.log"  # B2 is another name
    assert LAYOUT.template_for(LOGS / "launcher.out") is None  # it does not name the build
