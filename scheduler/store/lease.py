"""The leader lease: one row per lease name; a holder renews it before it expires.

``epoch`` grows whenever the holder changes. The loop checks holder and epoch inside
each deciding transaction (with a row lock on PostgreSQL), so a leader that lost the
lease while paused cannot commit a decision afterwards.
"""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, or_, select

from scheduler.store.tables import LeaseRow

LOOP = "control-loop"


def acquire(session: Session, holder: str, now: float, ttl: float, name: str = LOOP) -> int | None:
    """Take or renew the lease; the epoch if ``holder`` now holds it, else None."""
    row = session.get(LeaseRow, name, with_for_update=True)
    if row is None:
        try:
            with session.begin_nested():
                session.add(LeaseRow(name=name, holder=holder, epoch=1, expires_at=now + ttl))
                session.flush()
        except IntegrityError:
            return None  # another process created it first; it holds the lease
        return 1
    if row.holder == holder and row.expires_at >= now:
        epoch = row.epoch
    elif row.expires_at < now or row.holder == holder:
        epoch = row.epoch + 1
    else:
        return None
    result = session.execute(
        update(LeaseRow)
        .where(col(LeaseRow.name) == name, col(LeaseRow.epoch) == row.epoch)
        .where(or_(col(LeaseRow.holder) == holder, col(LeaseRow.expires_at) < now))
        .values(holder=holder, epoch=epoch, expires_at=now + ttl)
    )
    return epoch if result.rowcount == 1 else None  # type: ignore[attr-defined]


def holds(session: Session, holder: str, epoch: int, now: float, name: str = LOOP) -> bool:
    """Still the leader? Locks the row on PostgreSQL until the transaction ends."""
    row = session.exec(select(LeaseRow).where(LeaseRow.name == name).with_for_update()).first()
    return row is not None and row.holder == holder and row.epoch == epoch and row.expires_at >= now


def release(session: Session, holder: str, name: str = LOOP) -> None:
    session.execute(
        update(LeaseRow)
        .where(col(LeaseRow.name) == name, col(LeaseRow.holder) == holder)
        .values(expires_at=0.0)
    )


def current(session: Session, name: str = LOOP) -> LeaseRow | None:
    return session.get(LeaseRow, name)
