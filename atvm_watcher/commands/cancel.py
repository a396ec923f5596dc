"""``cancel``: what the cancel helper does before it stops the instance: cancelled.marker, CANCELLED."""

from __future__ import annotations

from ..ledger import cancel_build
from ..settings import Settings
from ..statedir import BuildDir
from ..vocab import ExitCode


def run(settings: Settings, build: str) -> int:
    bd = BuildDir.of(settings.state_root, build)
    if not bd.path.is_dir():
        print(f"build {build} is unknown (no state under {settings.state_root}); nothing cancelled")
        return ExitCode.OK
    cancelled, finished = cancel_build(bd, build)
    if not cancelled:
        print(f"build {build} already finished ({finished}); nothing changed")
        return ExitCode.OK
    print(f"cancelled build {build}: nothing will be posted for it")
    return ExitCode.OK
