"""Rejections: jobs that can never run leave the queue with a reason, never a status."""

from __future__ import annotations

import pytest

from values.decisions import PendingReason, RejectReason
from values.snapshot import Policy

from .scenario import (
    A100,
    ANY,
    H100,
    RACK_PREFERRED,
    RACK_REQUIRED,
    Case,
    check,
    node,
    org,
    pending,
    quota,
    rack,
    sick,
    snapshot,
)

TWO_RACKS = [rack("r0", 2), rack("r1", 2)]
ORG_A = org("a", h100=32)

CASES = [
    Case(
        "unknown org",
        snapshot(TWO_RACKS, [ORG_A], pending=[pending("j", org="nobody")]),
        rejected={"j": RejectReason.UNKNOWN_ORG},
    ),
    Case(
        "unknown flavor among accepted ones",
        snapshot(TWO_RACKS, [ORG_A], pending=[pending("j", flavors=(H100, "tpu-v5"))]),
        rejected={"j": RejectReason.UNKNOWN_FLAVOR},
    ),
    Case(
        "gang larger than the whole flavor",
        snapshot(TWO_RACKS, [ORG_A], pending=[pending("j", replicas=5)]),
        rejected={"j": RejectReason.NEVER_FITS},
    ),
    Case(
        "replica larger than any node",
        snapshot(TWO_RACKS, [ORG_A], pending=[pending("j", acc=16)]),
        rejected={"j": RejectReason.NEVER_FITS},
    ),
    Case(
        "replica needs more CPU than a node has",
        snapshot(TWO_RACKS, [ORG_A], pending=[pending("j", acc=1, cpu=128)]),
        rejected={"j": RejectReason.NEVER_FITS},
    ),
    Case(
        "replica needs more memory than a node has",
        snapshot(TWO_RACKS, [ORG_A], pending=[pending("j", acc=1, mem=1024)]),
        rejected={"j": RejectReason.NEVER_FITS},
    ),
    Case(
        "required rack larger than every rack",
        snapshot(TWO_RACKS, [ORG_A], pending=[pending("j", replicas=3, topology=RACK_REQUIRED)]),
        rejected={"j": RejectReason.NEVER_FITS},
    ),
    Case(
        "preferred rack larger than every rack still runs across racks",
        snapshot(TWO_RACKS, [ORG_A], pending=[pending("j", replicas=3, topology=RACK_PREFERRED)]),
        placed={"j": ANY},
    ),
    Case(
        "never-fits ignores health: a sick pool is a wait, not a rejection",
        snapshot([sick(node("n0")), node("n1")], [ORG_A], pending=[pending("j", replicas=2)]),
        pending={"j": PendingReason.HEALTH},
    ),
    Case(
        "never fits on one flavor, fits on another: not rejected",
        snapshot(
            [rack("r0", 1), rack("g0", 2, flavor=A100)],
            [org("a", h100=8, a100=16)],
            pending=[pending("j", replicas=2, flavors=(H100, A100))],
        ),
        placed={"j": ANY},
    ),
    Case(
        "larger than nominal + borrowing limit",
        snapshot(TWO_RACKS, [org("a", h100=quota(8, borrow=8))], pending=[pending("j", replicas=3)]),
        rejected={"j": RejectReason.NO_QUOTA},
    ),
    Case(
        "org without a quota row and borrowing limit 0 elsewhere: only borrows, so fits",
        snapshot(TWO_RACKS, [org("a")], pending=[pending("j", replicas=3)]),
        placed={"j": ANY},
    ),
    Case(
        "with borrowing off the ceiling is nominal",
        snapshot(
            TWO_RACKS,
            [org("a", h100=8)],
            pending=[pending("j", replicas=2)],
            policy=Policy(borrowing=False),
        ),
        rejected={"j": RejectReason.NO_QUOTA},
    ),
    Case(
        "with borrowing off, zero nominal can never run",
        snapshot(TWO_RACKS, [org("a")], pending=[pending("j")], policy=Policy(borrowing=False)),
        rejected={"j": RejectReason.NO_QUOTA},
    ),
    Case(
        "more than the org could ever hold while quotas stay: lenders lend nothing",
        # b may borrow without limit, but a (the only nominal) lends nothing: private 16,
        # shared pool 16 - 16 = 0, so b could never hold 8.
        snapshot(rack("r0", 2), [org("a", h100=quota(16, lend=0)), org("b")], pending=[pending("j", "b")]),
        rejected={"j": RejectReason.NO_QUOTA},
    ),
    Case(
        "the unlendable bound counts the org's own private share",
        # a: nominal 8, private 8 (lends nothing); c: nominal 8, private 8. shared = 24 - 16 = 8:
        # a can hold at most 8 + 8 = 16 of the 24.
        snapshot(
            rack("r0", 3),
            [org("a", h100=quota(8, lend=0)), org("c", h100=quota(8, lend=0))],
            pending=[pending("fits", "a", replicas=2), pending("never", "a", replicas=3)],
        ),
        placed={"fits": ANY},
        rejected={"never": RejectReason.NO_QUOTA},
    ),
    Case(
        "no quota on one flavor, quota on another: not rejected",
        snapshot(
            [rack("r0", 2), rack("g0", 2, flavor=A100)],
            [org("a", h100=quota(0, borrow=0), a100=16)],
            pending=[pending("j", replicas=2, flavors=(H100, A100))],
        ),
        placed={"j": ANY},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_rejections(case: Case) -> None:
    d = check(case)
    for r in d.rejections:
        assert r.message, f"{r.job_id}: a rejection says why"
