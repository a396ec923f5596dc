"""What the operator asked for: the run's descriptive metadata, kept in request.json."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, Optional

MAX_FIELD = 1000  # characters per metadata value: keeps every post far under Mattermost's limits
MAX_GROUPS = 999
FIELDS = ("template", "config_family", "migration_style", "integration_plugin", "scope_description")


def _clean(value: Any) -> str:
    text = "" if value is None else str(value)
    text = "".join(ch if ch.isprintable() or ch == " " else " " for ch in text).strip()
    return text[:MAX_FIELD]


@dataclass(frozen=True)
class Request:
    build_name: str
    categorize: bool = False
    template: str = ""
    config_family: str = ""
    migration_style: str = ""
    integration_plugin: str = ""
    scope_description: str = ""
    groups: Optional[int] = None  # how many sub-runs a categorized run has, when the operator says so

    def to_json(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, build: str, data: Optional[Dict[str, Any]]) -> Request:
        data = data or {}
        known = {f.name for f in fields(cls)} - {"build_name", "categorize", "groups"}
        return cls(build_name=build, categorize=bool(data.get("categorize") is True),
                   groups=group_count(data.get("groups")), **{k: _clean(data.get(k)) for k in known})

    def merged(self, overrides: Dict[str, Any]) -> Request:
        """CLI flags over the recorded request; a flag left out keeps the recorded value."""
        values = self.to_json()
        for key, value in overrides.items():
            if key == "categorize":
                values[key] = bool(value) or values[key]
            elif key == "groups":
                values[key] = group_count(value) or values[key]
            elif value is not None:
                values[key] = _clean(value)
        return Request(**values)


def group_count(value: Any) -> Optional[int]:
    """A number of sub-runs as recorded or given (1 to MAX_GROUPS), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return None
    try:
        n = int(value)
    except ValueError:
        return None
    return n if 1 <= n <= MAX_GROUPS else None
