"""`trainpool bench churn`: streams of short gangs through the real server (sim backend).

N orgs share one flavor of 1-accelerator nodes (each org's nominal is an equal part of
the pool; borrowing is on, so the whole pool is the group they share: trainpool has no
cohorts below the pool). Gangs of 1, 5 and 20 replicas, runtimes drawn in 0.2-1 s and
three priority classes arrive over HTTP at a fixed rate (open loop: a late answer does not
delay the next submission's schedule) for the window. The run ends when every accepted
job is terminal.

What it reports, read from the store once the server is stopped:
- wall time from the first submission to the last completion, against its lower bound:
  max(the latest arrival + runtime over all jobs, the work / the capacity);
- the accepted submission rate against the offered one;
- time from submission to first admission, by gang size;
- useful usage: the completed jobs' accelerator-seconds over capacity x wall.

``api_probe`` sends that many extra submissions from 50 clients (the `bench api` load)
into the same server at a third of the window, to a flavor with no nodes (the loop rejects
them as never fitting, so they add loop work but no capacity demand): the API's rate while
the loop churns.
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import yaml

from scheduler.api.loadgen import Connection, LoadResult, run_load
from scheduler.server_process import ServerProcess, cycle_histogram, scrape
from values.lifecycle import TERMINAL, JobEvent, JobState

SIZES = (1, 5, 20)
# By count: most gangs are small, as in real pools; the 20s still carry most of the work.
SIZE_WEIGHTS = (0.6, 0.3, 0.1)
PRIORITIES, PRIORITY_WEIGHTS = ("low", "normal", "high"), (0.25, 0.5, 0.25)
RUNTIME = (0.2, 1.0)
FLAVOR, PROBE_FLAVOR, PROBE_ORG = "a1", "probe", "probe"


@dataclass(frozen=True)
class ChurnOptions:
    db: str | None = None  # a PostgreSQL URL of an empty database; None: SQLite in the workdir
    orgs: int = 8
    nodes: int = 160
    rate: float = 25.0  # submissions per second
    seconds: float = 60.0  # the arrival window
    clients: int = 16  # concurrent connections the stream is sent over
    seed: int = 0
    api_probe: int = 0
    # Each gang's max_runtime_seconds (None: none). With none, the core cannot know a small
    # gang ends before a waiting 20-gang's reservation, so it does not backfill around it.
    time_limit: float | None = None
    # False: every gang "normal", so no priority preemption (what the policy costs, apart).
    priorities: bool = True
    # Every priority class's min_runtime_seconds: no gang is preempted before it ran that
    # long (0: any may be, at once).
    min_runtime: float = 0.0
    loop: str = "process"


@dataclass(frozen=True)
class Arrival:
    i: int
    org: str
    size: int
    runtime: float
    priority: str

    def body(self, run: str, time_limit: float | None = None) -> bytes:
        spec: dict[str, Any] = {
            "name": f"churn-{self.i}",
            "org": self.org,
            "priority": self.priority,
            "gang": {"flavor": FLAVOR, "replicas": self.size, "accelerators": 1},
            "env": {"SIM_DURATION": f"{self.runtime:.3f}"},
            "grace_period_seconds": 0,
        }
        if time_limit is not None:
            spec["max_runtime_seconds"] = time_limit
        return json.dumps({"spec": spec, "client_request_id": f"{run}-{self.i}"}).encode()


def arrivals(opts: ChurnOptions) -> list[Arrival]:
    rnd = random.Random(opts.seed)
    return [
        Arrival(
            i=i,
            org=f"org-{rnd.randrange(opts.orgs)}",
            size=rnd.choices(SIZES, SIZE_WEIGHTS)[0],
            runtime=round(rnd.uniform(*RUNTIME), 3),
            priority=rnd.choices(PRIORITIES, PRIORITY_WEIGHTS)[0] if opts.priorities else "normal",
        )
        for i in range(int(opts.rate * opts.seconds))
    ]


def offered_load(opts: ChurnOptions) -> float:
    """Mean offered work per second over the capacity."""
    mean_size = sum(s * w for s, w in zip(SIZES, SIZE_WEIGHTS, strict=True))
    return opts.rate * mean_size * sum(RUNTIME) / 2 / opts.nodes


def pool_yaml(opts: ChurnOptions) -> str:
    share, extra = divmod(opts.nodes, opts.orgs)
    orgs = [
        {"name": f"org-{k}", "quotas": {FLAVOR: {"nominal": share + (k < extra)}}} for k in range(opts.orgs)
    ]
    config = {
        "name": "churn",
        "flavors": [{"name": FLAVOR}, {"name": PROBE_FLAVOR}],
        "priority_classes": [
            {"name": name, "value": value, "min_runtime_seconds": opts.min_runtime}
            for name, value in (("low", 100), ("normal", 500), ("high", 1000))
        ],
        "orgs": [*orgs, {"name": PROBE_ORG}],
        "node_groups": [{"flavor": FLAVOR, "count": opts.nodes, "accelerators": 1, "name_prefix": "n"}],
    }
    return yaml.safe_dump(config)


@dataclass
class Sent:
    at: float = 0.0  # wall clock (time.time) when the request was written
    status: int = 0
    job_id: str | None = None
    problem: str = ""


@dataclass
class ChurnReport:
    options: dict[str, Any]
    offered_load: float
    submitted: int = 0
    accepted: int = 0
    errors: int = 0
    first_errors: list[str] = field(default_factory=list)
    offered_rate: float = 0.0
    accepted_rate: float = 0.0
    wall_seconds: float = 0.0
    lower_bound_seconds: float = 0.0
    succeeded: int = 0
    not_succeeded: dict[str, int] = field(default_factory=dict)
    preemptions: int = 0
    admission_mean_seconds: dict[str, float] = field(default_factory=dict)
    admission_p99_seconds: dict[str, float] = field(default_factory=dict)
    usage: float = 0.0
    cycles: int = 0
    cycle_mean_ms: float = 0.0
    probe: dict[str, Any] | None = None

    @property
    def wall_over_bound(self) -> float:
        return self.wall_seconds / self.lower_bound_seconds if self.lower_bound_seconds else 0.0

    @property
    def rate_shortfall(self) -> float:
        return 1 - self.accepted_rate / self.offered_rate if self.offered_rate else 0.0

    @property
    def targets(self) -> dict[str, bool]:
        return {
            "wall within 1.2x the lower bound": 0 < self.wall_over_bound <= 1.2,
            "offered rate accepted within 5%": self.rate_shortfall <= 0.05,
            "0 errors": self.errors == 0 and not self.not_succeeded and self.succeeded == self.accepted,
        }

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items()}
        out["wall_over_bound"] = round(self.wall_over_bound, 3)
        out["rate_shortfall"] = round(self.rate_shortfall, 4)
        out["targets"] = self.targets
        return out


class Churn:
    def __init__(self, opts: ChurnOptions, progress: Callable[[str], None] = lambda _: None) -> None:
        self.opts = opts
        self.progress = progress
        self.workdir = Path(tempfile.mkdtemp(prefix="trainpool-bench-churn-"))
        self.token = "tp_" + secrets.token_urlsafe(24)
        self.report = ChurnReport(
            options={k: v for k, v in opts.__dict__.items() if k != "db"} | {"database": self.database},
            offered_load=round(offered_load(opts), 3),
        )

    @property
    def database(self) -> str:
        return "postgresql" if self.opts.db else "sqlite"

    def run(self) -> ChurnReport:
        stream = arrivals(self.opts)
        (self.workdir / "pool.yaml").write_text(pool_yaml(self.opts))
        db = self.opts.db or str(self.workdir / "churn.db")
        args = ["--db", db, "--pool", str(self.workdir / "pool.yaml"), "--loop", self.opts.loop,
                "--sim-state", str(self.workdir / "sim.json")]  # fmt: skip
        env = {"TRAINPOOL_ADMIN_TOKEN": self.token, "XDG_DATA_HOME": str(self.workdir)}
        with ServerProcess(args, self.workdir, env) as server:
            before = cycle_histogram(scrape(server.url, self.token))
            probe = self._start_probe(server.url)
            sent = asyncio.run(self._send(server.url, stream))
            if probe is not None:
                probe.join()
            self._drain(server.url, sent)
            after = cycle_histogram(scrape(server.url, self.token))
        self.report.cycles = int(after[2] - before[2])
        if self.report.cycles:
            self.report.cycle_mean_ms = round((after[1] - before[1]) / self.report.cycles * 1000, 2)
        self._account(db, stream, sent)
        return self.report

    async def _send(self, url: str, stream: list[Arrival]) -> list[Sent]:
        parsed = urlsplit(url)
        assert parsed.hostname and parsed.port
        sent = [Sent() for _ in stream]
        run = f"churn-{int(time.time() * 1000)}"
        todo = iter(stream)
        start = time.monotonic()

        async def client(conn: Connection) -> None:
            for a in todo:
                delay = start + a.i / self.opts.rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                body, record = a.body(run, self.opts.time_limit), sent[a.i]
                record.at = time.time()
                for _ in range(3):
                    try:
                        record.status, answer = await conn.post(body)
                        if record.status in (200, 201):
                            record.job_id = json.loads(answer)["id"]
                        else:
                            record.problem = f"HTTP {record.status}: {answer[:200]!r}"
                        break
                    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                        # The same client request id makes a retry safe (no second job).
                        await conn.close()
                        record.problem = f"{type(exc).__name__}: {exc}"
                if a.i % max(1, int(self.opts.rate)) == 0:
                    self.progress(f"submitting: {a.i}/{len(stream)}")
            await conn.close()

        conns = [Connection(parsed.hostname, parsed.port, self.token) for _ in range(self.opts.clients)]
        await asyncio.gather(*(client(c) for c in conns))
        return sent

    def _start_probe(self, url: str) -> threading.Thread | None:
        if not self.opts.api_probe:
            return None

        def probe() -> None:
            time.sleep(self.opts.seconds / 3)
            result: LoadResult = run_load(
                url, self.token, jobs=self.opts.api_probe, clients=50, org=PROBE_ORG, flavor=PROBE_FLAVOR
            )
            self.report.probe = {k: v for k, v in result.summary().items() if not k.startswith("cycle")}

        thread = threading.Thread(target=probe, daemon=True)
        thread.start()
        return thread

    def _drain(self, url: str, sent: list[Sent]) -> None:
        """Wait until no accepted job is left outside a terminal state."""
        live = [s.value for s in JobState if s not in TERMINAL]
        deadline = time.monotonic() + 3 * self.opts.seconds + 120
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {self.token}"}) as client:
            while time.monotonic() < deadline:
                left = client.get("/v1/jobs", params={"state": live, "limit": 1000}).json()
                churn = [j for j in left if j["org"] != PROBE_ORG]
                if not churn:
                    return
                self.progress(f"draining: {len(churn)}{'+' if len(left) == 1000 else ''} jobs not finished")
                time.sleep(0.25)

    def _account(self, db: str, stream: list[Arrival], sent: list[Sent]) -> None:
        from sqlmodel import col, select

        from scheduler.store.db import open_database
        from scheduler.store.tables import JobEventRow, JobRow

        r = self.report
        r.submitted = len(sent)
        problems = [s.problem for s in sent if s.job_id is None]
        r.errors, r.first_errors = len(problems), problems[:5]
        ok = [(a, s) for a, s in zip(stream, sent, strict=True) if s.job_id is not None]
        r.accepted = len(ok)
        r.offered_rate = self.opts.rate
        if len(ok) > 1:
            r.accepted_rate = round((len(ok) - 1) / (ok[-1][1].at - ok[0][1].at), 2)
        ids = [s.job_id for _, s in ok]
        store = open_database(db)
        try:
            with store.read() as s:
                rows = {j.id: j for j in s.exec(select(JobRow).where(col(JobRow.id).in_(ids))).all()}
                admitted: dict[str, float] = {}
                stmt = select(JobEventRow).where(col(JobEventRow.job_id).in_(ids))
                stmt = stmt.order_by(col(JobEventRow.id))
                for e in s.exec(stmt).all():
                    if e.event == JobEvent.ADMIT:
                        admitted.setdefault(e.job_id, e.at)
                    elif e.event == JobEvent.PREEMPT:
                        r.preemptions += 1
        finally:
            store.dispose()
        if not ok or not rows:
            return
        first = min(rows[s.job_id].submitted_at for _, s in ok if s.job_id in rows)
        done = [(a, rows[s.job_id]) for a, s in ok if s.job_id in rows and rows[s.job_id].finished_at]
        for _, row in ((a, rows.get(s.job_id or "")) for a, s in ok):
            state = row.state if row is not None else "missing"
            if state != JobState.SUCCEEDED:
                r.not_succeeded[state] = r.not_succeeded.get(state, 0) + 1
        r.succeeded = sum(row.state == JobState.SUCCEEDED for _, row in done)
        if done:
            r.wall_seconds = round(max(row.finished_at or 0.0 for _, row in done) - first, 2)
        work = sum(a.size * a.runtime for a, _ in ok)
        latest = max(rows[s.job_id].submitted_at - first + a.runtime for a, s in ok if s.job_id in rows)
        r.lower_bound_seconds = round(max(latest, work / self.opts.nodes), 2)
        useful = sum(a.size * a.runtime for a, row in done if row.state == JobState.SUCCEEDED)
        if r.wall_seconds:
            r.usage = round(useful / (self.opts.nodes * r.wall_seconds), 3)
        for size in SIZES:
            sized = [row for a, row in done if a.size == size and row.id in admitted]
            waits = [admitted[row.id] - row.submitted_at for row in sized]
            if waits:
                r.admission_mean_seconds[str(size)] = round(statistics.fmean(waits), 3)
                r.admission_p99_seconds[str(size)] = round(sorted(waits)[int(0.99 * (len(waits) - 1))], 3)
