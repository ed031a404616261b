"""Tiny traces written by the tests themselves, in the real formats (no real rows)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

VC_HEADER = "job_id,vc,submit_time_s,num_gpus,duration_s,ambiguous_match,gavel_synthetic_job_type\n"
PHILLY_HEADER = "#job id,arrival time (sec),topology,shape,size,duration (sec)\n"

Row = tuple[str, str, float, int, float]  # id, vc, submit, gpus, duration


def write_vc_trace(path: Path, rows: Iterable[Row]) -> Path:
    lines = [f"{i},{vc},{s},{g},{d},0,ResNet-18 (batch size 16)\n" for i, vc, s, g, d in rows]
    path.write_text(VC_HEADER + "".join(lines))
    return path


def write_philly_trace(path: Path, rows: Iterable[tuple[str, float, int, float]]) -> Path:
    lines = [f"{i},{s},CLOS,1,{g},{d}\n" for i, s, g, d in rows]
    path.write_text(PHILLY_HEADER + "".join(lines))
    return path


def write_quotas(path: Path, quotas: dict[str, int]) -> Path:
    path.write_text("vc,node num\n" + "".join(f"{vc},{n}\n" for vc, n in quotas.items()))
    return path


def random_rows(n: int, orgs: tuple[str, ...], seed: int = 1) -> list[Row]:
    """A small mixed workload: mostly 1-GPU jobs, some full-node and two-node gangs."""
    rng = np.random.default_rng(seed)
    sizes = rng.choice([1, 1, 1, 2, 4, 8, 16], size=n)
    submits = np.cumsum(rng.exponential(400.0, size=n))
    durations = rng.lognormal(7.5, 1.2, size=n).round()
    return [
        (str(i), orgs[int(rng.integers(len(orgs)))], float(submits[i]), int(sizes[i]), float(d) + 5)
        for i, d in enumerate(durations)
    ]
