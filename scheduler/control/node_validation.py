"""Node validation in the persist phase: start the runs that can start, judge the ones
that ended (the rules are ``values.validation``'s). A validation gang is not a job: it
holds no accelerators the core counts (its node is cordoned, its peer lends a CPU), so
it is tracked on the node's row, and ``act`` launches it beside the jobs' gangs."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from sqlmodel import Session, select

from scheduler.backends.base import FINISHED, GangStatus, Launch, Phase, gang_key
from scheduler.control.outcome import Actions, ApplyOptions, Outcome
from scheduler.store import agents as agentstore
from scheduler.store import nodes as nodestore
from scheduler.store import orgs as orgstore
from scheduler.store.agents import AgentRow
from scheduler.store.tables import AllocationRow, NodeRow
from scheduler.store.view import assignments_of
from values.domain import Gang, Health, JobSpec
from values.validation import (
    JOB_PREFIX,
    Result,
    ValidationRule,
    Verdict,
    job_id,
    judge,
    pick_peer,
    pingmesh_targets,
)

log = logging.getLogger(__name__)

GRACE = 5.0
# An agent that reported within this long takes part in a validation's pingmesh; an older
# one would make its own silence look like the node's loss.
AGENT_FRESH_SECONDS = 30.0


def validate_nodes(
    s: Session,
    statuses: dict[str, GangStatus],
    joined: Iterable[str],
    allocs: Iterable[AllocationRow],
    now: float,
    opts: ApplyOptions,
    acts: Actions,
    out: Outcome,
) -> None:
    """Pops the validation gangs' statuses from ``statuses`` (what is left are orphans)."""
    rule = opts.validation
    if not rule.enabled:
        return
    if rule.on_join:
        for name in joined:
            row = s.get(NodeRow, name, with_for_update=True)
            if row is not None:
                nodestore.request_validation(s, row, "joined the pool", now)
                orgstore.audit(s, now, "scheduler", "node.validate", name, why="joined the pool")
    rows = nodestore.validating(s)
    running = {gang_key(job_id(r.name), r.validation_run) for r in rows if r.validation == "running"}
    for key, st in list(statuses.items()):  # concluded runs whose replicas are still going
        if st.job_id.startswith(JOB_PREFIX) and key not in running:
            del statuses[key]
            if st.settled:
                acts.forgets.append(key)
            elif st.phase is not Phase.STOPPING:
                acts.stops.append((key, 0.0))
    if not rows:
        return
    busy = {node for a in allocs for node, _ in assignments_of(a)}
    every = list(s.exec(select(NodeRow).where(NodeRow.present == True)).all())  # noqa: E712
    agents = {a.node: a for a in agentstore.list_agents(s) if now - a.last_seen_at <= AGENT_FRESH_SECONDS}
    for row in rows:
        if row.validation == "running":
            _watch(s, row, statuses, now, rule, acts, out)
        if row.validation == "pending" and row.present and row.name not in busy:
            _start(s, row, every, agents, now, opts, acts)


def _watch(
    s: Session,
    row: NodeRow,
    statuses: dict[str, GangStatus],
    now: float,
    rule: ValidationRule,
    acts: Actions,
    out: Outcome,
) -> None:
    key = gang_key(job_id(row.name), row.validation_run)
    st = statuses.pop(key, None)
    overdue = row.validation_at is not None and now - row.validation_at > rule.timeout_seconds
    if st is None:  # the launch failed, or the backend lost the gang
        verdict = Verdict(Result.INCONCLUSIVE, "the validation gang is not running")
    elif st.phase in FINISHED:
        verdict = judge(st.phase.value, st.exit_code, st.node, row.name, st.message, timed_out=False)
        acts.forgets.append(key) if st.settled else acts.stops.append((key, 0.0))
    elif overdue:
        verdict = judge(st.phase.value, None, None, row.name, "", timed_out=True)
        acts.stops.append((key, 0.0))
    else:
        return
    _conclude(s, row, verdict, now, rule, out)


def _conclude(
    s: Session, row: NodeRow, verdict: Verdict, now: float, rule: ValidationRule, out: Outcome
) -> None:
    out.validations.append((row.name, verdict.result.value))
    result, message = verdict.result, verdict.message
    if result is Result.INCONCLUSIVE:
        row.validation_tries += 1
        if row.validation_tries < rule.tries:
            row.validation = "pending"
            log.info("validation run %d of node %s said nothing (%s); it runs again", row.validation_run,
                     row.name, message)  # fmt: skip
        else:
            result, message = Result.FAILED, f"{row.validation_tries} runs said nothing; the last: {message}"
    if result is Result.PASSED:
        row.validation, row.cordoned = "passed", False
        orgstore.audit(s, now, "scheduler", "node.validated", row.name, run=row.validation_run)
        log.info("node %s passed validation", row.name)
    elif result is Result.FAILED:
        row.validation, row.cordoned = "failed", True
        orgstore.audit(s, now, "scheduler", "node.quarantined", row.name, why="validation", message=message)
        log.warning("node %s failed validation: %s", row.name, message)
    row.validation_message = message
    row.validation_at = now
    row.updated_at = now
    row.version += 1
    s.add(row)


def _start(
    s: Session,
    row: NodeRow,
    every: list[NodeRow],
    agents: dict[str, AgentRow],
    now: float,
    opts: ApplyOptions,
    acts: Actions,
) -> None:
    if nodestore.effective_health(row) is Health.UNHEALTHY:
        return  # it cannot pass; it waits for its agent or backend to say it recovered
    others = [r for r in every if r.name != row.name and r.flavor == row.flavor]
    peer = pick_peer(nodestore.to_node(row), [nodestore.to_node(r) for r in others])
    if peer is None and others:
        return  # peers exist but none is healthy and free: wait for one
    row.validation = "running"
    row.validation_run += 1
    row.validation_peer = peer
    row.validation_at = now
    row.validation_message = (
        f"running with peer {peer}" if peer else "running alone: no other node of its flavor"
    )
    row.updated_at = now
    row.version += 1
    s.add(row)
    rule = opts.validation
    targets = pingmesh_targets(nodestore.to_node(row), [nodestore.to_node(r) for r in every], agents,
                               rule.pingmesh_peers) if rule.pingmesh_seconds > 0 else []  # fmt: skip
    acts.validations.append(_launch(row, peer, [agents[t] for t in targets], opts))


def _launch(row: NodeRow, peer: str | None, probe: list[AgentRow], opts: ApplyOptions) -> Launch:
    """``probe``: the agents of the pingmesh step (none: the step is skipped)."""
    rule = opts.validation
    nodes = [row.name] + ([peer] if peer else [])
    spec = JobSpec(
        name="node-validation", org="trainpool",
        gang=Gang(replicas=len(nodes), accelerators=0, flavors=(row.flavor,), cpu=1.0, memory_gb=1.0),
        command=rule.command, env=dict(rule.env), grace_period_seconds=GRACE,
        max_runtime_seconds=rule.timeout_seconds,
    )  # fmt: skip
    env = {
        "TRAINPOOL_VALIDATE_NODE": row.name,
        "TRAINPOOL_VALIDATE_DEVICES": ",".join(str(d) for d in range(row.accelerators)),
        "TRAINPOOL_VALIDATE_VISIBILITY": opts.visibility.get(row.flavor, "CUDA_VISIBLE_DEVICES"),
        "TRAINPOOL_VALIDATE_PINGMESH": ",".join(f"{a.node}={a.address}:{a.probe_port}" for a in probe),
        "TRAINPOOL_VALIDATE_PINGMESH_SECONDS": f"{rule.pingmesh_seconds:g}",
        "TRAINPOOL_VALIDATE_PINGMESH_MAX_LOSS": f"{rule.pingmesh_max_loss:g}",
    }
    return Launch(
        job_id=job_id(row.name), attempt=row.validation_run, spec=spec, flavor=row.flavor,
        assignments=tuple((n, 1) for n in nodes), env=env,
    )  # fmt: skip
