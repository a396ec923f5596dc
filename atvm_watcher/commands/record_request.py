"""``record-request``: keep what the operator asked for (request.json) before the watcher starts."""

from __future__ import annotations

from ..ledger import finished_state
from ..request import Request
from ..settings import Settings
from ..statedir import BuildDir
from ..vocab import ExitCode


def run(settings: Settings, req: Request, rerun: bool) -> int:
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
    if bd.path.exists() and (finished or rerun):
        archive = bd.archive(settings.state_root)
        print(f"archived the previous state of {req.build_name} to {archive}")
    bd.record_request(req.to_json())
    print(f"recorded request for {req.build_name} in {bd.request_file}")
    return ExitCode.OK
