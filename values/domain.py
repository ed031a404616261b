"""The pool's value types: flavors, nodes, jobs and gangs. Frozen, no I/O.

These are what users write (job specs, pool configs) and what the decision core
reads. Validation errors name the field path, so they double as user messages.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from values.names import Name
from values.restarts import RestartPolicy
from values.strict import Bool, Int, Number

MAX_REPLICAS = 4096
MAX_ACCELERATORS_PER_NODE = 64
# A job's command and env together, in characters: a spec is a few kilobytes; a script
# belongs in the image or the shared filesystem, not in the spec.
MAX_LAUNCH_CHARS = 32 * 1024


# A container image reference as registries and the kubelet parse it (the grammar of the
# distribution project's reference package): [host[:port]/]path[:tag][@digest], the path
# lower-case. A wrong one would otherwise be found only when the pod fails to start.
MAX_IMAGE_CHARS = 512
MAX_IMAGE_NAME_CHARS = 255  # the registries' limit on host and path together
_PATH_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_HOST_PART}(?:\.{_HOST_PART})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
IMAGE_PATTERN = re.compile(
    rf"(?P<name>(?:{_HOST}/)?{_PATH_PART}(?:/{_PATH_PART})*)"
    r"(?::[\w][\w.-]{0,127})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?"
)


def image_problem(ref: str) -> str | None:
    """Why ``ref`` is not a container image reference, or None when it is one."""
    example = "e.g. registry.example.com/ml/train:1.4 or python:3.11-slim"
    if (found := IMAGE_PATTERN.fullmatch(ref)) is None:
        return f"'{ref[:80]}' is not a container image reference ([registry/]path[:tag][@digest], {example})"
    if len(found["name"]) > MAX_IMAGE_NAME_CHARS:
        return f"the repository name is longer than {MAX_IMAGE_NAME_CHARS} characters"
    return None


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Flavor(_Frozen):
    """An accelerator kind (``h100``, ``ascend-910b``, ``mlu370`` ...)."""

    name: Name
    vendor: str = Field("nvidia", max_length=64)
    # The environment variable that restricts a process to its devices; the backends
    # set it per replica (CUDA_VISIBLE_DEVICES, ASCEND_RT_VISIBLE_DEVICES, ...).
    visibility_env: str = Field("CUDA_VISIBLE_DEVICES", pattern=r"^[A-Z_][A-Z0-9_]*$")
    description: str = Field("", max_length=512)


class Health(StrEnum):
    HEALTHY = "healthy"
    # Degraded nodes keep single-node work but get no new multi-node gangs: a gang
    # runs at the speed of its slowest link.
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"


class TopologyPath(_Frozen):
    """Where a node sits: zone / spine / rack, and its NVLink domain if it has one."""

    zone: Name = "zone-a"
    spine: Name = "spine-0"
    rack: Name = "rack-0"
    nvlink_domain: Name | None = None


class Node(_Frozen):
    name: Name
    flavor: Name
    accelerators: Int = Field(ge=0, le=MAX_ACCELERATORS_PER_NODE)
    cpu: Number = Field(64.0, ge=0, le=100_000)
    memory_gb: Number = Field(512.0, ge=0, le=1_000_000)
    topology: TopologyPath = TopologyPath()
    health: Health = Health.HEALTHY
    cordoned: Bool = False


class PriorityClass(_Frozen):
    name: Name
    value: Int = Field(ge=-1_000_000, le=1_000_000)
    # A job of this class is not preempted before it ran this long (see
    # Policy.min_runtime_yields_to); a job's own min_runtime_seconds overrides it.
    min_runtime_seconds: Number = Field(0.0, ge=0, le=30 * 86_400)


DEFAULT_PRIORITY_CLASSES = (
    PriorityClass(name="low", value=100),
    PriorityClass(name="normal", value=500),
    PriorityClass(name="high", value=1000),
)


class Gang(_Frozen):
    """``replicas`` x per-replica resources, placed all together or not at all. An
    elastic gang (``min_replicas`` below ``replicas``) starts at the largest size in
    [min_replicas, replicas] that fits; all-or-nothing applies to its minimum."""

    replicas: Int = Field(1, ge=1, le=MAX_REPLICAS)  # the most it runs with
    min_replicas: Int | None = Field(None, ge=1, le=MAX_REPLICAS)  # None: as replicas (rigid)
    accelerators: Int = Field(1, ge=0, le=MAX_ACCELERATORS_PER_NODE)
    # Accepted flavors in order of preference; the core takes the first that fits
    # without borrowing, else the first that fits at all.
    flavors: tuple[Name, ...] = Field(min_length=1, max_length=16)
    cpu: Number = Field(1.0, ge=0, le=100_000)
    memory_gb: Number = Field(4.0, ge=0, le=1_000_000)

    @model_validator(mode="before")
    @classmethod
    def _flavor_shorthand(cls, data: object) -> object:
        # `flavor: h100` is the common case; `flavors: [h100, a100]` the general one.
        if isinstance(data, dict) and "flavor" in data:
            data = dict(data)
            flavor = data.pop("flavor")
            if "flavors" in data:
                raise ValueError("give either 'flavor' or 'flavors', not both")
            data["flavors"] = (flavor,)
        return data

    @field_validator("flavors")
    @classmethod
    def _distinct(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(v)) != len(v):
            raise ValueError("flavors must not repeat")
        return v

    @field_validator("min_replicas")
    @classmethod
    def _minimum_within(cls, v: int | None, info: ValidationInfo) -> int | None:
        most = info.data.get("replicas")
        if v is not None and most is not None and v > most:
            raise ValueError(f"min_replicas ({v}) must not exceed replicas ({most})")
        return v

    @property
    def total_accelerators(self) -> int:
        """What the gang asks for at its largest."""
        return self.replicas * self.accelerators

    @property
    def least(self) -> int:
        """The fewest replicas it runs with."""
        return self.replicas if self.min_replicas is None else self.min_replicas

    @property
    def elastic(self) -> bool:
        return self.least < self.replicas

    @property
    def least_accelerators(self) -> int:
        """What it needs at the least: what quota and room are checked against."""
        return self.least * self.accelerators


class TopologyConstraint(_Frozen):
    level: Literal["rack", "spine"] = "rack"
    mode: Literal["required", "preferred"] = "preferred"


class CheckpointPolicy(_Frozen):
    # Informational for the simulator's failure model and for `describe`; training
    # code decides when it really checkpoints.
    interval_seconds: Number | None = Field(None, gt=0, le=30 * 86_400)


class JobSpec(_Frozen):
    """What an ML engineer submits."""

    name: Name
    org: Name
    team: Name | None = None
    priority: Name = "normal"
    gang: Gang
    topology: TopologyConstraint | None = None
    # Used by backfill to know when capacity frees up; a job past it is stopped.
    max_runtime_seconds: Number | None = Field(None, gt=0, le=365 * 86_400)
    # Not preempted before it ran this long (None: its priority class's value).
    min_runtime_seconds: Number | None = Field(None, ge=0, le=30 * 86_400)
    preemptible: Bool = True
    grace_period_seconds: Number = Field(30.0, ge=0, le=3600)
    restart: RestartPolicy = RestartPolicy()
    checkpoint: CheckpointPolicy = CheckpointPolicy()
    command: tuple[str, ...] = Field((), max_length=256)
    env: dict[str, str] = Field(default_factory=dict, max_length=256)
    # The container image of the job's pods on the kubernetes backend (else the backend's
    # `image` option); the ray backend runs commands in its workers' environment and
    # ignores it, with a warning.
    image: str | None = Field(None, min_length=1, max_length=MAX_IMAGE_CHARS)

    @field_validator("image")
    @classmethod
    def _image_reference(cls, v: str | None) -> str | None:
        if v is not None and (problem := image_problem(v)) is not None:
            raise ValueError(problem)
        return v

    @field_validator("env")
    @classmethod
    def _env_names(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}", key):
                raise ValueError(f"'{key}' is not a valid environment variable name")
            if key.startswith("TRAINPOOL_"):
                raise ValueError(f"'{key}': TRAINPOOL_* variables are set by the pool")
        return v

    @field_validator("command")
    @classmethod
    def _no_nul_args(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        # The kernel refuses NUL bytes in an exec's arguments and environment.
        if any("\x00" in arg for arg in v):
            raise ValueError("must not contain a NUL byte")
        return v

    @field_validator("env")
    @classmethod
    def _no_nul_values(cls, v: dict[str, str]) -> dict[str, str]:
        if any("\x00" in value for value in v.values()):
            raise ValueError("values must not contain a NUL byte")
        return v

    @model_validator(mode="after")
    def _launch_size(self) -> JobSpec:
        # The command and env travel in every launch and every listing of the job.
        size = sum(map(len, self.command)) + sum(len(k) + len(v) for k, v in self.env.items())
        if size > MAX_LAUNCH_CHARS:
            raise ValueError(
                f"command ({size} characters, env included) must be at most {MAX_LAUNCH_CHARS} characters"
            )
        return self
