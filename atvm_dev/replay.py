"""Replays a case of the Cypress corpus (tests/fixtures/cypress) as a real launcher process would.

The case's log is written in pieces with short pauses, where the layout settings put it (ATVM_* as
the watcher reads them), then its outcome, one of:

    exit       .exit with the case's exit code right after the last line
    late-exit  .exit after --late seconds (a recorded run uploading to Cypress Cloud, a slow shutdown)
    none       no outcome file: the launcher exiting is all the watcher learns
    stdout     the log goes to stdout instead, and the process ends as Cypress did: with the exit code,
               or, for a killed case, by the signal its code 128+n stands for (run it under atvm-run.sh)

    python3 atvm_dev/replay.py --build-name B --case all-passed --outcome exit [--pieces 6] [--pause 0.05]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import List, Optional

if not __package__:  # run as a script: the checkout's packages come from its root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from atvm_watcher.settings import load  # noqa: E402
from atvm_watcher.statedir import write_bytes_atomic  # noqa: E402

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "cypress"
OUTCOMES = ("exit", "late-exit", "none", "stdout")


def manifest() -> List[dict]:
    return json.loads((CORPUS / "manifest.json").read_text(encoding="utf-8"))


def case(name: str) -> dict:
    found = [c for c in manifest() if c["case"] == name]
    if not found:
        raise SystemExit(f"replay: no case {name!r} in {CORPUS / 'manifest.json'}")
    return found[0]


def pieces(data: bytes, count: int) -> List[bytes]:
    """``count`` pieces of about the same size, cut at line ends (a line may still arrive in two reads)."""
    lines = data.splitlines(keepends=True)
    step = max(1, -(-len(lines) // count))
    return [b"".join(lines[i : i + step]) for i in range(0, len(lines), step)]


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Replay a Cypress corpus case as a launcher process.")
    p.add_argument("--build-name", required=True)
    p.add_argument("--case", required=True)
    p.add_argument("--outcome", choices=OUTCOMES, default="exit")
    p.add_argument("--pieces", type=int, default=6)
    p.add_argument("--pause", type=float, default=0.05, help="seconds between two pieces of the log")
    p.add_argument("--late", type=float, default=1.0, help="seconds between the last line and .exit (late-exit)")
    return p.parse_args(argv)


def end_as_cypress_did(chosen: dict) -> int:
    """Exit with the case's code, or, for a killed case, die of the signal its shell code 128+n stands for.

    Only a killed case (expected TERMINATED) is a signal: Cypress itself exits 130 after 130 failures.
    """
    code = chosen["exit_code"]
    if code >= 128 and chosen["expected_state"] == "TERMINATED":
        sig = signal.Signals(code - 128)
        if sig != signal.SIGKILL:
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        time.sleep(10)  # not reached: the signal ends the process
    return code


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    chosen = case(args.case)
    data = (CORPUS / chosen["file"]).read_bytes()
    if args.outcome == "stdout":
        for piece in pieces(data, args.pieces):
            os.write(1, piece)
            time.sleep(args.pause)
        return end_as_cypress_did(chosen)
    layout = load().layout(args.build_name)
    run = layout.run()
    layout.pid_file().parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(layout.pid_file(), f"{os.getpid()}\n".encode())
    run.log.parent.mkdir(parents=True, exist_ok=True)
    with run.log.open("ab", buffering=0) as log:
        for piece in pieces(data, args.pieces):
            log.write(piece)
            time.sleep(args.pause)
    if args.outcome == "late-exit":
        time.sleep(args.late)
    if args.outcome in ("exit", "late-exit"):
        run.exit.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(run.exit, f"{chosen['exit_code']}\n".encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
