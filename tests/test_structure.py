"""The code map in README.md, kept true: who may import whom in the runtime package.

The promises are easier to check when each rule has one home, so these import rules are
part of the design: the pure core imports no I/O, only the watch command runs the watch loop,
only the transport opens sockets, and the installed bundle needs no development tool.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Dict, Set

from conftest import REPO

PACKAGE = REPO / "atvm_watcher"


def local_imports(path: Path) -> Set[str]:
    """The package modules a runtime file imports, as dotted names under atvm_watcher."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    here = path.relative_to(REPO).with_suffix("").parts[:-1]  # the importing file's package
    found: Set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(here[: len(here) - node.level + 1])
                module = ".".join(base + ([node.module] if node.module else []))
                found.add(module)
                found.update(f"{module}.{a.name}" for a in node.names)
            elif node.module and node.module.startswith("atvm_watcher"):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("atvm_watcher"))
    return {m for m in found if m.startswith("atvm_watcher")}


def runtime_modules() -> Dict[str, Set[str]]:
    return {".".join(p.relative_to(REPO).with_suffix("").parts): local_imports(p)
            for p in sorted(PACKAGE.rglob("*.py"))}


def importers_of(target: str) -> Set[str]:
    return {name for name, imports in runtime_modules().items() if target in imports}


def test_the_decision_core_imports_only_the_vocabulary():
    imports = runtime_modules()["atvm_watcher.decide"]
    assert imports and all(m == "atvm_watcher.vocab" or m.startswith("atvm_watcher.vocab.") for m in imports)


def test_only_the_cli_dispatches_to_the_commands_and_only_it_runs_the_watch_loop():
    assert importers_of("atvm_watcher.commands.watch") == {"atvm_watcher.cli"}
    for name, imports in runtime_modules().items():
        if name.startswith("atvm_watcher.commands.") or name == "atvm_watcher.cli":
            continue
        assert not any(m.startswith("atvm_watcher.commands") for m in imports), name


def test_only_the_transport_opens_sockets():
    openers = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
        modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        if {"socket", "http", "http.client", "ssl", "urllib.request"} & (names | modules):
            openers.append(path.name)
    # watch.py asks socket for the host name only (gethostname); no connection is made there
    assert sorted(openers) == ["transport.py", "watch.py"]
    watch = (PACKAGE / "commands" / "watch.py").read_text(encoding="utf-8")
    assert "socket.gethostname()" in watch and "socket.socket" not in watch and "create_connection" not in watch


def test_only_the_state_module_writes_or_renames_in_the_state_directory():
    # status.py renames only its metrics file into node_exporter's folder, outside the state root
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name in ("statedir.py", "status.py"):
            continue
        text = path.read_text(encoding="utf-8")
        assert "os.replace(" not in text and "os.rename(" not in text, path.name


def test_the_runtime_cites_no_outside_document_nor_issue_number():
    sources = [REPO / "atvm_run_watcher.py", *sorted(PACKAGE.rglob("*.py")), *sorted((REPO / "atvm_dev").glob("*.py"))]
    for path in sources:
        text = path.read_text(encoding="utf-8")
        for outside in ("CONTRACT.md", "MATTERMOST.md", "STYLE.md", "NSPAWN.md", "issue ", "Issue "):
            assert outside not in text, f"{path.name} cites {outside!r}"


def test_the_readme_exit_code_table_matches_the_vocabulary():
    from atvm_watcher.vocab import EXIT_MEANING, RESTART_PREVENTED, RESTARTED

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| (\d+) \| .* \| (not restarted|restarted)[^|]* \|$", readme, re.M))
    assert {int(code) for code in rows} == {int(code) for code in EXIT_MEANING}
    for code, systemd in rows.items():
        assert (systemd == "restarted") == (int(code) in {int(c) for c in RESTARTED}), code
        assert (systemd == "not restarted") == (int(code) in {int(c) for c in RESTART_PREVENTED} | {0}), code
