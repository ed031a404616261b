"""Inside an org, jobs of equal priority go by highest response ratio (wait + limit) /
limit: short jobs first, and every job's turn comes as it waits."""

from __future__ import annotations

from values.snapshot import Policy, WithinOrg

from .scenario import org, pending, rack, snapshot

HOUR = 3600.0
ONE_NODE = rack("r0", 1)
A = [org("a", h100=8)]


def _placed(*jobs, now: float, policy: Policy | None = None) -> str:  # type: ignore[no-untyped-def]
    from scheduler.core import decide

    out = decide(snapshot(ONE_NODE, A, [], list(jobs), policy=policy), now)
    (placement,) = out.placements
    return placement.job_id


def test_a_short_job_goes_before_a_long_one_that_came_a_little_earlier() -> None:
    long = pending("long", submitted=0.0, runtime=10 * HOUR)
    short = pending("short", submitted=100.0, runtime=HOUR)
    assert _placed(long, short, now=200.0) == "short"
    age = Policy(within_org=WithinOrg.AGE)
    assert _placed(long, short, now=200.0, policy=age) == "long"


def test_a_long_job_that_has_waited_goes_first() -> None:
    # long: (40 h + 10 h) / 10 h = 5; short, just arrived: about 1.
    long = pending("long", submitted=0.0, runtime=10 * HOUR)
    short = pending("short", submitted=40 * HOUR - 10, runtime=HOUR)
    assert _placed(long, short, now=40 * HOUR) == "long"


def test_priority_still_comes_first() -> None:
    long = pending("long", submitted=0.0, runtime=10 * HOUR, prio=1000)
    short = pending("short", submitted=100.0, runtime=HOUR)
    assert _placed(long, short, now=200.0) == "long"


def test_a_job_without_a_limit_counts_the_usual_limit_of_its_org() -> None:
    # Limits 60 s and 2 h: the usual (median) one is 3,630 s. The unlimited job has waited
    # 10,000 s: (10,000 + 3,630) / 3,630 = 3.8, above the short job's (10 + 60) / 60 = 1.2.
    # (Counted as never ending, its ratio would stay 1 and it would never go first.)
    unlimited = pending("unlimited", submitted=0.0)
    short = pending("short", submitted=9_990.0, runtime=60.0)
    other = pending("other", submitted=9_995.0, runtime=2 * HOUR)
    assert _placed(unlimited, short, other, now=10_000.0) == "unlimited"


def test_without_any_limit_the_oldest_goes_first() -> None:
    assert _placed(pending("b", submitted=5.0), pending("a", submitted=1.0), now=10.0) == "a"
