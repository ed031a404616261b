"""A statement's changes are seen at once and undone exactly on discard, also when the
block it guards ends early."""

from __future__ import annotations

import pytest

from quota.accounting import QuotaBook
from scheduler.core.pool import PoolState, Shape
from scheduler.core.statement import Statement

from .scenario import org, rack


def _state() -> tuple[PoolState, QuotaBook]:
    pool = PoolState(rack("r0", 2))
    pool.build_buckets()
    return pool, QuotaBook([org("a", h100=8), org("b")], {"h100": 16})


def test_a_discarded_trial_leaves_pool_and_book_as_they_were() -> None:
    pool, book = _state()
    book.add("b", "h100", 8)
    before = (
        list(pool.free_acc),
        pool.free_total("h100"),
        book.alloc("b", "h100"),
        book.check("a", "h100", 16),
    )
    with Statement(pool, book) as trial:
        trial.take(0, 8, 1.0, 4.0)
        trial.charge("b", "h100", -8)
        assert pool.free_total("h100") == 8 and book.alloc("b", "h100") == 0  # seen at once
    assert (
        list(pool.free_acc),
        pool.free_total("h100"),
        book.alloc("b", "h100"),
        book.check("a", "h100", 16),
    ) == before
    assert pool.best_fit_single("h100", Shape(1, 8, 1.0, 4.0), frozenset()) is not None


def test_a_committed_trial_stays() -> None:
    pool, book = _state()
    with Statement(pool, book) as trial:
        trial.take(1, 8, 1.0, 4.0)
        trial.charge("a", "h100", 8)
        trial.commit()
    assert pool.free_acc[1] == 0 and book.alloc("a", "h100") == 8


def test_an_exception_inside_the_block_discards() -> None:
    pool, book = _state()
    with pytest.raises(RuntimeError), Statement(pool, book) as trial:
        trial.charge("a", "h100", 8)
        raise RuntimeError("the trial failed half-way")
    assert book.alloc("a", "h100") == 0
