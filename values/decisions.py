"""What the decision core returns: placements, preemptions, reservations, rejections,
and a typed reason for every job still pending.

A reason's value is at once the metric label, the event text's key and the API
field, so the words below are part of the contract.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class PlaceReason(StrEnum):
    NOMINAL = "nominal"  # within the org's guaranteed quota
    BORROWED = "borrowed"  # uses idle capacity above nominal; preemptible by reclaim
    BACKFILL = "backfill"  # ran ahead of a reservation it provably does not delay


class PreemptReason(StrEnum):
    RECLAIM = "reclaim"  # an org below nominal takes back capacity lent to a borrower
    PRIORITY = "priority"  # a higher-priority job of the same org needs the capacity
    HEALTH = "health"  # the job runs on an unhealthy node and is moved elsewhere
    SERVICE = "service"  # a job with less attained service needs the room (least_attained)
    GROW = "grow"  # an elastic gang restarts larger, into room nobody waits for


class PendingReason(StrEnum):
    QUOTA = "quota"  # the org is at nominal + borrowing_limit for every accepted flavor
    LENDING = "lending"  # no other org lends enough idle quota right now
    CAPACITY = "capacity"  # quota allows it, but no set of nodes has room
    TOPOLOGY = "topology"  # room exists, but not inside one rack/spine as required
    HEALTH = "health"  # room exists only on degraded, unhealthy or cordoned nodes
    RESERVED_FOR = "reserved_for"  # room exists, but is held for an earlier gang
    PREEMPTING = "preempting"  # victims were asked to stop; the job starts when they have
    BACKOFF = "backoff"  # restarting after a failure; not eligible before its backoff ends
    RESERVED = "reserved"  # this job holds the reservation; starts at estimated_start
    BLOCKED = "blocked"  # behind an earlier job of its own org (priority, then age)


class RejectReason(StrEnum):
    UNKNOWN_ORG = "unknown_org"
    UNKNOWN_FLAVOR = "unknown_flavor"
    NEVER_FITS = "never_fits"  # larger than the whole pool, even empty and healthy
    NO_QUOTA = "no_quota"  # larger than nominal + borrowing_limit in every flavor


@dataclass(frozen=True, slots=True)
class Placement:
    job_id: str
    flavor: str
    # (node name, replicas on it), in rank order: replica ranks fill nodes in this order.
    assignments: tuple[tuple[str, int], ...]
    reason: PlaceReason
    borrowed: int = 0  # accelerators above the org's nominal after this placement


@dataclass(frozen=True, slots=True)
class Preemption:
    job_id: str
    reason: PreemptReason
    beneficiary: str | None  # the pending job this makes room for (None for HEALTH)
    message: str = ""
    # A resize of an elastic gang rather than a plain stop: it restarts from its
    # checkpoint at ``resize_to`` replicas, first in the queue, offered ``keep`` (its
    # ranks kept, in rank order) first (a shrink keeps its minimum; a grow keeps all).
    keep: tuple[tuple[str, int], ...] = ()
    resize_to: int | None = None

    @property
    def resize(self) -> bool:
        return self.resize_to is not None

    @property
    def kept_nodes(self) -> tuple[str, ...]:
        """A resize's kept ranks' nodes, in rank order: where it is offered room first."""
        return tuple(n for n, _ in self.keep)


@dataclass(frozen=True, slots=True)
class Reservation:
    job_id: str
    flavor: str
    nodes: tuple[str, ...]
    start_at: float  # when the held nodes will have room, from runtime limits


@dataclass(frozen=True, slots=True)
class Rejection:
    job_id: str
    reason: RejectReason
    message: str


@dataclass(frozen=True, slots=True)
class PendingStatus:
    reason: PendingReason
    message: str = ""
    estimated_start: float | None = None
    blocked_by: str | None = None  # the job holding a reservation or ahead in the org


@dataclass(slots=True)
class Decisions:
    placements: list[Placement] = field(default_factory=list)
    preemptions: list[Preemption] = field(default_factory=list)
    reservations: list[Reservation] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    pending: dict[str, PendingStatus] = field(default_factory=dict)

    def placed(self, job_id: str) -> Placement | None:
        return next((p for p in self.placements if p.job_id == job_id), None)

    def preempted_ids(self) -> list[str]:
        return [p.job_id for p in self.preemptions]
