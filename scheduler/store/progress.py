"""Gangs' progress in the store: read for every live allocation at once, written only
where a rank advanced or a verdict was noted (a silent gang costs no write)."""

from __future__ import annotations

import json
from collections.abc import Iterable

from sqlmodel import Session, select

from scheduler.store.keys import among
from scheduler.store.tables import ProgressRow
from values.progress import GangProgress


def rows(s: Session, job_ids: Iterable[str]) -> dict[str, ProgressRow]:
    ids = sorted(set(job_ids))
    if not ids:
        return {}
    return {r.job_id: r for r in s.exec(select(ProgressRow).where(among(ProgressRow.job_id, ids))).all()}


def progress_of(row: ProgressRow | None) -> GangProgress | None:
    return None if row is None else GangProgress.from_dict(json.loads(row.data))


def save(s: Session, row: ProgressRow | None, job_id: str, progress: GangProgress, now: float) -> ProgressRow:
    """``row`` updated (or a new one) to ``progress``; a new attempt clears what was noted."""
    if row is None:
        row = ProgressRow(job_id=job_id, data="")
    if row.attempt != progress.attempt:
        row.straggler_noted = None
    row.attempt, row.data, row.updated_at = progress.attempt, json.dumps(progress.to_dict()), now
    s.add(row)
    return row


def get(s: Session, job_id: str) -> GangProgress | None:
    return progress_of(s.get(ProgressRow, job_id))
