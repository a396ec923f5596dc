"""Hostile and broken input (issue 4, item 3): build names, report files, logs, damaged state,
a full disk, unreadable files, and property tests over the decision and the watcher.

Build names are refused before anything is written, for every subcommand. Everything else is
run through the real watcher end to end: it must reach the documented state, never crash, never
hang, and never post twice.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Dict, List

import pytest
from conftest import WATCHER
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_helpers import cli, finish, finished, no_token_left, read_json, wait_for, watch  # noqa: F401

from atvm_watcher import cli as cli_mod
from atvm_watcher import settings as settings_mod
from atvm_watcher.commands import watch as watch_mod
from atvm_watcher.decide import Decision, Limits, Verdict, decide
from atvm_watcher.layout import RunLayout
from atvm_watcher.mattermost import PostOutcome
from atvm_watcher.request import Request
from atvm_watcher.vocab import Liveness, LogFacts, OutcomeFile, Report, ReportResult, ScopeEvidence, Snapshot, State

pytestmark = pytest.mark.usefixtures("no_token_left")

# --- build names ---------------------------------------------------------------------------------

HOSTILE_NAMES = {
    "traversal": "../../etc",
    "traversal-inside": "a/../../b",
    "absolute": "/etc/passwd",
    "dot-dot": "..",
    "dot": ".",
    "leading-dot": ".hidden",
    "leading-dash": "-rf",
    "option-like": "--help",
    "space": "e2e run",
    "tab": "e2e\trun",
    "newline": "e2e\nrun",
    "escape-sequence": "e2e\x1b[31mred",
    "non-ascii": "e2e-ünïcode",
    "cjk": "構築",
    "right-to-left": "e2e\u202erun",
    "shell": "a;rm -rf ~",
    "subst": "$(id)",
    "glob": "e2e-*",
    "300-chars": "a" * 300,
    "unit-name-too-long": "b" * 231,  # a valid pattern whose escaped unit name is 256 characters
    "empty": "",
}
SUBCOMMANDS = ("watch", "inspect", "status", "cancel", "record-request", "launch")


def tree(root: Path) -> List[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("name", list(HOSTILE_NAMES))
def test_hostile_build_names_are_refused_before_anything_is_written(tmp_path, monkeypatch, capsys, name):
    """In process (fast) for every subcommand: exit 2, a clear message, no file created anywhere."""
    root = tmp_path / "world"
    for sub in ("state", "log", "reports"):
        (root / sub).mkdir(parents=True)
    monkeypatch.setenv("ATVM_WATCHER_STATE_ROOT", str(root / "state"))
    monkeypatch.setenv("ATVM_LOG_DIR", str(root / "log"))
    monkeypatch.setenv("ATVM_REPORT_DIR", str(root / "reports"))
    monkeypatch.setenv("ATVM_WATCHER_ENV_FILE", str(root / "absent.env"))
    monkeypatch.setenv("MATTERMOST_ATVM_WEBHOOK", "http://127.0.0.1:9/hooks/atvmtesthooktoken0123456789")
    monkeypatch.chdir(root / "log")  # a relative traversal would land here
    before = tree(tmp_path)
    for command in SUBCOMMANDS:
        assert cli_mod.main([command, f"--build-name={HOSTILE_NAMES[name]}"]) == 2, command
        err = capsys.readouterr().err
        assert "build name" in err and ("refused" in err or "empty" in err), err
        assert "\x1b" not in err and "\n" not in err.strip()  # shown escaped: one line, no terminal codes
    assert tree(tmp_path) == before


@pytest.mark.parametrize("name", ["../../etc", "-rf", "e2e\x1b[31mred", "a" * 300])
def test_hostile_build_names_refused_by_the_real_cli(world, name):
    before = tree(world.root)
    for command in SUBCOMMANDS:
        for args in ([f"--build-name={name}"], ["--build-name", name]):
            res = cli(world, command, *args)
            assert res.returncode == 2, (command, args, res.stdout, res.stderr)
    assert tree(world.root) == before


def test_hostile_group_names_on_disk_are_skipped(world):
    """Sub-run names come from files; odd ones are never used as paths or posted."""
    finished(world, "groups", groups=(("linux", True),))
    layout = world.layout("groups")
    for bad in ("-rf", ".hidden", "with space", "ünï", "x" * 200):
        layout.group(bad).log.write_text("(Run Finished)\n")
    layout.group("...").reports.mkdir()
    code, _, err = watch(world, "groups", "--categorize")
    assert code == 0, err
    assert sorted(p.name for p in (world.build_dir("groups") / "subruns").iterdir()) == ["linux"]
    assert len(world.receiver.posts) == 1


# --- reports and logs the run leaves -------------------------------------------------------------

LAUGHS = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
          + b"".join(b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10)
                     for i in range(1, 10))
          + b']><testsuites><testsuite name="&lol9;" tests="1" failures="1"/></testsuites>')
XXE = (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
       b'<testsuites><testsuite name="&xxe;" tests="1"/></testsuites>')
BAD_REPORTS = {  # file name -> (content or size of a sparse file, the run's state when the run passed)
    "truncated.json": (b'{"stats": {"tests": 3, "passes": 3, "failures": 0', "UNKNOWN"),
    "empty.json": (b"", "UNKNOWN"),
    "not-json.json": (b"Error: reporter crashed\n", "UNKNOWN"),
    "binary.json": (bytes(range(256)) * 64, "UNKNOWN"),
    "nested.json": (b"[" * 100000 + b"]" * 100000, "UNKNOWN"),
    "huge.json": (40 * 1024 * 1024, "UNKNOWN"),
    "billion-laughs.xml": (LAUGHS, "UNKNOWN"),
    "external-entity.xml": (XXE, "UNKNOWN"),
    "truncated.xml": (b'<?xml version="1.0"?><testsuites><testsuite name="a" tests="1"><testcase', "UNKNOWN"),
    "binary.xml": (b"\x00\x01\xff" * 1000, "UNKNOWN"),
    "nested.xml": (b"<a>" * 50000 + b"</a>" * 50000, "COMPLETED"),  # not a report: ignored
    "not-a-report.json": (b'{"name": "cypress", "version": "12.17.4"}', "COMPLETED"),
    "html.xml": (b"<html><body>hi</body></html>", "COMPLETED"),
}


def put_report(folder: Path, name: str, content) -> None:
    path = folder / name
    if isinstance(content, int):
        with path.open("wb") as fh:
            fh.truncate(content)  # sparse: the size check must refuse it before reading
    else:
        path.write_bytes(content)


@pytest.mark.parametrize("name", list(BAD_REPORTS))
def test_watcher_survives_a_broken_report(world, name):
    content, state = BAD_REPORTS[name]
    finished(world, "bad-report")
    put_report(world.layout("bad-report").run().reports, name, content)
    code, _, err = watch(world, "bad-report")
    assert code == 0, err
    recorded = read_json(world.build_dir("bad-report") / "state.json")
    assert recorded["state"] == state, recorded
    if state == "UNKNOWN":  # a failure in it cannot be ruled out: no green post on a guess
        assert recorded["rule"] == "report-unreadable" and world.receiver.posts == []
    else:
        assert len(world.receiver.posts) == 1


@pytest.mark.parametrize("name", ["truncated.json", "billion-laughs.xml", "huge.json"])
def test_a_known_failure_is_posted_whatever_else_is_broken(world, name):
    finished(world, "bad-report-failed", passing=False)
    put_report(world.layout("bad-report-failed").run().reports, name, BAD_REPORTS[name][0])
    code, _, err = watch(world, "bad-report-failed")
    assert code == 0, err
    (post,) = world.receiver.posts
    assert "FAILED" in post["text"]


def write_bytes_name(folder: Path, name: bytes, data: bytes) -> None:
    """A file whose name is not valid UTF-8 (pathlib only takes str)."""
    fd = os.open(os.path.join(os.fsencode(folder), name), os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def test_non_utf8_report_name_and_lone_surrogate_title(world):
    """Both reach state.json as lone surrogates: recorded, posted, never a crash."""
    finished(world, "surrogate", passing=False)
    folder = world.layout("surrogate").run().reports
    report = json.loads((folder / "mochawesome.json").read_text())
    report["results"][0]["suites"][0]["tests"][2]["title"] = "boots \ud800 target"
    (folder / "mochawesome.json").write_text(json.dumps(report))  # json.dumps writes the \\ud800 escape
    write_bytes_name(folder, b"bad-\xff.json", b"not json")
    code, _, err = watch(world, "surrogate")
    assert code == 0, err
    assert read_json(world.build_dir("surrogate") / "state.json")["state"] == "FAILED"
    assert len(world.receiver.posts) == 1
    res = cli(world, "status", "--json")
    assert res.returncode == 0, res.stderr


def test_inspect_survives_a_non_utf8_report_name(world):
    finished(world, "inspect-surrogate")
    write_bytes_name(world.layout("inspect-surrogate").run().reports, b"bad-\xff.json", b"not json")
    for args in (["--json"], []):
        res = cli(world, "inspect", "--build-name", "inspect-surrogate", *args,
                  env={"PYTHONIOENCODING": "utf-8:strict"})
        assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr


def test_symlinked_report_is_not_followed(world, tmp_path):
    finished(world, "symlink")
    outside = tmp_path / "outside.json"
    outside.write_text("not json at all")
    (world.layout("symlink").run().reports / "linked.json").symlink_to(outside)
    code, _, err = watch(world, "symlink")
    assert code == 0 and len(world.receiver.posts) == 1, err


def test_log_with_invalid_utf8_and_endless_lines(world):
    finished(world, "garbage-log")
    log = world.layout("garbage-log").run().log
    text = log.read_bytes()
    with log.open("wb") as fh:
        fh.write(b"\xff\xfe\xc3(\x80 binary junk \x00\x01\n")
        fh.write(b"x" * (3 * 1024 * 1024))  # one 3 MiB line with no newline
        fh.write(b"\n" + b"\xe2\x9c\x94 \xff half a char\n" * 1000)
        fh.write(text)
    code, _, err = watch(world, "garbage-log")
    assert code == 0, err
    assert read_json(world.build_dir("garbage-log") / "state.json")["state"] == "COMPLETED"
    assert len(world.receiver.posts) == 1


def test_log_bigger_than_the_first_read_window(world):
    finished(world, "big-log")
    log = world.layout("big-log").run().log
    tail = log.read_bytes()
    with log.open("wb") as fh:
        fh.write((b"\xff" * 1023 + b"\n") * (17 * 1024))  # 17 MiB of invalid UTF-8 lines first
        fh.write(tail)
    code, _, err = watch(world, "big-log")
    assert code == 0 and len(world.receiver.posts) == 1, err


# --- damaged state ----------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", [b"", b"{\"state\": \"COMPL", b"\xff\xfe\x00", b"[]", b"null"])
def test_damaged_state_json_with_posted_marker_never_posts_again(world, damage):
    finished(world, "damaged")
    code, _, _ = watch(world, "damaged")
    assert code == 0 and len(world.receiver.posts) == 1
    (world.build_dir("damaged") / "state.json").write_bytes(damage)
    code, _, err = watch(world, "damaged")
    assert code == 0, err
    assert len(world.receiver.posts) == 1  # posted.marker is the truth
    assert list(world.build_dir("damaged").glob("state.json.corrupt-*"))  # kept for the operator
    assert cli(world, "status", "--json").returncode == 0


def test_damaged_state_json_and_no_marker_posts_once(world):
    """Nothing says it was ever posted (no marker, no intent record): the post is made, once."""
    finished(world, "damaged-fresh")
    world.build_dir("damaged-fresh").mkdir()
    (world.build_dir("damaged-fresh") / "state.json").write_bytes(b"")
    code, _, err = watch(world, "damaged-fresh")
    assert code == 0 and len(world.receiver.posts) == 1, err


def test_damaged_state_json_with_an_intent_record_stays_uncertain(world):
    finished(world, "damaged-intent")
    run = world.build_dir("damaged-intent")
    run.mkdir()
    (run / "state.json").write_text("{")
    (run / "delivery.json").write_text(json.dumps({"phase": "sending", "attempts": 1}))
    code, _, err = watch(world, "damaged-intent")
    assert code == 5 and world.receiver.posts == [], err


def test_damaged_sub_run_state_with_marker_is_not_reposted(world):
    finished(world, "damaged-cat", groups=(("linux", True), ("windows", True)))
    parent_exit = world.layout("damaged-cat").run().exit
    parent_exit.unlink()
    world.launch("damaged-cat", "--hang")  # keeps the parent alive while we damage the state
    # first watcher: both sub-runs posted; the parent is still running; stopped like systemd would
    proc = world.start_watcher("--build-name", "damaged-cat", "--categorize")
    assert world.receiver.wait_for_posts(2, timeout=20)
    proc.send_signal(signal.SIGTERM)
    finish(proc)
    build = world.build_dir("damaged-cat")
    for path in (build / "state.json", build / "subruns" / "linux" / "state.json"):
        path.write_text("{ damaged")
    (build / "subruns" / "windows" / "posted.marker").write_bytes(b"\x00garbage")
    parent_exit.write_text("0\n")
    code, _, err = watch(world, "damaged-cat", "--categorize")
    assert code == 0, err
    assert len(world.receiver.posts) == 2


# --- full disk and unreadable files ------------------------------------------------------------------


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str = "512k"):
    where.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a small tmpfs")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "atvm-test", str(where)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount tmpfs here")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(folder: Path) -> Path:
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
    finally:
        os.close(fd)
    return filler


def leftovers(root: Path) -> List[str]:
    return [str(p) for p in root.rglob("*") if p.name.endswith(".tmp")]


def test_full_disk_before_the_intent_sends_nothing_then_posts_once(world, tmp_path):
    with small_tmpfs(tmp_path / "small") as small:
        env = {"ATVM_WATCHER_STATE_ROOT": str(small), "ATVM_TEST_PAUSE_AT": "before-intent",
               "ATVM_TEST_PAUSE_FILE": str(tmp_path / "flag")}
        finished(world, "full")
        proc = world.start_watcher("--build-name", "full", env=env)
        wait_for(lambda: (tmp_path / "flag").exists() or proc.poll() is not None, what="pause")
        filler = fill(small)  # the disk fills after the state was recorded, before the intent record
        (tmp_path / "flag").unlink()
        code, _, err = finish(proc)
        assert code == 75 and world.receiver.posts == [], err  # certainly not sent: safe to restart
        assert "No space left" in err
        assert leftovers(small) == []
        assert read_json(small / "full" / "state.json")["state"] == "COMPLETED"
        filler.unlink()
        code, _, err = watch(world, "full", env={"ATVM_WATCHER_STATE_ROOT": str(small)})
        assert code == 0 and len(world.receiver.posts) == 1, err
        assert (small / "full" / "posted.marker").exists()


def test_full_disk_from_the_start_is_an_error_without_half_files(world, tmp_path):
    with small_tmpfs(tmp_path / "small") as small:
        finished(world, "full-start")
        (small / "full-start").mkdir()
        filler = fill(small)
        code, _, err = watch(world, "full-start", env={"ATVM_WATCHER_STATE_ROOT": str(small)})
        assert code == 1 and "No space left" in err and "Traceback" not in err
        assert world.receiver.posts == [] and leftovers(small) == []
        filler.unlink()
        code, _, err = watch(world, "full-start", env={"ATVM_WATCHER_STATE_ROOT": str(small)})
        assert code == 0 and len(world.receiver.posts) == 1, err


def no_dac(world) -> List[str]:
    """A prefix that runs a command as root without the power to read files regardless of mode."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("root reads any file; setpriv is needed to drop that")
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--inh-caps", "-all"]


def run_watcher(world, build: str, prefix: List[str], extra: Dict[str, str] = None):
    proc = subprocess.Popen(prefix + [sys.executable, str(WATCHER), "watch", "--build-name", build],
                            env={**world.env, **(extra or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, stdin=subprocess.DEVNULL)
    world.procs.append(proc)
    return finish(proc)


UNREADABLE = {  # which file of the run is chmod 000 -> (state, rule, posts)
    "log": (lambda run: run.log, "COMPLETED", "exit-code", 1),  # the exit file says enough
    # a failure cannot be ruled out
    "report": (lambda run: run.reports / "mochawesome.json", "UNKNOWN", "report-unreadable", 0),
    # read as "no exit file" (evidence.read_outcome gives it mtime 0: older than the run); the log's
    # (Run Finished) banner and summary, and the readable reports, decide
    "exit-file": (lambda run: run.exit, "COMPLETED", "log-banner", 1),
}


@pytest.mark.parametrize("which", list(UNREADABLE))
def test_unreadable_evidence(world, which):
    prefix = no_dac(world)
    file_of, state, rule, posts = UNREADABLE[which]
    b = f"unreadable-{which}"
    finished(world, b)
    file_of(world.layout(b).run()).chmod(0)
    code, _, err = run_watcher(world, b, prefix)
    assert code == 0, err
    recorded = read_json(world.build_dir(b) / "state.json")
    assert (recorded["state"], recorded["rule"]) == (state, rule)
    assert len(world.receiver.posts) == posts


def test_unreadable_state_files(world):
    prefix = no_dac(world)
    finished(world, "unreadable-state")
    code, _, _ = watch(world, "unreadable-state")
    assert code == 0 and len(world.receiver.posts) == 1
    run = world.build_dir("unreadable-state")
    (run / "state.json").chmod(0)
    (run / "delivery.json").chmod(0)
    code, _, err = run_watcher(world, "unreadable-state", prefix)
    assert code == 0 and "Traceback" not in err, err
    assert len(world.receiver.posts) == 1


def test_unreadable_delivery_record_is_uncertain_not_resent(world):
    finished(world, "unreadable-delivery")
    run = world.build_dir("unreadable-delivery")
    run.mkdir()
    (run / "delivery.json").mkdir()  # EISDIR: unreadable for root as well
    (run / "state.json").write_text(json.dumps({"state": "COMPLETED", "delivery": "pending",
                                                "message": {"text": "x"}}))
    code, _, err = watch(world, "unreadable-delivery")
    assert code == 5 and world.receiver.posts == [], err


FIFO_AT = {
    "exit": lambda layout: layout.run().exit,
    "status": lambda layout: layout.run().status,
    "pid": lambda layout: layout.pid_file(),
    "log": lambda layout: layout.run().log,
    "report": lambda layout: layout.run().reports / "fifo.json",
}


@pytest.mark.parametrize("where", list(FIFO_AT))
def test_a_fifo_where_a_file_belongs_never_blocks_the_watcher(world, where):
    """Opening a FIFO for reading blocks until a writer comes (SIGTERM does not end that wait)."""
    finished(world, "fifo")
    layout = world.layout("fifo")
    path = FIFO_AT[where](layout)
    path.unlink(missing_ok=True)
    os.mkfifo(path)
    if where == "log":  # the banner must come from somewhere: a second, readable log of the run
        layout.run().exit.write_text("0\n")
    proc = world.start_watcher("--build-name", "fifo")
    try:
        code, _, err = finish(proc, timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert code == 0, err
    assert read_json(world.build_dir("fifo") / "state.json")["state"] == "COMPLETED"  # from what can be read
    assert len(world.receiver.posts) == 1


# --- property tests over the decision ----------------------------------------------------------------

T0 = 1_700_000_000.0
times = st.floats(min_value=-100, max_value=8000, allow_nan=False).map(lambda d: T0 + d)
words = st.sampled_from(["", "0", "1", "2", "127", "128", "137", "-1", "255", "99999999", "COMPLETED", "FAILED",
                         "CANCELLED", "TERMINATED", "HUNG", "UNKNOWN", "completed", "ok", "\x00", "nan", " 0 "])


@st.composite
def outcome_files(draw, name: str) -> OutcomeFile:
    problem = draw(st.sampled_from([None, None, "unreadable: Permission denied"]))
    return OutcomeFile(f"/l/{name}", draw(times), draw(words), problem)


@st.composite
def reports(draw) -> Report:
    n = st.integers(min_value=0, max_value=10**9)
    result = ReportResult(f"/r/{draw(st.integers(0, 99))}.json",
                          draw(st.sampled_from(["mochawesome", "junit", "unknown"])),
                          draw(st.sampled_from(["ok", "ok", "incomplete", "invalid", "not-a-report"])), "detail",
                          draw(n), draw(n), draw(n), draw(n), draw(n),
                          tuple(draw(st.lists(st.text(max_size=20), max_size=3))))
    return Report(draw(times), draw(st.integers(0, 10**6)), result)


@st.composite
def scopes(draw, group=None) -> ScopeEvidence:
    log = draw(st.none() | st.builds(LogFacts, st.just("/l/B.log"), st.integers(0, 10**9), times, st.booleans(),
                                     st.sampled_from([None, "passed", "failed"]), st.integers(0, 50),
                                     st.integers(0, 50), unfinished=st.booleans(), failed_tests=st.integers(0, 300),
                                     cancelled=st.booleans(),
                                     error=st.sampled_from([None, "Can't run because no spec files were found"])))
    return ScopeEvidence(group, log, tuple(draw(st.lists(reports(), max_size=3))),
                         draw(st.none() | outcome_files("B.status")), draw(st.none() | outcome_files("B.exit")))


@st.composite
def snapshots(draw) -> Snapshot:
    categorized = draw(st.booleans())
    names = draw(st.lists(st.sampled_from(["linux", "windows", "bsd"]), unique=True, max_size=3))
    groups = tuple(draw(scopes(g)) for g in names) if categorized else ()
    launcher = Liveness(draw(st.booleans()), draw(st.none() | st.integers(1, 99999)), draw(st.none() | times),
                        draw(st.none() | times), draw(st.sampled_from(["pid file", "process scan", "none"])))
    return Snapshot("B", categorized, draw(times), T0, launcher, draw(scopes()), groups)


limits = st.builds(Limits, st.floats(0, 5000), st.floats(0, 5000), st.floats(0, 500), st.floats(0, 10))
PROPERTY = settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))


@PROPERTY
@given(snapshots(), limits, st.booleans())
def test_decide_never_raises_on_any_evidence(snap, lim, cancelled):
    d = decide(snap, lim, cancelled)
    assert State.of(d.run.state) is not None
    assert {g.group for g in d.groups} <= {g.group for g in snap.groups}  # an earlier run's group is dropped
    assert all(State.of(g.state) is not None for g in d.groups)


@PROPERTY
@given(snapshots(), limits, st.floats(0, 10000))
def test_time_alone_never_reverts_a_terminal_decision(snap, lim, later):
    first = decide(snap, lim)
    second = decide(replace(snap, taken_at=snap.taken_at + later), lim)
    if first.run.terminal:
        assert second.run.state == first.run.state, (first.run, second.run)
    for a, b in zip(first.groups, second.groups):
        if a.terminal:
            assert b.state == a.state, (a, b)


class Crash(Exception):
    """The watcher process dies between two polls."""


GROUP_STATES = st.sampled_from(["RUNNING", "RUNNING", "COMPLETED", "FAILED", "UNKNOWN", "TERMINATED", "HUNG"])


def _watch_in_process(root: Path, decisions: List[Decision], crash_at: int) -> List[str]:
    """The real Watcher (state folder, delivery) fed these decisions; a crash, then a restart."""
    env = {"ATVM_WATCHER_STATE_ROOT": str(root / "state"), "ATVM_LOG_DIR": str(root / "log"),
           "ATVM_REPORT_DIR": str(root / "reports"), "ATVM_WATCHER_ENV_FILE": str(root / "none.env"),
           "MATTERMOST_ATVM_WEBHOOK": "http://127.0.0.1:9/hooks/never-contacted", "ATVM_POLL_SECONDS": "0.01",
           # The fake decisions change while no file does: only polling looks again (file events never come).
           "ATVM_WAKE": "poll"}
    feed, polls, posted = iter(decisions), itertools.count(), []

    def fake_decide(snap, limits, cancelled=False):
        if next(polls) == crash_at:
            raise Crash()
        return next(feed)

    def fake_post(url, payload, timeout):
        posted.append(json.dumps(payload))
        return PostOutcome("posted", "HTTP 200 ok", 200)

    for _ in range(2):
        w = watch_mod.Watcher(settings_mod.load(env), Request("B", categorize=True))
        w.stop.install = lambda: None  # keep pytest's own signal handling
        w.deliverer.post = fake_post
        original, watch_mod.decide = watch_mod.decide, fake_decide
        try:
            w.run()
            break
        except Crash:
            continue
        finally:
            watch_mod.decide = original
    return posted


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(GROUP_STATES, GROUP_STATES), min_size=1, max_size=6), st.integers(0, 7))
def test_watcher_never_reverts_a_sub_run_nor_posts_it_twice(steps, crash_at):
    """Whatever the decisions do later (flip, revert, disagree), a sub-run's first terminal state is final."""
    decisions = [Decision(Verdict("RUNNING", "r", "r"), (Verdict(a, "x", "x", group="linux"),
                                                          Verdict(b, "x", "x", group="windows"))) for a, b in steps]
    decisions.append(Decision(Verdict("COMPLETED", "done", "done"), decisions[-1].groups))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        layout = RunLayout("B", root / "log", root / "reports")
        for g in ("linux", "windows"):
            layout.group(g).log.parent.mkdir(parents=True, exist_ok=True)
            layout.group(g).log.write_text("")
        posted = _watch_in_process(root, decisions, crash_at)
        first: Dict[str, str] = {}
        for d in decisions:
            for v in d.groups:
                if v.terminal:
                    first.setdefault(v.group, v.state)
        for g, state in first.items():
            assert read_json(root / "state" / "B" / "subruns" / g / "state.json")["state"] == state
            expected = int(state in ("COMPLETED", "FAILED"))
            assert sum(f"sub-run {g} " in p for p in posted) == expected, (g, state, posted)


# --- links planted in the state root -----------------------------------------------------------------


def test_a_build_folder_that_is_a_link_is_refused(world, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    world.state_root.mkdir(parents=True, exist_ok=True)
    (world.state_root / "linked").symlink_to(elsewhere)
    finished(world, "linked")
    code, _, err = watch(world, "linked")
    assert code == 1 and "symbolic link" in err, err
    assert list(elsewhere.iterdir()) == [] and world.receiver.requests == []


def test_a_sub_run_folder_that_is_a_link_is_refused(world, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    finished(world, "sublinked", groups=(("linux", True),))
    (world.build_dir("sublinked") / "subruns").mkdir(parents=True)
    (world.build_dir("sublinked") / "subruns" / "linux").symlink_to(elsewhere)
    code, _, err = watch(world, "sublinked", "--categorize")
    assert "symbolic link" in err, err
    assert list(elsewhere.iterdir()) == [] and world.receiver.posts == []


@pytest.mark.parametrize("name", ["watch.lock", "state.lock", "events.jsonl"])
def test_state_files_are_never_written_through_a_planted_link(world, tmp_path, name):
    target = tmp_path / "precious"
    target.write_text("keep me\n")
    world.build_dir("planted").mkdir(parents=True)
    (world.build_dir("planted") / name).symlink_to(target)
    finished(world, "planted")
    watch(world, "planted")
    assert target.read_text() == "keep me\n"
    assert len(world.receiver.posts) <= 1


def test_state_json_temp_files_are_new_files_with_unpredictable_names(tmp_path, monkeypatch):
    from atvm_watcher import statedir

    target = tmp_path / "precious"
    target.write_text("keep me\n")
    for guess in range(3):
        (tmp_path / f".state.json.{os.getpid()}.tmp{guess or ''}").symlink_to(target)
    statedir.write_json_atomic(tmp_path / "state.json", {"state": "COMPLETED"})
    assert target.read_text() == "keep me\n"
    assert json.loads((tmp_path / "state.json").read_text()) == {"state": "COMPLETED"}


# --- status and inspect over damaged, hand-edited or unreadable state ------------------------------


HAND_EDITED = {
    "groups-a-number": {"state": "RUNNING", "categorized": True, "groups": 5},
    "groups-odd-items": {"state": "RUNNING", "categorized": True, "groups": ["x", {"a": 1}, "../../etc", "", "x"]},
    "state-a-number": {"state": 3},
    "state-a-list": {"state": ["COMPLETED"]},
    "rule-a-dict": {"state": "FAILED", "rule": {"x": 1}},
    "categorized-a-string": {"state": "RUNNING", "categorized": "no"},
}


@pytest.mark.parametrize("case", list(HAND_EDITED))
def test_status_and_inspect_survive_a_hand_edited_state(world, case):
    bd = world.build_dir("edited")
    bd.mkdir(parents=True)
    (bd / "state.json").write_text(json.dumps(HAND_EDITED[case]))
    finished(world, "fine")
    assert watch(world, "fine")[0] == 0
    for args in (["status"], ["status", "--json"], ["status", "--format", "prometheus"],
                 ["inspect", "--build-name", "edited"], ["inspect", "--build-name", "edited", "--json"]):
        res = cli(world, *args)
        assert res.returncode == 0 and "Traceback" not in res.stderr, (args, res.stderr)
        if args[0] == "status":
            assert "fine" in res.stdout, args  # one damaged build never hides the others
    rows = json.loads(cli(world, "status", "--json").stdout)["builds"]
    edited = next(r for r in rows if r["build_name"] == "edited")
    assert all(s["group"] == "x" for s in edited["subruns"])  # no path-like, empty or repeated group


def test_status_of_a_posted_build_without_its_state_file_says_posted(world):
    finished(world, "marker-only")
    assert watch(world, "marker-only")[0] == 0
    (world.build_dir("marker-only") / "state.json").unlink()
    row = json.loads(cli(world, "status", "--json").stdout)["builds"][0]
    assert (row["state"], row["delivery"]) == ("COMPLETED", "posted")


def test_one_unreadable_build_folder_never_breaks_status(world):
    prefix = no_dac(world)
    finished(world, "fine")
    assert watch(world, "fine")[0] == 0
    locked = world.build_dir("locked")
    locked.mkdir()
    locked.chmod(0)
    try:
        for fmt in ("table", "json", "prometheus"):
            res = subprocess.run(prefix + [sys.executable, str(WATCHER), "status", "--format", fmt], env=world.env,
                                 capture_output=True, text=True, timeout=30)
            assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
            assert "fine" in res.stdout and "locked" in res.stdout
    finally:
        locked.chmod(0o700)


# --- files a local user can plant in a world-writable log folder ------------------------------------

MARKER = "ATVM-ROOT-ONLY-MARKER-7f3a"
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@contextlib.contextmanager
def sticky_world_folder():
    """A folder like /tmp: world-writable with the sticky bit, on the real /tmp so an unprivileged user can
    reach it (pytest's tmp_path is root's alone)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to plant files as an unprivileged user")
    base = Path(tempfile.mkdtemp(prefix="atvm-sticky-", dir="/tmp"))
    try:
        base.chmod(0o1777)
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def as_nobody(*argv: str) -> None:
    subprocess.run(NOBODY + list(argv), check=True, capture_output=True, timeout=30)


def test_links_planted_by_a_local_user_are_not_followed_and_never_echoed(world, tmp_path):
    """The watcher runs as root and the default log folder is in /tmp. A local user links B.status, B.exit,
    B.pid and a report to root-only files: none is followed (they used to be: the first
    line of the target went into the journal, state.json and inspect), the marker those files hold appears
    in no output and no file of the watcher, and the run is decided from what can be trusted (the log)."""
    secrets = tmp_path / "root-only"
    secrets.mkdir(mode=0o700)
    text_secret, number_secret = secrets / "secret.txt", secrets / "number.txt"
    text_secret.write_text(f"{MARKER} root:x:0:0\n")
    number_secret.write_text(f"137\n{MARKER}\n")  # followed, the exit file would say "killed": TERMINATED
    for f in (text_secret, number_secret):
        f.chmod(0o600)
    with sticky_world_folder() as base:
        for sub in ("log", "reports"):
            (base / sub).mkdir(mode=0o1777)
            (base / sub).chmod(0o1777)
        world.env.update(ATVM_LOG_DIR=str(base / "log"), ATVM_REPORT_DIR=str(base / "reports"))
        build = "planted-links"
        run = world.layout(build).run()
        finished(world, build)  # the genuine run: log (banner, all passed) and report, by root
        run.exit.unlink()  # the launcher writes no outcome file: the attacker's would be all there is
        run.reports.chmod(0o1777)
        as_nobody("ln", "-s", str(text_secret), str(run.status))
        as_nobody("ln", "-s", str(number_secret), str(run.exit))
        as_nobody("ln", "-s", str(text_secret), str(world.layout(build).pid_file()))
        as_nobody("ln", "-s", str(text_secret), str(run.reports / "planted.json"))
        assert run.status.lstat().st_uid == 65534

        code, out, err = watch(world, build)
        outputs = [out, err]
        for command in (["inspect", "--build-name", build], ["inspect", "--build-name", build, "--json"],
                        ["status"], ["status", "--json"]):
            res = cli(world, *command)
            assert res.returncode == 0, res.stderr
            outputs += [res.stdout, res.stderr]
        assert code == 0, err
        recorded = read_json(world.build_dir(build) / "state.json")
        assert (recorded["state"], recorded["rule"]) == ("COMPLETED", "log-banner"), recorded
        assert len(world.receiver.posts) == 1
        leaks = [t for t in outputs + [json.dumps(world.receiver.posts)] if MARKER in t]
        leaks += [str(p) for p in world.state_root.rglob("*") if p.is_file() and MARKER.encode() in p.read_bytes()]
        assert leaks == []
        assert "symbolic link, not followed" in "".join(outputs)  # inspect says what it passed over


def test_an_outcome_or_pid_file_that_does_not_parse_is_described_never_shown(world):
    """A file a stranger wrote (or any garbage) in place of B.status, B.exit or B.pid: the decision, the
    journal, state.json and inspect say how many bytes it holds and that it is no state word, exit code or
    pid, never what it holds."""
    for which in ("status", "exit"):
        build = f"garbage-{which}"
        finished(world, build)
        run = world.layout(build).run()
        getattr(run, which).write_text(f"{MARKER} and more\nsecond line\n")
        world.layout(build).pid_file().write_text(f"{MARKER}\n")
        code, out, err = watch(world, build)
        recorded = read_json(world.build_dir(build) / "state.json")
        assert code == 0 and recorded["state"] == "UNKNOWN", recorded
        size = getattr(run, which).stat().st_size
        assert f"holds {size} bytes that are not" in recorded["reason"], recorded["reason"]
        res = cli(world, "inspect", "--build-name", build)
        assert f"holds {size} bytes that are not" in res.stdout and "bytes that are not a pid" in res.stdout
        for text in (out, err, res.stdout, res.stderr, json.dumps(recorded)):
            assert MARKER not in text, text
