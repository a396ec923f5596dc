"""Tools the tests need from the machine (tools/install-test-deps.sh installs them all)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest


def need_tool(name: str) -> str:
    """The tool's path. Missing: the test is skipped, except under CI, where it fails (CI must
    never pass by skipping). pip puts Python tools (ansible-playbook, ...) beside the interpreter
    running the tests, which may not be on PATH: that folder is searched too."""
    path = shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), str(Path(sys.executable).parent)]))
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is required under CI (tools/install-test-deps.sh)", pytrace=False)
        pytest.skip(f"{name} not installed (tools/install-test-deps.sh installs it)")
    return path
