"""Baselines that the core's own knobs express, each next to the scheduler it stands for."""

from __future__ import annotations

from scheduler.sim.policies.base import CorePolicy
from values.snapshot import Ordering, Policy, WithinOrg

FIFO = CorePolicy(
    "fifo",
    Policy(
        ordering=Ordering.FIFO,
        borrowing=False,
        reclaim=False,
        priority_preemption=False,
        backfill=False,
        strict_order=True,
    ),
    "strict gang FIFO over the whole pool: the first job that does not fit blocks all behind it; "
    "each org limited to its nominal quota (no borrowing)",
)

SLURM = CorePolicy(
    "slurm",
    Policy(
        ordering=Ordering.FAIR,
        within_org=WithinOrg.AGE,
        borrowing=False,
        reclaim=False,
        priority_preemption=False,
        backfill=True,
    ),
    "Slurm multifactor-like: decayed fair-share order (the core's FAIR), EASY backfill with a "
    "reservation for the blocked head, each org limited to its nominal quota (GrpTRES), no preemption",
)

KUEUE = CorePolicy(
    "kueue",
    Policy(backfill=False, within_org=WithinOrg.AGE),
    "Kueue-like: nominal quotas with borrowing of idle capacity and reclaim by preemption, "
    "BestEffortFIFO (a blocked head does not block others), no backfill reservation",
)

TRAINPOOL = CorePolicy(
    "trainpool",
    Policy(),
    "trainpool's default Policy(): fair share with decayed usage, highest response ratio within an org, "
    "borrowing, reclaim, EASY backfill",
)
