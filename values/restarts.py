"""Which failures restart a job: the failure categories the backends can tell apart, the
job's restart policy, and the one rule that decides (``RestartPolicy.verdict``), which the
service's control loop and the simulator both apply. Pure, no I/O.

A spec's ``restart.on`` names a rule per category: ``always``, ``never``, or a number of
restarts for failures of that category. A category it does not name keeps the default,
which is what a spec meant before categories existed: infrastructure failures and health
moves always restart, a timeout never does, and the job's own failures (oom, signal, exit)
share ``max_restarts``; a hang and a straggler's move restart up to 3 times each.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from values.strict import Int, Number

MAX_RESTARTS = 1000


class FailureCategory(StrEnum):
    # Not the job's fault: free (no backoff), and the job is requeued at the head of its
    # org's queue with its surviving nodes offered first.
    # A replica was lost: its node died or left the pool, its pod was evicted or deleted
    # outside trainpool, its actor died; or the backend lost the gang or could not launch it.
    INFRASTRUCTURE = "infrastructure"
    HEALTH = "health"  # moved off a node the health model judged unhealthy
    # The job's own: charged, with exponential backoff.
    OOM = "oom"  # killed for memory: exit 137 (SIGKILL, the OOM killer's signal) or OOMKilled
    SIGNAL = "signal"  # killed by another signal (SIGSEGV, SIGBUS, SIGABRT, ...)
    EXIT = "exit"  # exited non-zero, or could not start (its image or config is wrong)
    TIMEOUT = "timeout"  # ran past max_runtime_seconds
    # Stopped by the pool from what its progress reports said (values.progress): not
    # charged and requeued first, like infrastructure, but with a limit of their own by
    # default, since a job whose own code deadlocks hangs on every node.
    HANG = "hang"  # no rank advanced for the hang limit
    STRAGGLER = "straggler"  # moved off the node of a rank slower than its peers

    @property
    def infrastructure(self) -> bool:
        """Not the job's fault: no backoff, not charged, first in its org's queue."""
        return self in _NOT_ITS_FAULT

    @property
    def failure_class(self) -> str:
        """The coarser class stored on the job and used as the metrics' label."""
        if self in (FailureCategory.INFRASTRUCTURE, FailureCategory.HEALTH):
            return "infrastructure"
        if self in (FailureCategory.TIMEOUT, FailureCategory.HANG, FailureCategory.STRAGGLER):
            return self.value
        return "job"


_NOT_ITS_FAULT = frozenset(
    {FailureCategory.INFRASTRUCTURE, FailureCategory.HEALTH, FailureCategory.HANG, FailureCategory.STRAGGLER}
)
# Failures of these categories count against their limit only in a row: since the last
# attempt that saved a checkpoint (a deadlock hangs again before it saves anything; a
# long run on a large pool meets a hang or a slow node every few hours and must go on).
IN_A_ROW = frozenset({FailureCategory.HANG, FailureCategory.STRAGGLER})
# Failures of these categories that ``on`` does not name share ``max_restarts``.
SHARED_BUDGET = frozenset({FailureCategory.OOM, FailureCategory.SIGNAL, FailureCategory.EXIT})

Rule = Literal["always", "never"] | int
# The rule of a category `on` does not name; None: the shared ``max_restarts``.
DEFAULT_RULES: Mapping[FailureCategory, Rule | None] = {
    FailureCategory.INFRASTRUCTURE: "always",
    FailureCategory.HEALTH: "always",
    FailureCategory.OOM: None,
    FailureCategory.SIGNAL: None,
    FailureCategory.EXIT: None,
    FailureCategory.TIMEOUT: "never",
    FailureCategory.HANG: 3,
    FailureCategory.STRAGGLER: 3,
}

_CATEGORIES = ", ".join(c.value for c in FailureCategory)


def _category(value: Any) -> Any:
    if isinstance(value, str) and value not in FailureCategory.__members__.values():
        raise ValueError(f"'{value[:40]}' is not a failure category (use one of {_CATEGORIES})")
    return value


def _rule(value: Any) -> Any:
    # One message for every wrong value, instead of one per member of the union.
    if value in ("always", "never") and isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_RESTARTS:
        return value
    raise ValueError(
        f"must be 'always', 'never' or a number of restarts from 0 to {MAX_RESTARTS} (got {value!r:.40})"
    )


Category = Annotated[FailureCategory, BeforeValidator(_category)]
RuleValue = Annotated[
    Literal["always", "never"] | Annotated[int, Field(ge=0, le=MAX_RESTARTS)], BeforeValidator(_rule)
]


@dataclass(frozen=True, slots=True)
class Verdict:
    restart: bool
    backoff: float  # seconds before the next attempt may start
    why: str  # which rule decided, for the job's events


class RestartPolicy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # The restarts that the job's own failures (oom, signal, exit) share, where ``on``
    # does not name their category.
    max_restarts: Int = Field(3, ge=0, le=MAX_RESTARTS)
    # Before each restart after the job's own failure: doubling from this, up to the max.
    backoff_seconds: Number = Field(30.0, ge=0, le=86_400)
    backoff_max_seconds: Number = Field(600.0, ge=0, le=86_400)
    on: dict[Category, RuleValue] = Field(default_factory=dict, max_length=len(FailureCategory))

    def rule(self, category: FailureCategory) -> Rule | None:
        """The rule that applies to ``category``; None: the shared ``max_restarts``."""
        return self.on[category] if category in self.on else DEFAULT_RULES[category]

    def verdict(
        self, category: FailureCategory, earlier: Mapping[FailureCategory, int], charged: int
    ) -> Verdict:
        """Whether a failure of ``category`` restarts the job. ``earlier``: the restarts it
        already had, per category; ``charged``: those after its own failures (the backoff
        doubles with each)."""
        rule = self.rule(category)
        where = f"restart.on.{category.value}" if category in self.on else "default"
        if rule is None:
            used = sum(n for c, n in earlier.items() if c in SHARED_BUDGET and c not in self.on)
            ok, limit, where = used < self.max_restarts, self.max_restarts, "max_restarts"
        elif rule == "always" or rule == "never":
            ok = rule == "always"
            why = f"{category.value} failures {'always' if ok else 'never'} restart ({where})"
            return Verdict(ok, self._backoff(category, charged) if ok else 0.0, why)
        else:
            used, limit = earlier.get(category, 0), rule
            ok = used < limit
        if ok:
            why = f"restart {used + 1} of {limit} ({where})"
        else:
            why = f"no restart left: {limit} allowed ({where})"
        return Verdict(ok, self._backoff(category, charged) if ok else 0.0, why)

    def _backoff(self, category: FailureCategory, charged: int) -> float:
        if category.infrastructure:
            return 0.0
        return min(self.backoff_seconds * 2.0 ** min(charged, 64), self.backoff_max_seconds)


# Restart events stored before categories named the class: the job's own failure counts
# as a non-zero exit (all three own categories shared max_restarts, as they still do).
_LEGACY = {"job": FailureCategory.EXIT}


def category_named(reason: str | None) -> FailureCategory | None:
    """The category a stored restart event's reason names, or None."""
    if reason is None:
        return None
    if reason in _LEGACY:
        return _LEGACY[reason]
    try:
        return FailureCategory(reason)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Return:
    """How a gang interrupted through no fault of its own goes back to the queue: first in
    its org (``expedite``), offered ``prefer`` (its nodes in rank order, less the failed
    one and any no longer usable) so that it comes back where it was, and kept off
    ``avoid``. Only the node that failed it is avoided, and only for this job: accumulated,
    a long job that outlived a few repaired nodes of a small flavor would avoid all of them
    and never be placed again; a node that keeps failing jobs is kept off pool-wide by
    quarantine and the health model."""

    expedite: bool
    prefer: tuple[str, ...]
    avoid: frozenset[str]


def returning(
    category: FailureCategory,
    nodes: Sequence[str],
    failed: str | None,
    usable: Callable[[str], bool],
) -> Return:
    """The one rule the service's loop and the simulator apply to a restarted gang whose
    attempt ran on ``nodes`` (rank order) and ended in ``category``: a job's own failure
    (oom, signal, exit, timeout) names a node too, but says nothing against it."""
    if not category.infrastructure:
        return Return(expedite=False, prefer=(), avoid=frozenset())
    prefer: list[str] = []
    for name in nodes:
        if name != failed and name not in prefer and usable(name):
            prefer.append(name)
    return Return(expedite=True, prefer=tuple(prefer), avoid=frozenset({failed} if failed else ()))
