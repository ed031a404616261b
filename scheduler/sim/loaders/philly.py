"""``philly``: the full Philly job log (no tenant column), as preprocessed by RFold.

Columns: ``#job id, arrival time (sec), topology, shape, size, duration (sec)``; ``size``
is the GPU count; topology and shape are constant and ignored. Every job gets the org
``philly``; ``scheduler.sim.pool.assign_orgs`` spreads them over the quota file's
tenants by a documented rule when a quota file is given.
"""

from __future__ import annotations

from pathlib import Path

from scheduler.sim.trace import TraceError, TraceJob, csv_rows, number, positive_int, register

COLUMNS = ("#job id", "arrival time (sec)", "size", "duration (sec)")
UNASSIGNED_ORG = "philly"


@register("philly")
def load(path: Path) -> list[TraceJob]:
    jobs: list[TraceJob] = []
    seen: set[str] = set()
    for line, row in csv_rows(path, COLUMNS):
        job_id = row["#job id"].strip()
        if not job_id:
            raise TraceError(f"{path}:{line}: #job id must not be empty")
        if job_id in seen:
            raise TraceError(f"{path}:{line}: #job id: '{job_id}' appears twice")
        seen.add(job_id)
        jobs.append(
            TraceJob(
                id=job_id,
                org=UNASSIGNED_ORG,
                submit=number(path, line, row, "arrival time (sec)"),
                gpus=positive_int(path, line, row, "size"),
                duration=number(path, line, row, "duration (sec)"),
            )
        )
    return jobs
