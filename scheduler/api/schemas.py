"""Request and response bodies of the API."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from scheduler.api.redact import Redactor
from scheduler.store.tables import AllocationRow, JobEventRow, JobRow, NodeRow, TokenRow
from scheduler.store.tokens import Role
from values.domain import Health, JobSpec
from values.names import Name
from values.strict import Count, Int, Number


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SubmitRequest(_In):
    spec: JobSpec
    # Retries with the same id return the first submission instead of a second job.
    client_request_id: str | None = Field(None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")


class QuotaRequest(_In):
    nominal: Int = Field(0, ge=0, le=10_000_000)
    borrowing_limit: Int | None = Field(None, ge=0, le=10_000_000)
    lending_limit: Int | None = Field(None, ge=0, le=10_000_000)


class QuotaPatch(_In):
    """Only the fields given change; a limit given as null becomes no limit."""

    nominal: Int | None = Field(None, ge=0, le=10_000_000)
    borrowing_limit: Int | None = Field(None, ge=0, le=10_000_000)
    lending_limit: Int | None = Field(None, ge=0, le=10_000_000)


class TeamRequest(_In):
    weight: Number = Field(1.0, gt=0, le=1e6)


class OrgRequest(_In):
    name: Name
    weight: Number = Field(1.0, gt=0, le=1e6)


DEFAULT_TOKEN_TTL = 90 * 86_400.0


class TokenRequest(_In):
    role: Role
    org: Name | None = None
    name: str = Field("", max_length=128)
    # Seconds until the token is refused; default 90 days, at most 10 years.
    ttl_seconds: Number = Field(DEFAULT_TOKEN_TTL, gt=0, le=10 * 365 * 86_400)


class CheckpointRequest(_In):
    path: str = Field(min_length=1, max_length=4096)
    step: Count | None = None


class Job(BaseModel):
    id: str
    name: str
    org: str
    team: str | None
    state: str
    priority: int
    attempt: int
    restarts: int
    submitted_at: float
    started_at: float | None  # the first attempt's start
    attempt_started_at: float | None  # the current attempt's: its limit and elapsed time count from here
    finished_at: float | None
    reason: str | None
    message: str
    estimated_start: float | None
    failure_class: str | None
    exit_code: int | None
    client_request_id: str | None
    accelerators: int  # what the current attempt holds; while none: what it asks for at its most
    # Gang size: what the current attempt runs with (None while it holds no nodes), and
    # an elastic gang's range (min = max for a rigid one).
    replicas: int | None
    min_replicas: int
    max_replicas: int
    flavor: str | None  # where the current attempt runs; None until it is placed
    nodes: list[str]  # the nodes the current attempt holds
    spec: dict[str, Any]
    allocation: dict[str, Any] | None = None
    # Each time an elastic gang was restarted at another size (describe only).
    resizes: list[dict[str, Any]] | None = None
    # The current attempt's progress, from what its ranks report (describe only).
    progress: dict[str, Any] | None = None
    # Of the accelerator time its attempts held, what was kept and what was lost (describe only).
    goodput: dict[str, Any] | None = None

    @classmethod
    def of(
        cls, row: JobRow, alloc: AllocationRow | None = None, *, detail: bool = False,
        redact: Redactor | None = None,
    ) -> Job:  # fmt: skip
        """``alloc``: the current attempt's allocation, if it has one; ``detail`` adds its
        replicas per node and state (for describe)."""
        data = row.model_dump(
            exclude={"spec", "avoid_nodes", "version", "eligible_at", "preempted_by", "submitted_by"}
        )
        if redact is not None:
            data["message"] = redact.text(data["message"])
        spec = json.loads(row.spec)
        gang = spec["gang"]
        mine = alloc if alloc is not None and alloc.attempt == row.attempt else None
        held = mine is not None and mine.state != "released"
        pairs: list[list[Any]] = json.loads(mine.assignments) if held and mine is not None else []
        allocation = None
        if detail and held and mine is not None:
            nodes = [{"node": n, "replicas": k} for n, k in pairs]
            allocation = {"flavor": mine.flavor, "nodes": nodes, "reason": mine.reason, "state": mine.state}
        size = sum(k for _, k in pairs) if held else None
        return cls(
            **data,
            attempt_started_at=mine.created_at if mine is not None else None,
            accelerators=(gang["replicas"] if size is None else size) * gang["accelerators"],
            replicas=size,
            min_replicas=gang.get("min_replicas") or gang["replicas"],
            max_replicas=gang["replicas"],
            flavor=mine.flavor if mine is not None else None,
            nodes=[n for n, _ in pairs],
            spec=spec,
            allocation=allocation,
        )


class Event(BaseModel):
    at: float
    attempt: int
    event: str
    from_state: str | None
    to_state: str | None
    reason: str | None
    message: str

    @classmethod
    def of(cls, row: JobEventRow, redact: Redactor) -> Event:
        data = row.model_dump(exclude={"id", "job_id"})
        return cls.model_validate({**data, "message": redact.text(data["message"])})


class Node(BaseModel):
    name: str
    flavor: str
    accelerators: int
    cpu: float
    memory_gb: float
    zone: str
    spine: str
    rack: str
    health: str  # effective: the worse of the backend's and the agent's
    cordoned: bool
    present: bool
    reported_health: str | None
    reported_reason: str
    reported_at: float | None
    validation: str | None = None  # pending, running, passed, failed (None: never asked)
    validation_message: str = ""
    validation_at: float | None = None
    validation_peer: str | None = None
    allocated: int = 0

    @classmethod
    def of(cls, row: NodeRow, allocated: int = 0) -> Node:
        from scheduler.store.nodes import effective_health

        data = {**row.model_dump(), "health": effective_health(row).value, "allocated": allocated}
        return cls.model_validate(data)


class HealthReport(_In):
    health: Health
    reason: str = Field("", max_length=1000)


class Token(BaseModel):
    id: str
    role: str
    org: str | None
    name: str
    created_at: float
    created_by: str | None
    revoked_at: float | None
    expires_at: float | None = None

    @classmethod
    def of(cls, row: TokenRow) -> Token:
        return cls.model_validate(row.model_dump(exclude={"secret_hash"}))


class NewToken(Token):
    secret: str  # shown once


class RevokedToken(Token):
    also_revoked: list[str]  # the tokens it made, revoked with it
