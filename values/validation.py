"""Node validation before hand-over: the rules, pure.

A node that joins the pool, or is uncordoned (after a quarantine or maintenance), or that
an operator names (``trainpool nodes validate``), runs a validation gang before it gets
work: rank 0 on the node under test (its devices: a compute burn-in; then a pingmesh from
it to the agents of healthy nodes, its rack mates first; then the collective), rank 1 on
a healthy peer of the same flavor (the collective over the network between them). The
node stays cordoned meanwhile. It passes when the gang exits 0, and is cordoned again
(quarantined) when it fails; a run that says nothing about the node (the peer lost, the
gang never started) is tried again, up to ``tries`` times.

The gang asks for no accelerators: the node under test is cordoned and idle, so its
devices are free; the peer lends only a CPU and its network.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from values.domain import Health, Node
from values.strict import Bool, Int, Number

DEFAULT_COMMAND = ("python", "-m", "scheduler.validation_job")


class ValidationRule(BaseModel):
    """The ``validation:`` section of the pool's file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: Bool = False
    on_join: Bool = True  # a node first seen after the pool's first inventory
    on_uncordon: Bool = True  # an operator's uncordon validates before the node takes work
    command: tuple[str, ...] = Field(DEFAULT_COMMAND, min_length=1, max_length=256)
    env: dict[str, str] = Field(default_factory=dict, max_length=256)
    timeout_seconds: Number = Field(600.0, gt=0, le=86_400)
    tries: Int = Field(3, ge=1, le=100)  # runs that said nothing about the node, then failed
    # The pingmesh step: this long (0: none) against up to this many healthy nodes'
    # agents; a peer is bad past this loss, and the node fails when most peers are bad.
    pingmesh_seconds: Number = Field(10.0, ge=0, le=3600)
    pingmesh_peers: Int = Field(8, ge=1, le=256)
    pingmesh_max_loss: Number = Field(0.02, ge=0, le=1)


class ValidationState(StrEnum):
    PENDING = "pending"  # asked for; waits for the node to be idle and a peer
    RUNNING = "running"
    PASSED = "passed"
    FAILED = "failed"  # cordoned again: quarantined until an operator looks


class Result(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    INCONCLUSIVE = "inconclusive"  # says nothing about the node: run again


# The prefix of a validation gang's job id: no submitted job's id has it.
JOB_PREFIX = "validate-"


def job_id(node: str) -> str:
    return f"{JOB_PREFIX}{node}"


def pick_peer(node: Node, nodes: Iterable[Node], busy: Iterable[str] = ()) -> str | None:
    """A healthy, uncordoned node of the same flavor to run the collective with, or None
    (the validation waits). Same rack first (the shortest path: a failure is the node's,
    not a spine's), then by name, so that the choice is the same on every replica."""
    taken = set(busy)
    ok = [
        n
        for n in nodes
        if n.name != node.name
        and n.name not in taken
        and n.flavor == node.flavor
        and n.health is Health.HEALTHY
        and not n.cordoned
    ]
    ok.sort(key=lambda n: (n.topology.rack != node.topology.rack, n.name))
    return ok[0].name if ok else None


def pingmesh_targets(node: Node, nodes: Iterable[Node], with_agent: Iterable[str], limit: int) -> list[str]:
    """The nodes the pingmesh step probes: healthy, uncordoned, with a live agent, of any
    flavor; same rack first, then by name, at most ``limit``."""
    live = set(with_agent)
    ok = [
        n
        for n in nodes
        if n.name != node.name and n.name in live and n.health is Health.HEALTHY and not n.cordoned
    ]
    ok.sort(key=lambda n: (n.topology.rack != node.topology.rack, n.name))
    return [n.name for n in ok[:limit]]


def pingmesh_problem(results: Iterable[tuple[str, int, int]], max_loss: float) -> str | None:
    """What a pingmesh of (peer, sent, lost) says against the node under test, or None.
    The node fails when most of its peers lose more than ``max_loss``: one lossy peer is
    that peer's or that link's fault (the health model's node rule, in small)."""
    seen = list(results)
    bad = [
        (lost / sent if sent else 1.0, peer)
        for peer, sent, lost in seen
        if not sent or lost > max_loss * sent
    ]
    if not seen or len(bad) * 2 <= len(seen):
        return None
    worst = ", ".join(f"{peer} {loss:.0%}" for loss, peer in sorted(bad, key=lambda b: (-b[0], b[1]))[:3])
    return f"pingmesh: loss over {max_loss:.0%} to {len(bad)} of {len(seen)} peers ({worst})"


@dataclass(frozen=True)
class Verdict:
    result: Result
    message: str


def judge(
    phase: str, exit_code: int | None, lost_node: str | None, node: str, message: str, timed_out: bool
) -> Verdict:
    """What a finished (or overdue) validation gang says about ``node``. ``phase``: the
    gang's (succeeded, failed, lost, stopped); ``lost_node``: the node a lost gang lost."""
    if timed_out:
        return Verdict(Result.FAILED, "validation did not finish in time")
    if phase == "succeeded":
        return Verdict(Result.PASSED, "validation passed")
    if phase == "failed":
        return Verdict(Result.FAILED, message or f"validation exited {exit_code}")
    if phase == "lost" and lost_node == node:
        return Verdict(Result.FAILED, message or f"node {node} lost during validation")
    return Verdict(Result.INCONCLUSIVE, message or f"validation gang {phase}")
