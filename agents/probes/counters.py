"""Counters read from sysfs trees, and their deltas between two reads."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

Counters = dict[str, dict[str, int]]


def read_int(path: Path) -> int | None:
    """A sysfs counter file, or None where it cannot be read (link down, no permission)."""
    try:
        return int(path.read_text().strip().split()[0], 0)
    except (OSError, ValueError, IndexError):
        return None


def deltas(prev: Mapping[str, Mapping[str, int]], cur: Mapping[str, Mapping[str, int]]) -> Counters:
    """How much each counter grew. A counter seen for the first time has no delta yet (its
    value is history, not news); one that went down was reset (driver reload, wrap) and
    counts from zero."""
    out: Counters = {}
    for key, now in cur.items():
        before = prev.get(key)
        if before is None:
            continue
        grown = {}
        for name, value in now.items():
            if name not in before:
                continue
            d = value - before[name] if value >= before[name] else value
            if d:
                grown[name] = d
        if grown:
            out[key] = grown
    return out
