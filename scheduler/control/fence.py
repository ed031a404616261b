"""The leader's fence: every deciding transaction first checks that this process still
holds the lease, so a deposed leader cannot commit anything."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session

from scheduler.store import lease


class NotLeader(Exception):
    """The lease moved to another process; this one must stop deciding."""


@dataclass(frozen=True)
class Fence:
    holder: str
    epoch: int

    def check(self, session: Session, now: float) -> None:
        if not lease.holds(session, self.holder, self.epoch, now):
            raise NotLeader(f"{self.holder} no longer holds the lease (epoch {self.epoch})")
