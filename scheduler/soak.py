"""`trainpool bench soak`: the real server (sim backend) under a compressed day of a real
trace, with failures injected, for a long wall time; watches its memory and cycle latency.

One day of the Philly tenant trace is replayed ``86400 / seconds`` times faster: each job
is submitted through the HTTP API at its compressed arrival time and runs (in the sim
backend) for its compressed duration; ``--fail-fraction`` of the jobs fail once (their own
failure, retried with backoff). Every ``--sample`` seconds the server's resident memory (from
/proc) and its control-loop cycle latency (from its /metrics histogram) are recorded.

At the end: every submitted job is in the store exactly once with an event history that
chains through legal transitions, memory growth over the second half is reported as MiB
per hour, and cycle latency over the last windows is compared with the first ones.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from scheduler.server_process import ServerProcess, cycle_histogram, window_p99
from scheduler.sim.pool import job_spec, pool_from_quotas
from scheduler.sim.quotas import load_quotas
from scheduler.sim.trace import TraceJob, load_trace
from values.lifecycle import JobEvent, JobState, can

DAY = 86_400.0
ADMIN = "tp_soak-admin-token-not-for-production"
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED", "REJECTED")


@dataclass
class SoakOptions:
    trace: Path
    quotas: Path
    db: str  # sqlite path or postgresql+psycopg:// URL
    day: int | None = None  # which day of the trace (0-based); None: the busiest
    seconds: float = 1800.0  # wall time the day is compressed into
    sample: float = 15.0
    fail_fraction: float = 0.10
    node_size: int = 8
    out: Path | None = None
    max_jobs: int | None = None


@dataclass
class Sample:
    t: float  # seconds since the start
    rss_mib: float
    cycles: int  # cycles in this window
    cycle_mean_ms: float
    cycle_p99_ms: float  # upper bound of the histogram bucket holding the 99th percentile
    submitted: int


@dataclass
class SoakReport:
    options: dict[str, Any]
    samples: list[Sample] = field(default_factory=list)
    submitted: int = 0
    stored: int = 0
    terminal: int = 0
    in_flight: int = 0
    history_problems: list[str] = field(default_factory=list)
    submit_errors: int = 0
    rss_growth_mib_per_hour: float = 0.0
    cycle_mean_first_ms: float = 0.0
    cycle_mean_last_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            self.submitted > 0
            and self.stored == self.submitted
            and not self.history_problems
            and self.submit_errors == 0
        )


def day_of(jobs: list[TraceJob], day: int | None) -> list[TraceJob]:
    """The jobs submitted on ``day``, or on the day with the most submissions."""
    if day is None:
        counts: dict[int, int] = {}
        for j in jobs:
            counts[int(j.submit // DAY)] = counts.get(int(j.submit // DAY), 0) + 1
        day = max(sorted(counts), key=lambda d: counts[d])
    start = day * DAY
    return [j for j in jobs if start <= j.submit < start + DAY]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


def history_problems(jobs: list[dict[str, Any]], events: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Each job's events are legal transitions that chain from PENDING to its state."""
    problems = []
    for job in jobs:
        state = "PENDING"
        for e in events.get(job["id"], []):
            if e["from_state"] is None:
                continue
            if e["from_state"] != state or not can(JobState(e["from_state"]), JobEvent(e["event"])):
                problems.append(f"{job['id']}: {e['from_state']} --{e['event']}--> after {state}")
                break
            state = e["to_state"]
        else:
            if state != job["state"]:
                problems.append(f"{job['id']}: history ends in {state}, the job is {job['state']}")
    return problems


class Soak:
    def __init__(self, opts: SoakOptions, progress: Callable[[float, str], None]) -> None:
        self.opts = opts
        self.progress = progress
        self.workdir = Path(tempfile.mkdtemp(prefix="trainpool-soak-"))
        self.report = SoakReport(options={k: str(v) for k, v in asdict(opts).items()})

    def run(self) -> SoakReport:
        opts = self.opts
        quotas = load_quotas(opts.quotas)
        jobs = day_of(load_trace(opts.trace, "philly-vc"), opts.day)[: opts.max_jobs]
        pool = pool_from_quotas(quotas, {j.org for j in jobs}, node_size=opts.node_size)
        speed = DAY / opts.seconds
        with self._server(pool) as server:
            client = httpx.Client(
                base_url=server.url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30
            )
            ids: dict[str, str] = {}
            submitter = threading.Thread(
                target=self._submit, args=(client, jobs, pool, speed, ids), daemon=True
            )
            started = time.monotonic()
            submitter.start()
            assert server.proc is not None
            self._watch(server.proc.pid, client, started, ids)
            submitter.join(timeout=60)
        self._account(ids)
        self._summarise()
        return self.report

    def _server(self, pool: Any) -> ServerProcess:
        config = {
            "name": "soak",
            "flavors": [f.model_dump(mode="json") for f in pool.flavors],
            "orgs": [o.model_dump(mode="json", exclude_defaults=True) for o in pool.orgs],
            "nodes": [n.model_dump(mode="json", exclude_defaults=True) for n in pool.nodes],
        }
        pool_file = self.workdir / "pool.yaml"
        pool_file.write_text(yaml.safe_dump(config))
        args = ["--db", self.opts.db, "--pool", str(pool_file), "--interval", "1",
                "--sim-state", str(self.workdir / "sim.json")]  # fmt: skip
        return ServerProcess(args, self.workdir, {"TRAINPOOL_ADMIN_TOKEN": ADMIN})

    def _submit(
        self, client: httpx.Client, jobs: list[TraceJob], pool: Any, speed: float, ids: dict[str, str]
    ) -> None:
        if not jobs:
            return
        t0, day0 = time.monotonic(), jobs[0].submit - (jobs[0].submit % DAY)
        for i, job in enumerate(jobs):
            delay = (job.submit - day0) / speed - (time.monotonic() - t0)
            if delay > 0:
                time.sleep(delay)
            spec = job_spec(job, pool, None).model_dump(mode="json", exclude_defaults=True)
            env = {"SIM_DURATION": f"{max(0.5, job.duration / speed):.2f}"}
            roll = (zlib.crc32(job.id.encode()) % 10_000) / 10_000  # the same jobs fail on every run
            if roll < self.opts.fail_fraction:
                env["SIM_FAIL_ATTEMPTS"] = "1"
            spec["env"] = env
            spec["restart"] = {"backoff_seconds": 1}
            body = {"spec": spec, "client_request_id": f"soak-{job.id}"}
            for _ in range(20):
                try:
                    resp = client.post("/v1/jobs", json=body)
                    if resp.status_code in (200, 201):
                        ids[job.id] = resp.json()["id"]
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.5)
            else:
                self.report.submit_errors += 1
            self.report.submitted = i + 1

    def _watch(self, pid: int, client: httpx.Client, started: float, ids: dict[str, str]) -> None:
        before = cycle_histogram(client.get("/metrics").text)
        while (elapsed := time.monotonic() - started) < self.opts.seconds:
            time.sleep(min(self.opts.sample, max(0.1, self.opts.seconds - elapsed)))
            after = cycle_histogram(client.get("/metrics").text)
            cycles = int(after[2] - before[2])
            mean = (after[1] - before[1]) / cycles * 1000 if cycles else float("nan")
            sample = Sample(
                t=round(time.monotonic() - started, 1),
                rss_mib=round(rss_mib(pid), 1),
                cycles=cycles,
                cycle_mean_ms=round(mean, 2),
                cycle_p99_ms=window_p99(before[0], after[0]) * 1000,
                submitted=len(ids),
            )
            self.report.samples.append(sample)
            self.progress(
                sample.t / self.opts.seconds,
                f"rss {sample.rss_mib:.0f} MiB, cycles {sample.cycle_mean_ms:.0f} ms, {len(ids)} jobs",
            )
            before = after

    def _account(self, ids: dict[str, str]) -> None:
        """Read from the store once the server is stopped: one consistent picture."""
        from sqlmodel import col, select

        from scheduler.store.db import open_database
        from scheduler.store.tables import JobEventRow, JobRow

        store = open_database(self.opts.db)
        try:
            with store.read() as s:
                rows = list(s.exec(select(JobRow).where(col(JobRow.id).in_(list(ids.values())))).all())
                stmt = select(JobEventRow).where(col(JobEventRow.job_id).in_(list(ids.values())))
                events: dict[str, list[dict[str, Any]]] = {}
                for e in s.exec(stmt.order_by(col(JobEventRow.id))).all():
                    events.setdefault(e.job_id, []).append(e.model_dump())
        finally:
            store.dispose()
        mine = [{"id": r.id, "state": r.state, "client_request_id": r.client_request_id} for r in rows]
        self.report.stored = len({j["client_request_id"] for j in mine})
        self.report.terminal = sum(j["state"] in TERMINAL for j in mine)
        self.report.in_flight = len(mine) - self.report.terminal
        self.report.history_problems = history_problems(mine, events)[:20]

    def _summarise(self) -> None:
        samples = self.report.samples
        if len(samples) >= 4:
            half = samples[len(samples) // 2 :]
            hours = (half[-1].t - half[0].t) / 3600 or 1.0
            self.report.rss_growth_mib_per_hour = round((half[-1].rss_mib - half[0].rss_mib) / hours, 1)
            k = max(1, len(samples) // 5)
            first = [s.cycle_mean_ms for s in samples[1 : 1 + k] if s.cycles]
            last = [s.cycle_mean_ms for s in samples[-k:] if s.cycles]
            self.report.cycle_mean_first_ms = round(sum(first) / max(1, len(first)), 2)
            self.report.cycle_mean_last_ms = round(sum(last) / max(1, len(last)), 2)
        if self.opts.out is not None:
            self.opts.out.mkdir(parents=True, exist_ok=True)
            data = {**asdict(self.report), "ok": self.report.ok}
            (self.opts.out / "soak.json").write_text(json.dumps(data, indent=2))
            plot(samples, self.opts.out / "soak.png", self.opts.db)


def plot(samples: list[Sample], path: Path, db: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    minutes = [s.t / 60 for s in samples]
    ax1.plot(minutes, [s.rss_mib for s in samples])
    ax1.set_ylabel("server RSS (MiB)")
    ax1.set_ylim(bottom=0)
    ax2.plot(minutes, [s.cycle_mean_ms for s in samples], label="mean")
    ax2.plot(minutes, [s.cycle_p99_ms for s in samples], label="p99 (bucket bound)")
    ax2.set_ylabel("cycle latency (ms)")
    ax2.set_xlabel("minutes")
    ax2.legend()
    fig.suptitle(
        f"soak: a compressed day of the Philly trace ({'PostgreSQL' if 'postgres' in db else 'SQLite'})"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
