"""Tentative changes to a cycle's working state, then kept or undone (KAI-Scheduler's
``Statement``).

A step that tries something it may take back (a victim set: release their quota, see
whether the beneficiary fits) makes the changes through a statement, so what follows sees
them at once, and then commits or discards: discarding undoes them in reverse order, by
the same arithmetic. Leaving the ``with`` block without a commit discards, so an early
return or an exception cannot leave half a trial behind.
"""

from __future__ import annotations

from types import TracebackType

from quota.accounting import QuotaBook
from scheduler.core.pool import PoolState


class Statement:
    __slots__ = ("_undo", "book", "pool")

    def __init__(self, pool: PoolState, book: QuotaBook) -> None:
        self.pool, self.book = pool, book
        self._undo: list[tuple[int, int, float, float] | tuple[str, str, int]] = []

    def charge(self, org: str, flavor: str, q: int) -> None:
        """Charge ``q`` accelerators of quota to ``org`` (negative: release them)."""
        self.book.add(org, flavor, q)
        self._undo.append((org, flavor, q))

    def take(self, node: int, acc: int, cpu: float, mem: float) -> None:
        """Take capacity on a node (negative: give it back)."""
        self.pool.take(node, acc, cpu, mem)
        self._undo.append((node, acc, cpu, mem))

    def commit(self) -> None:
        self._undo.clear()

    def discard(self) -> None:
        for op in reversed(self._undo):
            if len(op) == 3:
                org, flavor, q = op
                self.book.add(org, flavor, -q)
            else:
                node, acc, cpu, mem = op
                self.pool.take(node, -acc, -cpu, -mem)
        self._undo.clear()

    def __enter__(self) -> Statement:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.discard()
