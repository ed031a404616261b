"""One replica's observation from its pod: pure, so every rule is a table test. The gang's
phase is judged from the replicas by ``scheduler.backends.gang_phase``, as for Ray and sim.

The split between an exit and a loss is the one the loop charges restarts by: a
container that exits non-zero is the job's failure; a pod the cluster took away
(eviction, node loss, a kubelet admission refusal, deletion by someone else) is the
infrastructure's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scheduler.backends.gang_phase import Replica, ReplicaState

Obj = dict[str, Any]

# Pod status.reason values the kubelet or controllers set when they, not the job, end a pod.
INFRA_REASONS = frozenset(
    {"Evicted", "NodeLost", "NodeShutdown", "Shutdown", "Terminated", "Preempting", "NodeAffinity",
     "UnexpectedAdmissionError", "OutOfcpu", "OutOfmemory", "OutOfpods", "DeadlineExceeded"}
)  # fmt: skip


# Container waiting reasons that do not resolve by waiting: the job's own configuration
# (its image, its secrets) is wrong. ErrImagePull alone may be a registry hiccup; the
# kubelet turns a persistent one into ImagePullBackOff.
STUCK_REASONS = frozenset(
    {"ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError", "CreateContainerError"}
)


@dataclass(frozen=True)
class PodVerdict:
    state: str  # pending | running | succeeded | failed | lost | gone
    node: str | None = None
    exit_code: int | None = None
    message: str = ""


def pod_verdict(pod: Obj | None, *, gone: bool, node_ok: bool, ours_deleting: bool) -> PodVerdict:
    """One replica. ``gone``: seen and then deleted; ``node_ok``: its node exists and is
    Ready; ``ours_deleting``: trainpool asked for this pod's deletion."""
    if pod is None:
        if gone:
            msg = "pod deleted" if ours_deleting else "pod deleted outside trainpool"
            return PodVerdict("gone" if ours_deleting else "lost", message=msg)
        return PodVerdict("pending")
    spec, status, meta = pod.get("spec") or {}, pod.get("status") or {}, pod.get("metadata") or {}
    node = spec.get("nodeName")
    phase, reason = status.get("phase", "Pending"), status.get("reason") or ""
    if phase == "Succeeded":
        return PodVerdict("succeeded", node=node, exit_code=0)
    disrupted = any(
        c.get("type") == "DisruptionTarget" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    if phase == "Failed":
        if reason in INFRA_REASONS or reason.startswith("OutOf") or disrupted:
            return PodVerdict(
                "lost", node=node, message=f"pod {reason or 'disrupted'}: {status.get('message', '')}"
            )
        code, why = _exit_of(status)
        return PodVerdict(
            "failed", node=node, exit_code=code, message=f"exit code {code}" + (f" ({why})" if why else "")
        )
    if meta.get("deletionTimestamp") and not ours_deleting:
        return PodVerdict("lost", node=node, message="pod being deleted outside trainpool")
    if phase == "Unknown" or (node and not node_ok):
        return PodVerdict("lost", node=node, message=f"node {node} lost or not ready")
    if phase == "Running":
        return PodVerdict("running", node=node)
    for cs in status.get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in STUCK_REASONS:
            why = f"{waiting['reason']}: {waiting.get('message', '')}".strip(": ")
            return PodVerdict("failed", node=node, message=f"cannot start ({why})")
    return PodVerdict("pending", node=node)


def _exit_of(status: Obj) -> tuple[int, str]:
    for cs in status.get("containerStatuses") or []:
        term = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get("terminated")
        if term and term.get("exitCode", 0) != 0:
            return int(term["exitCode"]), str(term.get("reason") or "")
    return 1, "no exit code reported"


_STATES = {
    "pending": ReplicaState.PENDING,
    "running": ReplicaState.RUNNING,
    "succeeded": ReplicaState.EXITED,
    "failed": ReplicaState.EXITED,
    "lost": ReplicaState.LOST,
    "gone": ReplicaState.EXITED,  # deleted on our request: stopped, no exit code to judge
}


def replica_of(rank: int, v: PodVerdict, at: float | None) -> Replica:
    """``at``: when this pod was first seen in its present state."""
    code = v.exit_code
    if v.state == "failed" and code is None:
        code = 1  # could not start (a stuck image or config): the job's own failure
    return Replica(rank, v.node, _STATES[v.state], exit_code=code, at=at, message=v.message)
