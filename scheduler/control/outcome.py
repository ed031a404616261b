"""What one cycle carries between its phases: the backend actions persist decided
(``Actions``, carried out once by ``act``), and what happened (``Outcome``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from scheduler.backends.base import Launch
from scheduler.checkpoint_folder import DEFAULT_ROOT
from scheduler.quarantine import QuarantineRule
from scheduler.store.tables import AllocationRow, JobRow
from values.domain import JobSpec
from values.progress import ProgressRule
from values.validation import ValidationRule


@dataclass
class Outcome:
    """What one cycle did; feeds metrics, logs and tests."""

    admitted: list[str] = field(default_factory=list)
    launched: list[str] = field(default_factory=list)
    started: list[tuple[str, float]] = field(default_factory=list)  # (job, seconds since submit)
    preempted: list[tuple[str, str]] = field(default_factory=list)  # (job, reason)
    resized: list[tuple[str, str]] = field(default_factory=list)  # (job, "grow" | "shrink")
    restarted: list[tuple[str, str]] = field(default_factory=list)  # (job, failure class)
    finished: list[tuple[str, str]] = field(default_factory=list)  # (job, final state)
    rejected: list[str] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)  # nodes cordoned for repeated blame
    # Work lost when a gang ended early: (org, reason, accelerator-seconds since its last
    # checkpoint, or since its start without one).
    lost: list[tuple[str, str, float]] = field(default_factory=list)
    # (reason, seconds) from a failure or preemption to the job running again.
    recovered: list[tuple[str, float]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # decisions dropped: the job changed meanwhile
    # Verdicts on gangs' progress: (org, "hang" | "straggler").
    verdicts: list[tuple[str, str]] = field(default_factory=list)
    validations: list[tuple[str, str]] = field(default_factory=list)  # (node, result)


@dataclass(frozen=True)
class ApplyOptions:
    # Each job checkpoints under <root>/<job id>/ (TRAINPOOL_CHECKPOINT_DIR), one folder
    # across its attempts so that a restart finds what the previous attempt wrote.
    checkpoint_root: str = DEFAULT_ROOT
    quarantine: QuarantineRule = field(default_factory=QuarantineRule)
    progress: ProgressRule = field(default_factory=ProgressRule)
    validation: ValidationRule = field(default_factory=ValidationRule)
    # Each flavor's device-visibility variable: a validation run's rank 0 takes every
    # device of the node under test.
    visibility: dict[str, str] = field(default_factory=dict)


@dataclass
class Actions:
    """Committed before they are carried out: a crash in between is repaired by the next
    cycle's persist phase, which asks again (launches and stops are idempotent by key)."""

    launches: list[tuple[AllocationRow, JobRow, JobSpec]] = field(default_factory=list)
    stops: list[tuple[str, float]] = field(default_factory=list)  # (key, grace seconds)
    forgets: list[str] = field(default_factory=list)
    validations: list[Launch] = field(default_factory=list)  # node validation gangs
