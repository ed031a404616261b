"""Every Prometheus metric of the server, in one place.

Prefix ``trainpool_``; labels are bounded sets (org, flavor, reason, state, route
templates), never job ids. Each server gets its own registry so tests can start many.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client import Counter as PromCounter

from values.snapshot import Snapshot

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_WAIT_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 86_400, 7 * 86_400)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.pending_jobs = Gauge(
            "trainpool_pending_jobs", "Jobs waiting in the queue.", ["org", "flavor"], registry=r
        )
        self.running_jobs = Gauge(
            "trainpool_running_jobs", "Jobs holding nodes.", ["org", "flavor"], registry=r
        )
        self.pending_accelerators = Gauge(
            "trainpool_pending_accelerators",
            "Accelerators asked for by pending jobs.",
            ["org", "flavor"],
            registry=r,
        )
        self.running_accelerators = Gauge(
            "trainpool_running_accelerators",
            "Accelerators held by running jobs.",
            ["org", "flavor"],
            registry=r,
        )
        self.pending_by_reason = Gauge(
            "trainpool_pending_jobs_by_reason",
            "Pending jobs by their pending reason.",
            ["reason"],
            registry=r,
        )
        self.quota = Gauge(
            "trainpool_quota_accelerators",
            "Quota per org and flavor: nominal, borrowed (above nominal), lent (nominal used by others).",
            ["org", "flavor", "kind"],
            registry=r,
        )
        self.fair_share = Gauge(
            "trainpool_fair_share",
            "Weighted dominant share with decayed usage (lower goes first).",
            ["org"],
            registry=r,
        )
        self.node_health = Gauge(
            "trainpool_nodes", "Nodes by flavor and health state.", ["flavor", "health"], registry=r
        )
        self.cycle_seconds = Histogram(
            "trainpool_scheduling_cycle_seconds",
            "Duration of one control-loop cycle.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.phase_seconds = Histogram(
            "trainpool_scheduling_phase_seconds",
            "Duration of each phase of a control-loop cycle (observe, persist_observation, "
            "snapshot, decide, persist_decisions, act, note_pending).",
            ["phase"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.wait_seconds = Histogram(
            "trainpool_job_wait_seconds", "Time from submit to start (first attempt).", ["org"],
            buckets=_WAIT_BUCKETS, registry=r,
        )  # fmt: skip
        self.preemptions = PromCounter(
            "trainpool_preemptions", "Jobs preempted, by reason.", ["org", "reason"], registry=r
        )
        self.resizes = PromCounter(
            "trainpool_resizes", "Elastic gangs restarted at another size, by direction (grow, shrink).",
            ["org", "direction"], registry=r,
        )  # fmt: skip
        self.effective_time_ratio = Gauge(
            "trainpool_job_effective_time_ratio",
            "Of the accelerator time the org's jobs held in the last 24 h, the share that went into "
            "work that was kept (not startup, restart overhead, or work lost since a checkpoint).",
            ["org"], registry=r,
        )  # fmt: skip
        self.progress_verdicts = PromCounter(
            "trainpool_progress_verdicts", "Verdicts on running gangs' progress reports (hang, straggler).",
            ["org", "verdict"], registry=r,
        )  # fmt: skip
        self.node_validations = PromCounter(
            "trainpool_node_validations",
            "Validation runs of nodes before hand-over, by result (passed, failed, inconclusive).",
            ["result"], registry=r,
        )  # fmt: skip
        self.restarts = PromCounter(
            "trainpool_restarts", "Jobs restarted after a failure, by failure class.", ["reason"], registry=r
        )
        self.submissions = PromCounter(
            "trainpool_job_submissions", "Jobs accepted by the API.", ["org"], registry=r
        )
        self.lost_work = PromCounter(
            "trainpool_lost_accelerator_seconds",
            "Accelerator-seconds of work lost when gangs ended early (since their last checkpoint).",
            ["org", "reason"], registry=r,
        )  # fmt: skip
        self.recovery_seconds = Histogram(
            "trainpool_recovery_seconds", "From a failure or preemption to the job running again.",
            ["reason"], buckets=_WAIT_BUCKETS, registry=r,
        )  # fmt: skip
        self.quarantines = PromCounter(
            "trainpool_node_quarantines", "Nodes cordoned for failures of different jobs.", registry=r
        )
        self.quarantined = Gauge(
            "trainpool_nodes_quarantined", "Nodes cordoned by quarantine and not yet uncordoned.", registry=r
        )
        self.capacity = Gauge(
            "trainpool_capacity_accelerators",
            "Accelerators on the pool's nodes.",
            ["flavor", "health"],
            registry=r,
        )
        self.leader = Gauge("trainpool_leader", "1 while this server runs the control loop.", registry=r)
        self.gc_pause = Histogram(
            "trainpool_gc_pause_seconds", "The server's full garbage collections (one a minute).",
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.api_latency = Histogram(
            "trainpool_api_request_seconds", "API request latency by route template and status class.",
            ["method", "route", "status"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip

    def observe_snapshot(self, snap: Snapshot) -> None:
        """Gauges from the snapshot the cycle decided on: one consistent moment. Counted
        first and then set, one call per label set: a queue of 10,000 jobs made 30,000
        label look-ups a cycle, and a scrape between clear() and the last inc() saw half."""
        jobs: Counter[tuple[str, str]] = Counter()
        waiting: Counter[tuple[str, str]] = Counter()
        for job in snap.pending:
            key = (job.spec.org, job.spec.gang.flavors[0])
            jobs[key] += 1
            waiting[key] += job.spec.gang.total_accelerators
        running: Counter[tuple[str, str]] = Counter()
        alloc: Counter[tuple[str, str]] = Counter()
        for run in snap.running:
            running[(run.spec.org, run.flavor)] += 1
            alloc[(run.spec.org, run.flavor)] += run.accelerators
        nodes: Counter[tuple[str, str]] = Counter()
        capacity: Counter[tuple[str, str]] = Counter()
        for node in snap.nodes:
            key = (node.flavor, "cordoned" if node.cordoned else node.health.value)
            nodes[key] += 1
            capacity[key] += node.accelerators
        for gauge, counts in (
            (self.pending_jobs, jobs),
            (self.pending_accelerators, waiting),
            (self.running_jobs, running),
            (self.running_accelerators, alloc),
            (self.node_health, nodes),
            (self.capacity, capacity),
        ):
            set_all(gauge, counts)
        self._quota(snap, alloc)

    def _quota(self, snap: Snapshot, alloc: Counter[tuple[str, str]]) -> None:
        self.quota.clear()
        self.fair_share.clear()
        cap: Counter[str] = Counter()
        for node in snap.nodes:
            cap[node.flavor] += node.accelerators
        half_life = snap.policy.half_life_seconds
        for org in snap.orgs:
            share = 0.0
            for flavor in {f.name for f in snap.flavors}:
                q = org.quota(flavor)
                used = alloc[(org.name, flavor)]
                self.quota.labels(org.name, flavor, "nominal").set(q.nominal)
                self.quota.labels(org.name, flavor, "borrowed").set(max(0, used - q.nominal))
                idle = max(0, q.nominal - used)
                lendable = idle if q.lending_limit is None else min(idle, q.lending_limit)
                self.quota.labels(org.name, flavor, "lent").set(
                    min(lendable, _borrowed_by_others(snap, alloc, org.name, flavor))
                )
                if cap[flavor]:
                    usage = snap.usage.get(org.name, {}).get(flavor, 0.0)
                    share = max(
                        share, used / cap[flavor] + usage / (cap[flavor] * half_life / 0.6931471805599453)
                    )
            self.fair_share.labels(org.name).set(share / org.weight)

    def observe_cycle(
        self,
        seconds: float,
        started: Iterable[tuple[str, float]],
        preempted: Iterable[tuple[str, str]],
        restarted: Iterable[tuple[str, str]],
        resized: Iterable[tuple[str, str]] = (),
        verdicts: Iterable[tuple[str, str]] = (),
        validations: Iterable[tuple[str, str]] = (),
    ) -> None:
        self.cycle_seconds.observe(seconds)
        for _node, result in validations:
            self.node_validations.labels(result).inc()
        for org, verdict in verdicts:
            self.progress_verdicts.labels(org, verdict).inc()
        for org, direction in resized:
            self.resizes.labels(org, direction).inc()
        for org, wait in started:
            self.wait_seconds.labels(org).observe(wait)
        for org, reason in preempted:
            self.preemptions.labels(org, reason).inc()
        for _job, reason in restarted:
            self.restarts.labels(reason).inc()

    def observe_interruptions(
        self, lost: Iterable[tuple[str, str, float]], recovered: Iterable[tuple[str, float]]
    ) -> None:
        for org, reason, seconds in lost:
            self.lost_work.labels(org, reason).inc(seconds)
        for reason, seconds in recovered:
            self.recovery_seconds.labels(reason).observe(seconds)


def _borrowed_by_others(snap: Snapshot, alloc: Counter[tuple[str, str]], org: str, flavor: str) -> int:
    return sum(max(0, alloc[(o.name, flavor)] - o.quota(flavor).nominal) for o in snap.orgs if o.name != org)


def set_all(gauge: Gauge, counts: Mapping[Any, float]) -> None:
    """Replace a labelled gauge's children with ``counts`` (label values, as a tuple, to value)."""
    gauge.clear()
    for labels, value in counts.items():
        gauge.labels(*labels).set(value)
