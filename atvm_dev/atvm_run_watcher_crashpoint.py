#!/usr/bin/env python3
"""The watcher's CLI with a crash point armed: for tests that stop the watcher at a chosen moment.

    ATVM_TEST_PAUSE_AT=<point>[@n] ATVM_TEST_PAUSE_FILE=<path> \
        python3 atvm_dev/atvm_run_watcher_crashpoint.py watch ...

The n-th time (default the first) the process reaches <point> (one of delivery.CHECKPOINTS) it
writes <path> (its pid and the run folder) and waits while <path> exists, so a test can SIGKILL
it right there, or delete <path> to let it go on. Without both variables it is the plain CLI.
The runtime never reads these variables: this file installs the hook through
``atvm_watcher.delivery.checkpoint``, and the installed bundle does not ship this package.
The file name holds "atvm_run_watcher" on purpose: another watcher's liveness scan (procs.py)
skips processes whose argv holds it, so a paused watcher is never taken for a launcher.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Dict

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from atvm_watcher import delivery  # noqa: E402
from atvm_watcher.cli import main  # noqa: E402

WAIT_LIMIT = 120.0  # a forgotten flag file must not keep a test's watcher forever


def pause_at(wanted: str, flag: str):
    name, _, nth = wanted.partition("@")
    if name not in delivery.CHECKPOINTS:
        raise SystemExit(f"crashpoint: unknown point {name!r}; one of {', '.join(delivery.CHECKPOINTS)}")
    counts: Dict[str, int] = {}

    def checkpoint(point: str, run) -> None:
        if point != name:
            return
        counts[point] = counts.get(point, 0) + 1
        if counts[point] != int(nth or 1):
            return
        with open(flag, "w", encoding="utf-8") as fh:
            fh.write(f"{os.getpid()} {run.path}\n")
        deadline = time.monotonic() + WAIT_LIMIT
        while os.path.exists(flag) and time.monotonic() < deadline:
            time.sleep(0.01)

    return checkpoint


if __name__ == "__main__":
    wanted, flag = os.environ.get("ATVM_TEST_PAUSE_AT", ""), os.environ.get("ATVM_TEST_PAUSE_FILE", "")
    if wanted and flag:
        delivery.checkpoint = pause_at(wanted, flag)
    sys.exit(main())
