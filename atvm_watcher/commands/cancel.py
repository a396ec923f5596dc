"""``cancel``: what the cancel helper does before it stops the instance: cancelled.marker, CANCELLED.

It needs only the state root: no webhook and no valid tuning settings (cli.py loads the settings
leniently for it), so a typo elsewhere in the env file never keeps an operator from cancelling.
"""

from __future__ import annotations

from typing import Tuple

from ..ledger import cancel_build
from ..settings import Settings
from ..statedir import BuildDir
from ..vocab import ExitCode


def _scopes(names: Tuple[str, ...]) -> str:
    return ", ".join(f"sub-run {n}" if n else "the run" for n in names)


def run(settings: Settings, build: str) -> int:
    bd = BuildDir.of(settings.state_root, build)
    if not bd.path.is_dir():
        print(f"build {build} is unknown (no state under {settings.state_root}); nothing cancelled, no marker written")
        return ExitCode.OK
    result = cancel_build(bd, build)
    if not result.cancelled:
        posted = f"; posted: {_scopes(result.posted)}" if result.posted else ""
        print(f"build {build} already finished ({result.finished}){posted}; nothing changed, no marker written")
    else:
        print(f"cancelled build {build}: {bd.cancelled_marker} written; nothing more will be posted for it")
        if result.posted:
            print(f"  already posted before the cancel: {_scopes(result.posted)}")
    if result.uncertain:
        print(f"  delivery uncertain (a post may exist; check the channel): {_scopes(result.uncertain)}")
    return ExitCode.OK
