"""The controller has python3 >= 3.9 and nothing else: runtime code is standard library only and 3.9-clean."""

from __future__ import annotations

import ast
import glob
import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO

RUNTIME = [REPO / "atvm_run_watcher.py", *sorted((REPO / "atvm_watcher").glob("*.py"))]


def test_runtime_imports_only_the_standard_library():
    local = {"atvm_watcher"}
    for path in RUNTIME:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names or top in local, f"{path.name} imports {name}"


def test_runtime_needs_nothing_newer_than_python_3_9():
    vermin = shutil.which("vermin")
    assert vermin, "vermin is in requirements-dev.txt"
    res = subprocess.run([vermin, "-t=3.9-", "--no-tips", "--violations", "--eval-annotations",
                          *map(str, RUNTIME)], capture_output=True, text=True)
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
