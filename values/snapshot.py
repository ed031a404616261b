"""The immutable view of the pool that ``decide`` reads: nodes, orgs, running and
pending jobs, decayed usage, and the policy knobs. Nothing here reads a clock."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from values.decisions import PreemptReason
from values.domain import Flavor, JobSpec, Node
from values.quotas import Org


@dataclass(frozen=True, slots=True)
class PendingJob:
    id: str
    spec: JobSpec
    priority: int  # the numeric value of spec.priority's class
    submitted_at: float
    attempt: int = 0
    # Restart backoff: the job is not eligible before this time.
    eligible_at: float = 0.0
    # Nodes blamed for this job's earlier failures; a restart avoids them.
    avoid_nodes: frozenset[str] = frozenset()
    # The job whose reclaim or preemption stopped this one; it may not preempt it back.
    preempted_by: str | None = None
    # Victims were stopped for this job (they have exited): it is considered first.
    nominated: bool = False
    # Accelerator-seconds held in earlier attempts (see RunningJob.service).
    service: float = 0.0
    # Requeued after an infrastructure failure or a health move (not its own fault): in
    # the fair order it goes first among its org's jobs of its priority.
    expedite: bool = False
    # The nodes its interrupted attempt held, less the one that failed it, in rank order:
    # offered first, so that it comes back where it was (its topology kept).
    prefer_nodes: tuple[str, ...] = ()
    # An elastic gang stopped to grow or shrink: it restarts at no more than this size
    # (nominated, its kept ranks preferred), so that it does not take back at once the
    # room a shrink gave up, nor more than a grow found idle.
    resize_to: int | None = None


@dataclass(frozen=True, slots=True)
class RunningJob:
    id: str
    spec: JobSpec
    priority: int
    submitted_at: float
    started_at: float  # this attempt's admission: a restart has the whole time limit again
    flavor: str
    assignments: tuple[tuple[str, int], ...]  # (node, replicas)
    last_checkpoint_at: float | None = None
    # Already asked to stop (preemption or move in progress): still holds its nodes
    # until it exits, but is never chosen as a victim again.
    terminating: bool = False
    preempted_for: str | None = None
    # Accelerator-seconds held in earlier attempts (least-attained-service policies rank
    # on it plus this attempt's); 0 where nobody counts it.
    service: float = 0.0
    # Not preempted before this attempt ran this long (the spec's, else its class's).
    min_runtime: float = 0.0

    @property
    def replicas(self) -> int:
        """What this attempt runs with (an elastic gang may run below spec.gang.replicas)."""
        return sum(n for _, n in self.assignments)

    @property
    def accelerators(self) -> int:
        return self.spec.gang.accelerators * self.replicas

    @property
    def expected_end(self) -> float | None:
        limit = self.spec.max_runtime_seconds
        return None if limit is None else self.started_at + limit


class Ordering(StrEnum):
    FAIR = "fair"  # weighted dominant-resource share with decayed usage, then priority/age
    FIFO = "fifo"  # one global queue: submit time, then id (priority ignored)
    PRIORITY = "priority"  # org-blind: priority, then submit time (Slurm-like with fairshare off)


class WithinOrg(StrEnum):
    """How the fair order ranks one org's jobs of equal priority."""

    AGE = "age"  # oldest submission first (Kueue's and Slurm's FIFO within a queue)
    # Highest response ratio next: (wait + limit) / limit, so a short job goes before a
    # long one that arrived a little earlier, and every job's ratio grows while it waits
    # (no starvation). Jobs without max_runtime_seconds count the median limit of their
    # org's waiting jobs; with no limits at all it is AGE.
    RESPONSE_RATIO = "response_ratio"


DEFAULT_ACTIONS = ("evacuate", "allocate", "preempt", "reserve", "grow")


@dataclass(frozen=True, slots=True)
class Policy:
    """The named steps of a cycle and how they combine; defaults are trainpool's own."""

    ordering: Ordering = Ordering.FAIR
    within_org: WithinOrg = WithinOrg.RESPONSE_RATIO  # the FAIR order's rank inside an org
    borrowing: bool = True  # may orgs use idle capacity above nominal?
    reclaim: bool = True  # may an org below nominal preempt borrowers?
    priority_preemption: bool = True  # within an org, may higher priority preempt lower?
    backfill: bool = True  # EASY backfill with a reservation for the blocked head gang
    # Strict: a blocked job stops everything behind it (plain FIFO); otherwise
    # later jobs may run if they do not delay it (with backfill) or freely (without).
    strict_order: bool = False
    half_life_seconds: float = 7 * 86_400.0
    move_off_unhealthy: bool = True
    # Preemptions that may stop a job before its min_runtime (reclaim never may): a move
    # off a failing node is not worth waiting for; a higher priority waits by default.
    min_runtime_yields_to: tuple[PreemptReason, ...] = (PreemptReason.HEALTH,)
    # An elastic gang does not grow before its attempt ran this long (anti-flap: a shrink
    # or a grow is a restart, and each restart costs the work since its checkpoint).
    grow_after_seconds: float = 1800.0
    # The cycle's named actions in the order they run (``scheduler/core/actions``); the
    # switches above tune them (evacuate: move_off_unhealthy; preempt: reclaim and
    # priority_preemption; reserve: backfill). An action not listed does not run.
    actions: tuple[str, ...] = DEFAULT_ACTIONS


@dataclass(frozen=True)
class Snapshot:
    flavors: tuple[Flavor, ...]
    nodes: tuple[Node, ...]
    orgs: tuple[Org, ...]
    running: tuple[RunningJob, ...] = ()
    pending: tuple[PendingJob, ...] = ()
    # Half-life-decayed accelerator-seconds per org and flavor, as of the snapshot's time.
    usage: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    policy: Policy = Policy()
