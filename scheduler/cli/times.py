"""Times as people read them: local ISO times, ages and spans.

The API speaks Unix seconds; tables and YAML show local times with their offset (so a
time pasted into a ticket means one moment) or spans like ``2h 10m``. Only ``-o json``
keeps the seconds, for programs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

_STEPS = ((86_400, "d"), (3600, "h"), (60, "m"), (1, "s"))


def is_time_field(key: str) -> bool:
    return key.endswith("_at") or key == "estimated_start"


def local(t: float | None) -> str:
    """``2026-12-07 14:05:12+01:00``: ISO 8601 in the viewer's time zone."""
    if t is None:
        return "-"
    return datetime.fromtimestamp(float(t)).astimezone().isoformat(sep=" ", timespec="seconds")


def span(seconds: float | None) -> str:
    """``45s``, ``3m 12s``, ``2h 10m``, ``4d 3h``: the largest unit and the next one."""
    if seconds is None:
        return "-"
    left = max(0, round(seconds))
    for i, (size, unit) in enumerate(_STEPS[:-1]):
        if left >= size:
            head = f"{left // size}{unit}"
            next_size, next_unit = _STEPS[i + 1]
            rest = (left % size) // next_size
            return f"{head} {rest}{next_unit}" if rest else head
    return f"{left}s"


def relative(t: float | None, now: float) -> str:
    """``in 2h 10m``, ``3m ago`` or ``now``."""
    if t is None:
        return "-"
    delta = float(t) - now
    if abs(delta) < 1:
        return "now"
    return f"in {span(delta)}" if delta > 0 else f"{span(-delta)} ago"


def readable(value: Any) -> Any:
    """``value`` with every time field (``*_at``, ``estimated_start``) as a local time."""
    if isinstance(value, dict):
        return {
            k: local(v) if is_time_field(k) and isinstance(v, int | float) else readable(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [readable(v) for v in value]
    return value
