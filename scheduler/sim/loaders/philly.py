"""``philly``: the full Philly job log (no tenant column), as preprocessed by RFold.

Columns: ``#job id, arrival time (sec), topology, shape, size, duration (sec)``; ``size``
is the GPU count; topology and shape are constant and ignored. Every job gets the org
``philly``; ``scheduler.sim.pool.assign_orgs`` spreads them over the quota file's
tenants by a documented rule when a quota file is given.
"""

from __future__ import annotations

from pathlib import Path

from scheduler.sim.trace import TraceJob, csv_rows, number, positive_int, register, unique_id

COLUMNS = ("#job id", "arrival time (sec)", "size", "duration (sec)")
UNASSIGNED_ORG = "philly"


@register("philly")
def load(path: Path) -> list[TraceJob]:
    jobs: list[TraceJob] = []
    seen: set[str] = set()
    for line, row in csv_rows(path, COLUMNS):
        jobs.append(
            TraceJob(
                id=unique_id(path, line, row, "#job id", seen),
                org=UNASSIGNED_ORG,
                submit=number(path, line, row, "arrival time (sec)"),
                gpus=positive_int(path, line, row, "size"),
                duration=number(path, line, row, "duration (sec)"),
            )
        )
    return jobs
