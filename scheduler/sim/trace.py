"""Trace jobs and the registry of trace formats.

A trace format is one small plug-in module under ``scheduler/sim/loaders/`` that turns a
file into ``TraceJob`` rows; ``register`` puts it under its ``--format`` name. Loaders
never shape gangs or pick nodes: that is the pool's business (``scheduler.sim.pool``).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path


class TraceError(Exception):
    """A trace or quota file that cannot be read; the message names the file, row and field."""


@dataclass(frozen=True, slots=True)
class TraceJob:
    id: str
    org: str
    submit: float  # seconds from the start of the trace
    gpus: int  # accelerators, all at once
    duration: float  # run time without interruption, seconds


Loader = Callable[[Path], list[TraceJob]]

_FORMATS: dict[str, Loader] = {}


def register(name: str) -> Callable[[Loader], Loader]:
    """Decorator: make ``loader`` available as ``--format name``."""

    def wrap(loader: Loader) -> Loader:
        _FORMATS[name] = loader
        return loader

    return wrap


def formats() -> list[str]:
    _load_builtin()
    return sorted(_FORMATS)


def load_trace(path: Path, fmt: str) -> list[TraceJob]:
    """Read ``path`` with the loader of ``fmt``; jobs come back sorted by submit time, then id."""
    _load_builtin()
    loader = _FORMATS.get(fmt)
    if loader is None:
        raise TraceError(f"--format: unknown trace format '{fmt}' (known: {', '.join(sorted(_FORMATS))})")
    if not path.is_file():
        raise TraceError(f"--trace: {path} does not exist or is not a file")
    jobs = loader(path)
    if not jobs:
        raise TraceError(f"{path}: the trace has no jobs")
    return sorted(jobs, key=lambda j: (j.submit, _id_key(j.id)))


def _id_key(job_id: str) -> tuple[int, str]:
    # Numeric ids sort numerically so that ties keep the trace's own order.
    return (int(job_id), "") if job_id.isdigit() else (1 << 62, job_id)


def _load_builtin() -> None:
    # Importing the package registers every built-in format.
    import scheduler.sim.loaders  # noqa: F401


def csv_rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """Rows of a CSV file as dicts (with their 1-based line number), after checking its header."""
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in required if c not in header]
        if missing:
            raise TraceError(f"{path}: missing column(s) {', '.join(missing)} (found: {', '.join(header)})")
        reader.fieldnames = header
        for row in reader:
            yield reader.line_num, row


def number(path: Path, line: int, row: dict[str, str], column: str) -> float:
    raw = (row.get(column) or "").strip()
    try:
        value = float(raw)
    except ValueError:
        raise TraceError(f"{path}:{line}: {column}: '{raw}' is not a number") from None
    if value != value or value in (float("inf"), float("-inf")) or value < 0:
        raise TraceError(f"{path}:{line}: {column}: must be a finite number >= 0 (got {raw})")
    return value


def positive_int(path: Path, line: int, row: dict[str, str], column: str) -> int:
    value = number(path, line, row, column)
    if value != int(value) or value < 1:
        raise TraceError(f"{path}:{line}: {column}: must be a whole number >= 1 (got {row.get(column)})")
    return int(value)


def unique_id(path: Path, line: int, row: dict[str, str], column: str, seen: set[str]) -> str:
    """The row's job id: present, and not seen before in this file (``seen`` grows)."""
    job_id = (row.get(column) or "").strip()
    if not job_id:
        raise TraceError(f"{path}:{line}: {column} must not be empty")
    if job_id in seen:
        raise TraceError(f"{path}:{line}: {column}: '{job_id}' appears twice")
    seen.add(job_id)
    return job_id
