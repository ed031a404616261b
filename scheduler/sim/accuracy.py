"""How right the start estimates were: each job's recorded estimate against its actual
first start (pure functions of job records).

Definitions (also printed in the report):
- error = estimated start - actual first start; positive is pessimistic (it started
  earlier than it was told). Bias = the mean error.
- lead = actual first start - the time the estimate was made: how far ahead it looked.
  Relative error = |error| / lead; "within 25%" is |error| <= 0.25 x lead, "within 15
  min" is |error| <= 900 s.
- "submit": the first estimate a job got (the first forecast after its submission);
  "later": the first one at least an hour after its submission, for jobs still waiting.
  Only a job's first wait is measured (not its waits after a preemption or failure), and
  only jobs that started. An unknown estimate is counted apart, not as an error.
- "waited > 10 min": jobs whose first start came more than 600 s after submission.
- range: where runtimes are learned, the estimate at the range's percentile; "in range"
  is the share of jobs that started no later than it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from scheduler.sim.record import JobRecord

LONG_WAIT_S = 600.0
CLOSE_S = 900.0
CLOSE_SHARE = 0.25


def accuracy(jobs: Sequence[JobRecord], kind: str) -> dict[str, Any]:
    """The figures for estimates of ``kind``, for all jobs and for those that waited long."""
    rows: list[tuple[float, float, float, float | None]] = []  # error, lead, wait, high - actual
    unknown = {"all": 0, "waited_over_10m": 0}
    delays: list[float] = []
    for j in jobs:
        if j.first_start is None:
            continue
        e = next((e for e in j.estimates if e.kind == kind), None)
        if e is None:
            continue
        wait = j.first_start - j.submit
        delays.append(e.made_at - j.submit)
        if e.start is None:
            unknown["all"] += 1
            unknown["waited_over_10m"] += wait > LONG_WAIT_S
            continue
        lead = max(j.first_start - e.made_at, 1.0)
        above = None if e.high is None else e.high - j.first_start
        rows.append((e.start - j.first_start, lead, wait, above))
    long = [r for r in rows if r[2] > LONG_WAIT_S]
    return {
        "all": _figures(rows, unknown["all"]),
        "waited_over_10m": _figures(long, unknown["waited_over_10m"]),
        "made_after_submit_median_s": float(np.median(delays)) if delays else None,
    }


def _figures(rows: Sequence[tuple[float, float, float, float | None]], unknown: int) -> dict[str, Any]:
    """The figures of one group; None where it has no jobs (or no range)."""
    if not rows:  # None, not NaN: summaries of equal replays must compare equal
        return {"jobs": 0, "unknown": unknown, "median_abs_error_s": None, "median_rel_error": None,
                "within_15m": None, "within_25pct": None, "bias_s": None, "median_error_s": None,
                "median_lead_s": None, "in_range": None}  # fmt: skip
    err = np.array([r[0] for r in rows])
    lead = np.array([r[1] for r in rows])
    ranged = [r[3] for r in rows if r[3] is not None]
    return {
        "jobs": len(rows),
        "unknown": unknown,
        "median_abs_error_s": float(np.median(np.abs(err))),
        "median_rel_error": float(np.median(np.abs(err) / lead)),
        "within_15m": float(np.mean(np.abs(err) <= CLOSE_S)),
        "within_25pct": float(np.mean(np.abs(err) <= CLOSE_SHARE * lead)),
        "bias_s": float(err.mean()),
        "median_error_s": float(np.median(err)),
        "median_lead_s": float(np.median(lead)),
        "in_range": float(np.mean(np.array(ranged) >= 0)) if ranged else None,
    }
