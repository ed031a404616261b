"""`trainpool plan` and `trainpool validate`: the decision core on files, no server.

``plan`` loads a pool config and job specs, builds a snapshot (submit times from
file order), runs ``decide`` for one or more steps and prints what it decided and
why. Between steps it applies placements and preemptions and advances time to the
next job end, which is enough to watch reservations turn into starts.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator
from rich.console import Console
from rich.table import Table

from scheduler.applier import apply_decisions, nominated
from scheduler.config import (
    PoolConfig,
    job_problems,
    job_warnings,
    load_pool_config,
    load_yaml,
    read_text,
    validate_model,
)
from scheduler.config import warnings as config_warnings
from values.decisions import Decisions, Placement, Preemption, Rejection
from values.domain import JobSpec
from values.errors import ConfigError, Problem
from values.names import Name
from values.snapshot import PendingJob, RunningJob, Snapshot

Decide = Callable[[Snapshot, float], Decisions]


class OutputFormat(StrEnum):
    TABLE = "table"
    JSON = "json"
    YAML = "yaml"


# --- input files -------------------------------------------------------------------------


class RunningEntry(BaseModel):
    """One job already running when the plan starts (times are relative: 0 = plan start)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: Name | None = None
    job: str | None = Field(None, description="a job spec file, relative to this file")
    spec: JobSpec | None = None
    started_at: float = Field(0.0, le=0, ge=-365 * 86_400)
    assignments: dict[Name, Annotated[int, Field(ge=1, le=4096)]] = Field(min_length=1, max_length=4096)
    last_checkpoint_at: float | None = Field(None, le=0, ge=-365 * 86_400)

    @model_validator(mode="after")
    def _one_spec(self) -> RunningEntry:
        if (self.job is None) == (self.spec is None):
            raise ValueError("give exactly one of 'job' (a spec file) or 'spec' (inline)")
        return self


class StateFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    running: tuple[RunningEntry, ...] = Field((), max_length=100_000)
    # Decayed accelerator-seconds per org and flavor, as fair share sees them.
    usage: dict[Name, dict[Name, Annotated[float, Field(ge=0, allow_inf_nan=False)]]] = Field(
        default_factory=dict
    )


def job_files(paths: Iterable[Path]) -> list[Path]:
    """Files as given; a directory contributes its *.yaml / *.yml files sorted by name."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out += sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
        else:
            out.append(path)
    return out


def load_jobs(config: PoolConfig, files: list[Path]) -> list[PendingJob]:
    """Pending jobs in file order, submitted one second apart before time 0."""
    problems: list[str] = []
    jobs: list[PendingJob] = []
    ids: set[str] = set()
    for i, path in enumerate(files):
        try:
            spec = _load_spec(path)
            job = config.pending_job(spec, submitted_at=float(i - len(files)), job_id=_unique(spec.name, ids))
        except ConfigError as exc:
            problems += exc.with_source(str(path)).lines() if exc.source is None else exc.lines()
            continue
        jobs.append(job)
    if problems:  # already "file:line: path: message"; the lines carry their sources
        raise ConfigError([("", line) for line in problems])
    return jobs


def _load_spec(path: Path) -> JobSpec:
    data, root = load_yaml(read_text(path), str(path))
    return validate_model(JobSpec, data, str(path), root)


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}-{n}"
    taken.add(candidate)
    return candidate


def load_state(config: PoolConfig, path: Path, taken: set[str]) -> tuple[list[RunningJob], dict[str, Any]]:
    source = str(path)
    data, root = load_yaml(read_text(path), source)
    state = validate_model(StateFile, data, source, root)
    nodes = {n.name: n for n in config.all_nodes}
    running: list[RunningJob] = []
    problems: list[Problem] = []
    used: dict[str, int] = {}
    for i, entry in enumerate(state.running):
        spec = entry.spec or _load_spec(path.parent / str(entry.job))
        where = f"running[{i}]"
        try:
            priority = config.priority_value(spec.priority)
        except ConfigError as exc:
            problems += [(f"{where}.spec.{p}", m) for p, m in exc.problems]
            continue
        flavors = {nodes[n].flavor for n in entry.assignments if n in nodes}
        for name, replicas in entry.assignments.items():
            if name not in nodes:
                problems.append((f"{where}.assignments.{name}", f"unknown node '{name}'"))
            used[name] = used.get(name, 0) + replicas * spec.gang.accelerators
        if sum(entry.assignments.values()) != spec.gang.replicas:
            problems.append(
                (
                    f"{where}.assignments",
                    f"replicas add up to {sum(entry.assignments.values())}, "
                    f"the gang has {spec.gang.replicas}",
                )
            )
        if len(flavors) > 1 or not flavors <= set(spec.gang.flavors):
            problems.append(
                (
                    f"{where}.assignments",
                    f"nodes are of flavor(s) {sorted(flavors)}; the job accepts {list(spec.gang.flavors)}",
                )
            )
        if problems:
            continue
        running.append(
            RunningJob(
                id=_unique(entry.id or spec.name, taken),
                spec=spec,
                priority=priority,
                submitted_at=entry.started_at,
                started_at=entry.started_at,
                flavor=flavors.pop(),
                assignments=tuple(entry.assignments.items()),
                last_checkpoint_at=entry.last_checkpoint_at,
            )
        )
    for name, count in used.items():
        if name in nodes and count > nodes[name].accelerators:
            problems.append(
                (
                    "running",
                    f"node '{name}' would hold {count} accelerators; it has {nodes[name].accelerators}",
                )
            )
    if problems:
        raise ConfigError(problems, source)
    return running, state.usage


# --- the steps ---------------------------------------------------------------------------


@dataclass
class Step:
    number: int
    time: float
    decisions: Decisions
    finished: list[str] = field(default_factory=list)  # jobs that ended since the last step


@dataclass
class PlanState:
    now: float
    pending: dict[str, PendingJob]
    running: dict[str, RunningJob]
    gone_by: float | None = None  # when the last victim of the step being applied is gone

    # --- the applier's Pool ----------------------------------------------------------
    def place(self, placement: Placement) -> bool:
        job = self.pending.pop(placement.job_id)
        self.running[job.id] = RunningJob(
            id=job.id,
            spec=job.spec,
            priority=job.priority,
            submitted_at=job.submitted_at,
            started_at=self.now,
            flavor=placement.flavor,
            assignments=placement.assignments,
        )
        return True

    def preempt(self, preemption: Preemption) -> bool:
        """A victim stops within its grace period; the plan treats it as gone by the next
        step and queues it again, remembering who preempted it (no ping-pong)."""
        victim = self.running.pop(preemption.job_id, None)
        if victim is None:
            return False
        self.pending[victim.id] = PendingJob(
            id=victim.id,
            spec=victim.spec,
            priority=victim.priority,
            submitted_at=victim.submitted_at,
            attempt=1,
            preempted_by=preemption.beneficiary,
        )
        grace = max(1.0, victim.spec.grace_period_seconds)
        self.gone_by = max(self.gone_by or 0.0, self.now + grace)
        beneficiary = self.pending.get(preemption.beneficiary or "")
        if beneficiary is not None:
            self.pending[beneficiary.id] = nominated(beneficiary)
        return True

    def reject(self, rejection: Rejection) -> bool:
        return self.pending.pop(rejection.job_id, None) is not None


def run_steps(
    config: PoolConfig,
    state: PlanState,
    steps: int,
    decide: Decide,
    usage: dict[str, Any] | None = None,
    step_seconds: float | None = None,
) -> list[Step]:
    out: list[Step] = []
    finished: list[str] = []
    for number in range(1, steps + 1):
        snapshot = config.snapshot(state.pending.values(), state.running.values(), usage)
        decisions = decide(snapshot, state.now)
        out.append(Step(number, state.now, decisions, finished))
        next_time = _next_time(state, _apply(state, decisions), step_seconds)
        if next_time is None or number == steps:
            break
        state.now = next_time
        finished = _finish(state)
    return out


def _apply(state: PlanState, d: Decisions) -> float | None:
    """Start placed jobs, drop rejected ones, requeue victims; returns when the last
    victim is gone (its grace period), if there were any."""
    state.gone_by = None
    apply_decisions(d, state)
    return state.gone_by


def _next_time(state: PlanState, gone_by: float | None, step_seconds: float | None) -> float | None:
    """The next job end or, sooner, the moment preempted victims are gone (their
    beneficiaries then start); None when nothing would change any more."""
    if step_seconds is not None:
        return state.now + step_seconds
    times = [
        end for job in state.running.values() if (end := job.expected_end) is not None and end > state.now
    ]
    if gone_by is not None:
        times.append(gone_by)
    return min(times) if times else None


def _finish(state: PlanState) -> list[str]:
    done = [
        j.id for j in state.running.values() if j.expected_end is not None and j.expected_end <= state.now
    ]
    for job_id in done:
        del state.running[job_id]
    return done


# --- commands ----------------------------------------------------------------------------


def _fail(lines: Iterable[str]) -> typer.Exit:
    for line in lines:
        typer.echo(f"error: {line}", err=True)
    return typer.Exit(code=2)


def _default_decide() -> Decide:
    from scheduler.core import decide

    return decide


def plan(
    pool: Annotated[Path, typer.Option("--pool", "-p", help="The pool config (YAML).")],
    jobs: Annotated[
        list[Path] | None, typer.Option("--jobs", "-j", help="Job spec file or directory (repeatable).")
    ] = None,
    more: Annotated[list[Path] | None, typer.Argument(help="More job spec files or directories.")] = None,
    running: Annotated[
        Path | None, typer.Option("--running", help="Jobs already running, and usage (YAML).")
    ] = None,
    steps: Annotated[int, typer.Option("--steps", min=1, max=1000, help="Decision cycles to run.")] = 1,
    step_seconds: Annotated[
        float | None,
        typer.Option(
            "--step-seconds", min=1, help="Advance by this much per step (default: to the next job end)."
        ),
    ] = None,
    output: Annotated[
        OutputFormat, typer.Option("--output", "-o", help="Tables, or JSON/YAML to parse.")
    ] = OutputFormat.TABLE,
) -> None:
    """Run the decision core on a pool and job specs and show what it decides, and why."""
    try:
        config = load_pool_config(pool)
        pending = load_jobs(config, job_files([*(jobs or []), *(more or [])]))
        taken = {j.id for j in pending}
        current, usage = load_state(config, running, taken) if running else ([], {})
    except ConfigError as exc:
        raise _fail(exc.lines()) from None
    state = PlanState(0.0, {j.id: j for j in pending}, {j.id: j for j in current})
    orgs = {j.id: j.spec.org for j in pending} | {j.id: j.spec.org for j in current}
    result = run_steps(config, state, steps, _default_decide(), usage, step_seconds)
    if output is OutputFormat.TABLE:
        render_steps(config, result, orgs)
        return
    doc = {"pool": config.name, "steps": [step_document(s, orgs) for s in result]}
    if output is OutputFormat.JSON:
        typer.echo(json.dumps(doc, indent=2))
    else:
        typer.echo(yaml.safe_dump(doc, sort_keys=False), nl=False)


def _time(t: float | None) -> float | None:
    return None if t is None or not math.isfinite(t) else t


def step_document(step: Step, orgs: dict[str, str]) -> dict[str, Any]:
    """A step as plain data (JSON/YAML); infinite times become null."""
    d = step.decisions
    return {
        "step": step.number,
        "time": step.time,
        "finished": step.finished,
        "placements": [
            {
                "job": p.job_id,
                "org": orgs.get(p.job_id),
                "flavor": p.flavor,
                "reason": str(p.reason),
                "borrowed": p.borrowed,
                "assignments": [{"node": n, "replicas": r} for n, r in p.assignments],
            }
            for p in d.placements
        ],
        "preemptions": [
            {"job": p.job_id, "reason": str(p.reason), "beneficiary": p.beneficiary, "message": p.message}
            for p in d.preemptions
        ],
        "reservations": [
            {"job": r.job_id, "flavor": r.flavor, "start_at": _time(r.start_at), "nodes": list(r.nodes)}
            for r in d.reservations
        ],
        "pending": [
            {
                "job": job_id,
                "org": orgs.get(job_id),
                "reason": str(s.reason),
                "message": s.message,
                "estimated_start": _time(s.estimated_start),
                "blocked_by": s.blocked_by,
            }
            for job_id, s in sorted(d.pending.items())
        ],
        "rejections": [
            {"job": r.job_id, "reason": str(r.reason), "message": r.message} for r in d.rejections
        ],
    }


def render_steps(
    config: PoolConfig, steps: list[Step], orgs: dict[str, str], console: Console | None = None
) -> None:
    console = console or Console()
    cap = ", ".join(f"{n} {f}" for f, n in config.capacity().items())
    console.print(
        f"[bold]pool {config.name}[/]: {len(config.all_nodes)} nodes ({cap}), {len(config.orgs)} orgs"
    )
    for step in steps:
        console.rule(f"step {step.number} at t={_clock(step.time)}")
        if step.finished:
            console.print(f"finished since the last step: {', '.join(step.finished)}")
        tables = _tables(step.decisions, orgs)
        for table in tables:
            console.print(table)
        if not tables:
            console.print("nothing to decide: no pending jobs and no running job to move")


def _tables(d: Decisions, orgs: dict[str, str]) -> list[Table]:
    tables = []
    if d.placements:
        t = Table("job", "org", "flavor", "reason", "borrowed", "nodes (replicas)", title="placed")
        for p in d.placements:
            t.add_row(
                p.job_id,
                orgs.get(p.job_id, ""),
                p.flavor,
                str(p.reason),
                str(p.borrowed),
                _nodes(p.assignments),
            )
        tables.append(t)
    if d.preemptions:
        t = Table("job", "reason", "for", "message", title="preempted")
        for q in d.preemptions:
            t.add_row(q.job_id, str(q.reason), q.beneficiary or "-", q.message)
        tables.append(t)
    if d.reservations:
        t = Table("job", "flavor", "starts", "nodes held", title="reserved")
        for r in d.reservations:
            t.add_row(r.job_id, r.flavor, _clock(r.start_at), _nodes((n, 0) for n in r.nodes))
        tables.append(t)
    if d.pending:
        t = Table("job", "org", "reason", "message", "est. start", title="pending")
        for job_id, s in sorted(d.pending.items()):
            blocked = f" (by {s.blocked_by})" if s.blocked_by else ""
            t.add_row(
                job_id, orgs.get(job_id, ""), str(s.reason), s.message + blocked, _clock(s.estimated_start)
            )
        tables.append(t)
    if d.rejections:
        t = Table("job", "reason", "message", title="rejected")
        for x in d.rejections:
            t.add_row(x.job_id, str(x.reason), x.message)
        tables.append(t)
    return tables


def _nodes(assignments: Iterable[tuple[str, int]], shown: int = 4) -> str:
    items = list(assignments)
    text = ", ".join(f"{n}×{r}" if r else n for n, r in items[:shown])
    return text + (f", ... +{len(items) - shown} nodes" if len(items) > shown else "")


def _clock(t: float | None) -> str:
    """Plan time as an offset from the start: +0s, +30m, +2h30m, +1d4h; "-" if unknown."""
    if t is None or not math.isfinite(t):
        return "-"
    sign, rest = ("-" if t < 0 else "+"), round(abs(t))
    days, rest = divmod(rest, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{v}{u}" for v, u in ((days, "d"), (hours, "h"), (minutes, "m")) if v]
    if seconds and not days:
        parts.append(f"{seconds}s")
    return sign + ("".join(parts[:2]) or "0s")


def validate(
    files: Annotated[list[Path], typer.Argument(help="Pool configs, job specs or state files.")],
    pool: Annotated[
        Path | None, typer.Option("--pool", "-p", help="Also check job specs against this pool.")
    ] = None,
) -> None:
    """Check pool configs and job specs; print OK and warnings, or every problem."""
    errors: list[str] = []
    try:
        config = load_pool_config(pool) if pool else None
    except ConfigError as exc:
        raise _fail(exc.lines()) from None
    for path in job_files(files):
        try:
            for line in _validate_one(path, config):
                typer.echo(line)
        except ConfigError as exc:
            errors += exc.lines()
    if errors:
        raise _fail(errors)


def _validate_one(path: Path, config: PoolConfig | None) -> list[str]:
    source = str(path)
    data, root = load_yaml(read_text(path), source)
    if isinstance(data, dict) and ("gang" in data or "org" in data):
        spec = validate_model(JobSpec, data, source, root)
        if config is not None and (problems := job_problems(config, spec)):
            raise ConfigError(problems, source)
        g = spec.gang
        checked = "" if config is not None else "; not checked against a pool: give --pool POOL.yaml"
        return [
            f"{source}: OK (job '{spec.name}' of org {spec.org}: {g.replicas} x {g.accelerators} "
            f"{'|'.join(g.flavors)}{checked})"
        ] + [f"{source}: warning: {w}" for w in job_warnings(spec)]
    if isinstance(data, dict) and ("running" in data or "usage" in data):
        if config is None:
            validate_model(StateFile, data, source, root)
        else:
            load_state(config, path, set())
        return [f"{source}: OK (state file)"]
    pool = validate_model(PoolConfig, data, source, root)
    cap = pool.capacity()
    lines = [
        f"{source}: OK (pool '{pool.name}': {len(pool.flavors)} flavors, {len(pool.all_nodes)} nodes, "
        f"{sum(cap.values())} accelerators, {len(pool.orgs)} orgs)"
    ]
    return lines + [f"{source}: warning: {w}" for w in config_warnings(pool)]
