"""``record-request``: keep what the operator asked for (request.json) before the watcher starts."""

from __future__ import annotations

from typing import Optional

from ..ledger import finished_state, read_record, record_state
from ..request import Request
from ..settings import Settings
from ..statedir import BuildDir
from ..vocab import ExitCode, State


def interrupted(bd: BuildDir) -> Optional[str]:
    """What an earlier watcher of this build decided and left unfinished (it stopped, or the machine
    rebooted), or None: a new run must not inherit it, the same run must keep it."""
    data, _ = read_record(bd)
    state = record_state(data)
    if state is not None and state not in (State.WAITING,):
        return f"an earlier watcher recorded it {state}"
    decided = [g for g in bd.subrun_names() if record_state(read_record(bd.subrun(g))[0]) is not None]
    if decided:
        return f"an earlier watcher recorded its sub-run(s) {', '.join(decided)}"
    return None


def run(settings: Settings, req: Request, rerun: bool, resume: bool = False) -> int:
    bd = BuildDir.of(settings.state_root, req.build_name)
    holder = bd.watch_lock_holder()
    if holder:
        print(f"build {req.build_name} is already being watched ({holder}); not starting a second watcher")
        return ExitCode.LOCKED
    finished = finished_state(bd, req.categorize) if bd.path.exists() else None
    if finished and not rerun:
        print(f"build {req.build_name} already finished ({finished}); nothing to watch. "
              "To watch a new run under the same build name, use --rerun (the old state is archived).")
        return ExitCode.FINISHED
    left = interrupted(bd) if bd.path.exists() and not finished and not rerun else None
    if left and not resume:
        print(f"build {req.build_name} was being watched and did not finish ({left}); nothing changed. "
              "A new run of the build: --rerun (the old state is archived). The same run, whose watcher "
              "stopped (a reboot, say): --resume (its decided sub-runs and posts are kept).")
        return ExitCode.FINISHED
    if bd.path.exists() and (finished or rerun):
        archive = bd.archive(settings.state_root)
        print(f"archived the previous state of {req.build_name} to {archive}")
    bd.record_request(req.to_json())
    print(f"recorded request for {req.build_name} in {bd.request_file}")
    return ExitCode.OK
