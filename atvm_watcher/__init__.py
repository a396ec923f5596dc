"""atvm-watcher: one trustworthy Mattermost post per finished ATVM run (standard library only)."""

from pathlib import Path

__version__ = "0.1.0"


def version_text() -> str:
    """The package's version, and the bundle's (VERSION, written by tools/make-bundle.sh) when installed from one."""
    try:
        bundle = (Path(__file__).resolve().parent.parent / "VERSION").read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        bundle = ""
    return f"atvm-watcher {__version__}" + (f" (bundle {bundle[:80]})" if bundle else "")
