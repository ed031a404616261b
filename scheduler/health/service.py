"""The server's health evaluation: agent reports from the store through the model, and
verdicts, node health and events back into it. Runs on the leader only (a thread beside
the control loop); the pure work is in ``model``.

Straggler verdicts of the control loop (the blames it records) go in with the reports.
Node health is written through ``scheduler.store.nodes.report_health`` (the agent's
column): the core then keeps gangs off degraded nodes and moves jobs off unhealthy ones.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError
from sqlmodel import col, func, select

from scheduler import failures
from scheduler.health.hysteresis import Level
from scheduler.health.metrics import HealthMetrics
from scheduler.health.model import Assessment, HealthModel
from scheduler.health.peers import Member
from scheduler.health.thresholds import Thresholds
from scheduler.store import agents as agentstore
from scheduler.store import nodes as nodestore
from scheduler.store.db import Database
from scheduler.store.tables import JobEventRow, JobRow
from values.decisions import PreemptReason
from values.domain import Health
from values.lifecycle import JobEvent
from values.reports import AgentReport

log = logging.getLogger(__name__)


class HealthService:
    def __init__(
        self,
        db: Database,
        thresholds: Thresholds | None = None,
        *,
        metrics: HealthMetrics | None = None,
        clock: Callable[[], float] = time.time,
        is_leader: Callable[[], bool] = lambda: True,
        publish: Callable[[str, Health, str], None] | None = None,
        changed: Callable[[], None] | None = None,
    ) -> None:
        self.db = db
        self.th = thresholds or Thresholds()
        self.metrics = metrics
        self.clock = clock
        self.is_leader = is_leader
        # Where a backend can show verdicts to other tools (the Kubernetes backend sets
        # the Node condition TrainpoolNetworkHealthy); called after the verdict is stored.
        self.publish = publish
        # Told after verdicts changed in the store: the control loop's wake, so that a
        # node turning unhealthy is acted on at once rather than at the next interval.
        self.changed = changed
        self.model: HealthModel | None = None
        self._seen: dict[str, tuple[str, int]] = {}
        self._written: dict[str, tuple[str, tuple[str, ...]]] = {}
        self._last_event_id: int | None = None
        self.last: Assessment | None = None

    def tick(self) -> Assessment | None:
        if not self.is_leader():
            self.model = None  # a future term starts from the stored verdicts
            return None
        now = self.clock()
        with self.db.read() as s:
            agents = agentstore.list_agents(s)
            nodes = {n.name: n for n in nodestore.list_nodes(s)}
            stragglers = failures.straggler_blames(s, now - self.th.straggler_blame_seconds)
            if self.model is None:
                self._start(agentstore.verdicts(s), now)
        assert self.model is not None
        for a in agents:
            if a.report and self._seen.get(a.node) != (a.session, a.last_seq):
                self._seen[a.node] = (a.session, a.last_seq)
                try:
                    self.model.ingest(a.node, AgentReport.model_validate_json(a.report), a.last_seen_at)
                except ValidationError:
                    log.warning("unreadable stored report of %s; skipped", a.node)
        members = [
            Member(a.node, a.rack or (nodes[a.node].rack if a.node in nodes else "rack-0"), a.spine or "")
            for a in agents
        ]
        out = self.model.evaluate(now, members, {a.node: a.last_seen_at for a in agents}, stragglers)
        self._write(out, now, nodes)
        if self.metrics is not None:
            self.metrics.observe(out)
            self._count_moves()
        self.last = out
        return out

    def _start(self, stored: list[agentstore.NodeVerdictRow], now: float) -> None:
        self.model = HealthModel(self.th)
        self._seen.clear()
        self._written.clear()
        for v in stored:
            self.model.restore(v.node, Level.of(v.state), v.since, now)
            self._written[v.node] = (v.state, tuple(json.loads(v.reasons)))

    def _write(self, out: Assessment, now: float, nodes: dict[str, Any]) -> None:
        changed = []
        for node, v in out.verdicts.items():
            key = (v.state.health.value, tuple(v.reasons))
            if self._written.get(node) != key:
                changed.append((node, v, key))
        if not changed and not out.transitions:
            return
        with self.db.write() as s:
            for node, v, key in changed:
                agentstore.save_verdict(s, node, key[0], v.since, v.reasons, v.evidence, now)
                row = nodestore.get_node(s, node)
                if row is not None and row.reported_health != key[0]:
                    reason = "; ".join(v.reasons) if v.reasons else "agent: all probes fine"
                    nodestore.report_health(s, row, v.state.health, reason[:1000], now)
            for t in out.transitions:
                agentstore.add_event(s, t.at, t.kind, t.subject, t.new.health.value, t.message, t.evidence)
        if changed and self.changed is not None:
            self.changed()
        for node, v, key in changed:
            self._written[node] = key
            if self.publish is not None:
                try:
                    self.publish(node, v.state.health, "; ".join(v.reasons) or "all probes fine")
                except Exception as exc:  # the verdict is stored; showing it elsewhere is best effort
                    log.warning("could not publish the health of %s to the backend: %s", node, exc)
        for t in out.transitions:
            log.info("health: %s %s: %s", t.kind, t.subject, t.message)

    def _count_moves(self) -> None:
        """Jobs the loop preempted for health since the last tick, from their events."""
        assert self.metrics is not None
        health = PreemptReason.HEALTH.value
        with self.db.read() as s:
            if self._last_event_id is None:
                self._last_event_id = s.exec(select(func.max(JobEventRow.id))).one() or 0
                return
            newest = s.exec(select(func.max(JobEventRow.id))).one() or 0
            stmt = (
                select(JobEventRow.id, JobRow.org)
                .join(JobRow, col(JobRow.id) == col(JobEventRow.job_id))
                .where(
                    col(JobEventRow.id) > self._last_event_id,
                    col(JobEventRow.id) <= newest,
                    JobEventRow.event == JobEvent.PREEMPT.value,
                    JobEventRow.reason == health,
                )
            )
            rows = list(s.exec(stmt).all())
        for _id, org in rows:
            self.metrics.jobs_moved.labels(org, health).inc()
        self._last_event_id = max(self._last_event_id, newest)

    def run(self, stop: threading.Event) -> None:
        # Faster than reports arrive, so that no report is overwritten before it is read.
        period = min(self.th.evaluate_seconds, self.th.report_interval_seconds / 2)
        while not stop.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("health evaluation failed; retrying")
            stop.wait(period)
