"""When a node is to blame: the quarantine rule, pure.

One failed job says little about a node (the job may be broken); failures of two
*different* jobs on the same node within a window say the node is. A quarantined node is
cordoned: nothing new lands on it until an operator uncordons it after a look.

What counts as blame (decided by the applier, which knows the node's state):
- a replica on the node killed by a signal (SIGSEGV, SIGBUS, the OOM killer): a crash that
  may be the node's doing. A plain non-zero exit is the job's own verdict and blames
  nobody, or a pool full of buggy jobs would cordon itself (the crash-history test did);
  nor does a kill the backend names as the job's own memory (a container past its limit,
  Ray's memory monitor);
- a replica lost while its node stayed present and healthy (an actor or pod killed on a
  live node: OOM, a driver fault). A node that died is already out of the pool; its
  death alone does not quarantine it, or one crash would blame it for every job it hosted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class QuarantineRule:
    window_seconds: float = 3600.0
    distinct_jobs: int = 2


@dataclass(frozen=True)
class Blame:
    node: str
    job_id: str
    at: float


def to_quarantine(rule: QuarantineRule, blames: Iterable[Blame], now: float) -> list[str]:
    """Nodes blamed by at least ``distinct_jobs`` different jobs within the window, sorted."""
    jobs_by_node: dict[str, set[str]] = {}
    for b in blames:
        if now - rule.window_seconds <= b.at <= now:
            jobs_by_node.setdefault(b.node, set()).add(b.job_id)
    return sorted(n for n, jobs in jobs_by_node.items() if len(jobs) >= rule.distinct_jobs)
