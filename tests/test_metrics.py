"""``status --format prometheus``: the state root as Prometheus text (format 0.0.4), checked by
promtool, read back through a real node_exporter's textfile collector on 127.0.0.1, and the
example alerting rules checked and unit-tested by promtool against these very series.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
from needed import need_tool

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "deploy" / "prometheus" / "atvm-watcher-alerts.yml"
RULE_TESTS = REPO / "deploy" / "prometheus" / "atvm-watcher-alerts.test.yml"
PROM_FILE = "atvm_watcher.prom"

Labels = Tuple[Tuple[str, str], ...]


# --- a strict reader of the text format ----------------------------------------------------------
SAMPLE_RE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)")
UNESCAPE = {"\\": "\\", '"': '"', "n": "\n"}


def parse_labels(text: str) -> Labels:
    """name="value",... with the format's three escapes; anything else is an error."""
    out: List[Tuple[str, str]] = []
    i = 0
    while i < len(text):
        m = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="').match(text, i)
        assert m, f"bad label at {text[i:]!r}"
        i, value = m.end(), []
        while text[i] != '"':
            if text[i] == "\\":
                assert text[i + 1] in UNESCAPE, f"bad escape in {text!r}"
                value.append(UNESCAPE[text[i + 1]])
                i += 2
            else:
                value.append(text[i])
                i += 1
        out.append((m.group(1), "".join(value)))
        i += 1
        if i < len(text):
            assert text[i] == ",", text
            i += 1
    return tuple(out)


def parse(text: str, prefix: str = "atvm_watcher_") -> Dict[str, Dict[Labels, float]]:
    """{family: {labels: value}} for the families starting with prefix; HELP and TYPE checked."""
    families: Dict[str, Dict[Labels, float]] = {}
    typed = set()
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            name = line.split()[2]
            if line.startswith("# TYPE ") and name.startswith(prefix):
                assert line.split()[3] == "gauge", line
                typed.add(name)
            continue
        if not line.startswith(prefix):
            continue
        m = SAMPLE_RE.fullmatch(line)
        assert m, line
        name, labels = m.group(1), parse_labels(m.group(2) or "")
        assert name in typed, f"{name} has no TYPE line before its samples"
        assert labels not in families.setdefault(name, {}), f"duplicate series {line}"
        families[name][labels] = float(m.group(3))
    return families


def series(families: Dict[str, Dict[Labels, float]], name: str, **labels: str) -> float:
    for key, value in families[f"atvm_watcher_{name}"].items():
        if dict(key) == labels:
            return value
    raise AssertionError(f"no atvm_watcher_{name}{labels} in {sorted(families.get('atvm_watcher_' + name, {}))}")


def promtool_check_metrics(text: str) -> None:
    done = subprocess.run([need_tool("promtool"), "check", "metrics"], input=text, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def write_run(build_dir: Path, state: str, **files: dict) -> None:
    """A run's records by hand, as the watcher leaves them (state.json and any others named)."""
    build_dir.mkdir(parents=True, exist_ok=True)
    (build_dir / "state.json").write_text(json.dumps({"state": state}))
    for name, data in files.items():
        (build_dir / f"{name.replace('_', '.')}").write_text(json.dumps(data))


# --- the exposition ------------------------------------------------------------------------------
@pytest.fixture
def watched(world):
    """A state root with real runs (one plain, one categorized) and the delivery cases by hand."""
    world.launch("e2e-plain-rhel9", "--outcome", "pass", "--step-seconds", "0.05")
    world.launch("e2e-cat-sles15", "--group", "linux:pass", "--group", "windows:fail", "--step-seconds", "0.05")
    for args in (["--build-name", "e2e-plain-rhel9"], ["--build-name", "e2e-cat-sles15", "--categorize"]):
        done = world.cli("watch", *args, timeout=60)
        assert done.returncode == 0, done.stderr
    root = world.state_root
    write_run(root / "e2e-unsure", "COMPLETED", delivery_json={"phase": "sending"})
    write_run(root / "e2e-refused", "FAILED", delivery_json={"phase": "rejected", "error_id": "web.incoming"})
    write_run(root / "e2e-owed", "COMPLETED")
    write_run(root / "e2e-notsent", "FAILED", delivery_json={"phase": "not-sent"})
    write_run(root / "e2e-hung", "HUNG")
    write_run(root / "e2e-live", "RUNNING")
    (root / "e2e-fresh").mkdir()  # request recorded, nothing decided yet
    return world


def test_exposition_counts_every_state_and_delivery(watched):
    lock = os.open(str(watched.state_root / "e2e-live" / "watch.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a live watcher holds its build's lock
        os.write(lock, f"{os.getpid()}\n".encode())
        text = watched.cli("status", "--format", "prometheus", check=True).stdout
    finally:
        os.close(lock)
    promtool_check_metrics(text)
    f = parse(text)

    assert series(f, "live_watchers") == 1
    assert series(f, "watcher_alive", build="e2e-live") == 1 and series(f, "watcher_alive", build="e2e-hung") == 0
    assert series(f, "runs", state="COMPLETED") == 3  # plain, unsure, owed
    assert series(f, "runs", state="FAILED") == 3  # categorized parent (windows failed), refused, notsent
    assert (series(f, "runs", state="HUNG"), series(f, "runs", state="RUNNING"), series(f, "runs", state="NEW")) == (
        1, 1, 1)
    assert series(f, "runs", state="CANCELLED") == 0  # every state is there, zero included
    assert series(f, "subruns", state="COMPLETED") == 1 and series(f, "subruns", state="FAILED") == 1

    assert series(f, "run_state", build="e2e-cat-sles15", group="windows", state="FAILED") == 1
    assert series(f, "run_state", build="e2e-hung", group="", state="HUNG") == 1
    assert series(f, "deliveries", delivery="posted") == 3  # the plain run and both groups
    for word, build in (("uncertain", "e2e-unsure"), ("rejected", "e2e-refused"), ("pending", "e2e-owed"),
                        ("not-sent", "e2e-notsent")):
        assert series(f, "deliveries", delivery=word) == 1
        assert series(f, "delivery", build=build, group="", delivery=word) == 1
    # a categorized build posts per group, never for itself
    assert not [k for k in f["atvm_watcher_delivery"] if dict(k) == {"build": "e2e-cat-sles15", "group": "",
                                                                      "delivery": "posted"}]
    posted_at = series(f, "last_post_timestamp_seconds", build="e2e-cat-sles15", group="linux")
    assert abs(posted_at - time.time()) < 120
    assert {dict(k)["build"] for k in f["atvm_watcher_last_post_timestamp_seconds"]} == {"e2e-plain-rhel9",
                                                                                        "e2e-cat-sles15"}
    assert series(f, "run_updated_timestamp_seconds", build="e2e-hung", group="") <= time.time()


def test_table_and_json_are_unchanged_by_the_new_format(watched):
    as_json = watched.cli("status", "--json", check=True).stdout
    assert watched.cli("status", "--format", "json", check=True).stdout == as_json
    assert json.loads(as_json)["builds"][0]["build_name"] == "e2e-cat-sles15"
    table = watched.cli("status", check=True).stdout.splitlines()
    assert table[0].split() == ["BUILD", "STATE", "SUB-RUNS", "DELIVERY", "WATCHER", "UPDATED"]
    assert len(table) == 1 + 9


def test_label_values_are_escaped(world):
    build = world.state_root / "e2e-odd-groups"
    odd = ['back\\slash', 'double"quote', "new\nline", "all\\\"three\n"]
    for group in odd:
        write_run(build / "subruns" / group, "COMPLETED")
    os.mkdir(os.fsencode(build / "subruns") + b"/latin1-\xe9")  # not UTF-8: shown as \xe9 text
    write_run(build, "RUNNING")
    text = world.cli("status", "--format", "prometheus", check=True).stdout
    promtool_check_metrics(text)
    groups = {dict(k)["group"] for k in parse(text)["atvm_watcher_run_state"]}
    assert groups == {"", *odd, "latin1-\\xe9"}
    assert 'group="all\\\\\\"three\\n"' in text  # the raw line: \\ then \" then \n


def test_output_replaces_the_file_atomically(world, tmp_path):
    write_run(world.state_root / "e2e-one", "RUNNING")
    out = tmp_path / "textfile" / PROM_FILE
    out.parent.mkdir()
    out.write_text("old\n")
    before = out.stat().st_ino
    done = world.cli("status", "--format", "prometheus", "--output", str(out), check=True)
    assert done.stdout == ""
    assert out.stat().st_ino != before  # a new file renamed over the old one, never rewritten in place
    assert (out.stat().st_mode & 0o777) == 0o644  # node_exporter reads it as its own user
    assert 'atvm_watcher_run_state{build="e2e-one",group="",state="RUNNING"} 1' in out.read_text()
    assert sorted(p.name for p in out.parent.iterdir()) == [PROM_FILE]  # no temporary file left

    missing = tmp_path / "no-such-folder" / PROM_FILE
    done = world.cli("status", "--format", "prometheus", "--output", str(missing))
    assert done.returncode == 1 and "cannot write" in done.stderr and not missing.parent.exists()


def test_an_empty_state_root_still_says_no_watcher_is_alive(world):
    text = world.cli("status", "--format", "prometheus", check=True).stdout
    promtool_check_metrics(text)
    f = parse(text)
    assert series(f, "live_watchers") == 0 and series(f, "runs", state="RUNNING") == 0
    assert "atvm_watcher_run_state" not in f


# --- node_exporter -------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape_node_exporter(textfile_dir: Path, timeout: float = 20) -> str:
    """Start Debian's node_exporter on 127.0.0.1 with only the textfile collector; return /metrics."""
    port = free_port()
    proc = subprocess.Popen([need_tool("prometheus-node-exporter"), f"--web.listen-address=127.0.0.1:{port}",
                             "--collector.disable-defaults", "--collector.textfile",
                             f"--collector.textfile.directory={textfile_dir}"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
                    return answer.read().decode("utf-8")
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"node_exporter did not answer: {proc.stderr.read()!r}") from None
                time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_node_exporter_serves_our_series(watched, tmp_path):
    textfile = tmp_path / "textfile"
    textfile.mkdir()
    watched.cli("status", "--format", "prometheus", "--output", str(textfile / PROM_FILE), check=True)
    metrics = scrape_node_exporter(textfile)
    assert "node_textfile_scrape_error 0" in metrics
    assert re.search(r'node_textfile_mtime_seconds\{file="(.*/)?atvm_watcher\.prom"\}', metrics)
    f = parse(metrics)
    assert series(f, "run_state", build="e2e-cat-sles15", group="linux", state="COMPLETED") == 1
    assert series(f, "delivery", build="e2e-unsure", group="", delivery="uncertain") == 1
    assert series(f, "deliveries", delivery="posted") == 3


# --- alerting rules ------------------------------------------------------------------------------
def test_alert_rules_are_valid():
    done = subprocess.run([need_tool("promtool"), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert done.returncode == 0 and "SUCCESS" in done.stdout, done.stdout + done.stderr


def test_alert_rules_fire_on_what_they_describe():
    done = subprocess.run([need_tool("promtool"), "test", "rules", RULE_TESTS.name], cwd=RULE_TESTS.parent,
                          capture_output=True, text=True)
    assert done.returncode == 0 and "SUCCESS" in done.stdout, done.stdout + done.stderr


def test_alert_rules_use_only_series_we_write(watched):
    """The rules and their tests name our series by hand: a renamed series must break this test."""
    written = set(parse(watched.cli("status", "--format", "prometheus", check=True).stdout))
    for path in (RULES, RULE_TESTS):
        used = set(re.findall(r"\batvm_watcher_[a-z_]+", path.read_text()))
        assert used and used <= written, f"{path.name}: {sorted(used - written)} not written by status"
