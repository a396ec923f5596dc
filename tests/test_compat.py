"""The controller has python3 >= 3.9 and nothing else: runtime code is standard library only and 3.9-clean."""

from __future__ import annotations

import ast
import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Set

import pytest
from conftest import REPO

RUNTIME = [REPO / "atvm_run_watcher.py", *sorted((REPO / "atvm_watcher").rglob("*.py"))]
DEMO = REPO / "atvm_watcher" / "commands" / "demo.py"
# Not installed, but `demo` runs them from a checkout with the controller's python3: the same rules hold.
DEV_TOOLS = sorted((REPO / "atvm_dev").glob("*.py"))


def top_level_imports(path: Path, module_level_only: bool = False) -> Set[str]:
    """The top-level packages a file imports (anywhere in it, or only at module level)."""
    tree = ast.parse(path.read_text(), str(path))
    names: Set[str] = set()
    for node in tree.body if module_level_only else ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_runtime_imports_only_the_standard_library():
    for path in RUNTIME + DEV_TOOLS:
        local = {"atvm_watcher", "atvm_dev"} if path == DEMO or path in DEV_TOOLS else {"atvm_watcher"}
        for name in top_level_imports(path):
            assert name in sys.stdlib_module_names or name in local, f"{path.name} imports {name}"


def test_the_runtime_never_needs_the_development_tools():
    """Only ``demo`` reaches for atvm_dev/, and only when it runs, so an installed bundle works without it."""
    assert [p.name for p in RUNTIME if "atvm_dev" in top_level_imports(p)] == [DEMO.name]
    assert "atvm_dev" not in top_level_imports(DEMO, module_level_only=True)


def test_runtime_needs_nothing_newer_than_python_3_9():
    vermin = shutil.which("vermin")
    assert vermin, "vermin is in requirements-dev.txt"
    res = subprocess.run([vermin, "-t=3.9-", "--no-tips", "--violations", "--eval-annotations",
                          *map(str, RUNTIME + DEV_TOOLS)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def python39():
    """A real 3.9 interpreter (pyenv's own build, not its shim), or None."""
    candidates = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.9*/bin/python3.9")))
    candidates += ["/usr/bin/python3.9", "/usr/local/bin/python3.9"]
    return next((c for c in candidates if os.access(c, os.X_OK)), None)


@pytest.mark.skipif(python39() is None, reason="no python3.9 interpreter on this machine (vermin still checks)")
def test_demo_runs_on_python_3_9(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ATVM_", "MATTERMOST_", "PYENV"))}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    res = subprocess.run([python39(), str(REPO / "atvm_run_watcher.py"), "demo", "--speed", "10"], env=env,
                         cwd=tmp_path, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "2 post(s) received" in res.stdout
