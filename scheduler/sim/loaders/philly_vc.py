"""``philly-vc``: Philly jobs with their tenant (virtual cluster), one org per VC.

Columns: job_id, vc, submit_time_s, num_gpus, duration_s (others are ignored; the
``gavel_synthetic_job_type`` column is not a real field and is never read).
"""

from __future__ import annotations

from pathlib import Path

from scheduler.sim.trace import TraceError, TraceJob, csv_rows, number, positive_int, register, unique_id

COLUMNS = ("job_id", "vc", "submit_time_s", "num_gpus", "duration_s")


@register("philly-vc")
def load(path: Path) -> list[TraceJob]:
    jobs: list[TraceJob] = []
    seen: set[str] = set()
    for line, row in csv_rows(path, COLUMNS):
        job_id = unique_id(path, line, row, "job_id", seen)
        org = row["vc"].strip().lower()
        if not org:
            raise TraceError(f"{path}:{line}: vc must not be empty")
        jobs.append(
            TraceJob(
                id=job_id,
                org=org,
                submit=number(path, line, row, "submit_time_s"),
                gpus=positive_int(path, line, row, "num_gpus"),
                duration=number(path, line, row, "duration_s"),
            )
        )
    return jobs
