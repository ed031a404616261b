"""The durable state of the pool: SQLModel tables.

Times are Unix seconds (float), the same clock the decision core reads. JSON columns
hold value types serialized by pydantic (job specs, assignments). Rows that decide
something carry a ``version`` column; writers bump it with a compare-and-set so two
writers never both win (see ``scheduler/store/jobs.py``).
"""

from __future__ import annotations

from sqlalchemy import Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


class OrgRow(SQLModel, table=True):
    __tablename__ = "orgs"

    name: str = Field(primary_key=True, max_length=63)
    weight: float = 1.0
    created_at: float = 0.0


class TeamRow(SQLModel, table=True):
    __tablename__ = "teams"

    org: str = Field(primary_key=True, foreign_key="orgs.name", max_length=63)
    name: str = Field(primary_key=True, max_length=63)
    weight: float = 1.0


class QuotaRow(SQLModel, table=True):
    __tablename__ = "quotas"

    org: str = Field(primary_key=True, foreign_key="orgs.name", max_length=63)
    flavor: str = Field(primary_key=True, max_length=63)
    nominal: int = 0
    borrowing_limit: int | None = None
    lending_limit: int | None = None
    version: int = 0


class TokenRow(SQLModel, table=True):
    __tablename__ = "tokens"

    id: str = Field(primary_key=True, max_length=32)
    # sha256 of the secret, hex; the secret itself is shown once and never stored.
    secret_hash: str = Field(max_length=64, unique=True)
    role: str = Field(max_length=16)
    org: str | None = Field(default=None, max_length=63)
    name: str = Field(default="", max_length=128)
    created_at: float = 0.0
    created_by: str | None = Field(default=None, max_length=32)
    revoked_at: float | None = None
    # Refused from this moment on; None: never expires (the bootstrap admin token).
    expires_at: float | None = None


class NodeRow(SQLModel, table=True):
    __tablename__ = "nodes"

    name: str = Field(primary_key=True, max_length=63)
    flavor: str = Field(max_length=63)
    accelerators: int = 0
    cpu: float = 0.0
    memory_gb: float = 0.0
    zone: str = Field(default="zone-a", max_length=63)
    spine: str = Field(default="spine-0", max_length=63)
    rack: str = Field(default="rack-0", max_length=63)
    nvlink_domain: str | None = Field(default=None, max_length=63)
    health: str = Field(default="healthy", max_length=16)
    cordoned: bool = False
    # False once the backend stops reporting it; kept for history and `nodes describe`.
    present: bool = True
    # What the node's agent last said (probes: pingmesh, NICs, GPUs); the effective
    # health is the worse of this and the backend's. Stands until the agent reports again.
    reported_health: str | None = Field(default=None, max_length=16)
    reported_reason: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    reported_at: float | None = None
    # Validation before hand-over (values.validation): the state, when it was entered,
    # why; the current run's number (its gang key), its peer, and the runs that said
    # nothing about the node. Cordoned while pending or running.
    validation: str | None = Field(default=None, max_length=16)
    validation_message: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    validation_at: float | None = None
    validation_run: int = 0
    validation_peer: str | None = Field(default=None, max_length=63)
    validation_tries: int = 0
    updated_at: float = 0.0
    version: int = 0


class JobRow(SQLModel, table=True):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("org", "client_request_id", name="uq_jobs_org_request"),
        Index("ix_jobs_state_org", "state", "org"),
    )

    id: str = Field(primary_key=True, max_length=32)
    org: str = Field(max_length=63, index=True)
    team: str | None = Field(default=None, max_length=63)
    name: str = Field(max_length=63)
    spec: str = Field(sa_column=Column(Text, nullable=False))  # JobSpec as JSON
    state: str = Field(max_length=16)
    priority: int = 0
    submitted_at: float = 0.0
    submitted_by: str | None = Field(default=None, max_length=32)
    client_request_id: str | None = Field(default=None, max_length=128)
    attempt: int = 0
    # Restarts charged to the job's own failures (infrastructure failures are free).
    restarts: int = 0
    eligible_at: float = 0.0
    avoid_nodes: str = Field(default="[]", sa_column=Column(Text, nullable=False, default="[]"))
    preempted_by: str | None = Field(default=None, max_length=32)
    # Victims were stopped for this job and have exited: it goes first until admitted.
    nominated: bool = False
    # Back after an infrastructure failure or a health move: first in its org and priority,
    # offered ``prefer_nodes`` (JSON, rank order) first; both cleared on admission. An
    # elastic gang stopped to resize is expedited and nominated too, and restarts at
    # ``resize_to`` replicas at most (all three cleared on admission).
    expedite: bool = False
    prefer_nodes: str = Field(default="[]", sa_column=Column(Text, nullable=False, default="[]"))
    resize_to: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    # The latest decision about the job, for `queue` and `describe`.
    reason: str | None = Field(default=None, max_length=32)
    message: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    estimated_start: float | None = None
    failure_class: str | None = Field(default=None, max_length=32)
    exit_code: int | None = None
    version: int = 0


class JobEventRow(SQLModel, table=True):
    """Append-only: one row per transition or notable fact, never updated."""

    __tablename__ = "job_events"

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(max_length=32, index=True)
    at: float
    attempt: int = 0
    event: str = Field(max_length=32)
    from_state: str | None = Field(default=None, max_length=16)
    to_state: str | None = Field(default=None, max_length=16)
    reason: str | None = Field(default=None, max_length=32)
    message: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))


class AllocationRow(SQLModel, table=True):
    """The nodes one attempt of a job holds. Unique per (job, attempt): a gang is
    allocated, and so launched, at most once per attempt."""

    __tablename__ = "allocations"
    __table_args__ = (
        UniqueConstraint("job_id", "attempt", name="uq_allocations_job_attempt"),
        Index("ix_allocations_state", "state"),
    )

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(max_length=32)
    attempt: int = 0
    org: str = Field(max_length=63)
    team: str | None = Field(default=None, max_length=63)
    flavor: str = Field(max_length=63)
    assignments: str = Field(sa_column=Column(Text, nullable=False))  # [[node, replicas], ...]
    accelerators: int = 0
    reason: str = Field(max_length=32)  # the PlaceReason
    # active: holds its nodes; stopping: asked to stop, still holds them; released: gone.
    state: str = Field(default="active", max_length=16)
    preempted_for: str | None = Field(default=None, max_length=32)
    created_at: float = 0.0
    stop_requested_at: float | None = None
    released_at: float | None = None
    # Usage is accrued up to here, so a restart neither loses nor double-counts it.
    accounted_until: float = 0.0


class CheckpointRow(SQLModel, table=True):
    __tablename__ = "checkpoints"

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(max_length=32, index=True)
    attempt: int = 0
    path: str = Field(sa_column=Column(Text, nullable=False))
    step: int | None = None
    at: float = 0.0


class ProgressRow(SQLModel, table=True):
    """A running gang's progress as the loop keeps it (``values.progress.GangProgress``,
    as JSON): one row per job, replaced when its attempt changes."""

    __tablename__ = "progress"

    job_id: str = Field(primary_key=True, max_length=32)
    attempt: int = 0
    data: str = Field(sa_column=Column(Text, nullable=False))
    # The rank whose straggler verdict this attempt already recorded (event, blame).
    straggler_noted: int | None = None
    updated_at: float = 0.0


class UsageRow(SQLModel, table=True):
    """Accelerator-seconds per org, team and flavor, summed per interval (an hour)."""

    __tablename__ = "usage"

    org: str = Field(primary_key=True, max_length=63)
    team: str = Field(primary_key=True, default="", max_length=63)
    flavor: str = Field(primary_key=True, max_length=63)
    interval_start: float = Field(primary_key=True)
    accelerator_seconds: float = 0.0


class AuditRow(SQLModel, table=True):
    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True)
    at: float
    actor: str | None = Field(default=None, max_length=32)
    action: str = Field(max_length=64)
    target: str = Field(max_length=256)
    detail: str = Field(default="{}", sa_column=Column(Text, nullable=False, default="{}"))


class LeaseRow(SQLModel, table=True):
    """Who runs the control loop. ``epoch`` grows on every change of holder, so a
    deposed leader's late writes can be told apart (a fencing token)."""

    __tablename__ = "leases"

    name: str = Field(primary_key=True, max_length=63)
    holder: str = Field(max_length=128)
    epoch: int = 0
    expires_at: float = 0.0


import scheduler.store.agents  # noqa: E402, F401  (agent tables on the same metadata; issue 6)
