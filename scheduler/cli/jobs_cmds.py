"""`trainpool submit`, `queue` and `jobs ...`: jobs over the HTTP API.

A job is addressed by its id or by its name. A name means the newest job of that name
among those the caller can see (in ``--org``, where given); a name used in several orgs
needs ``--org``. Commands that change many jobs take filters instead (``jobs cancel
--state/--name``).
"""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer

from scheduler.cli import complete
from scheduler.cli.client import (
    EXIT_REFUSED,
    Client,
    ClientError,
    ContextOpt,
    OutOpt,
    Output,
    TokenOpt,
    Unreachable,
    UrlOpt,
    connect,
    emit,
    err,
    friendly,
)
from scheduler.cli.times import local, relative, span
from values.lifecycle import TERMINAL as FINISHED
from values.lifecycle import JobState
from values.names import JOB_ID_PATTERN

TERMINAL = tuple(s.value for s in JobState if s in FINISHED)
UNFINISHED = tuple(s.value for s in JobState if s not in FINISHED)
JOB_ID = re.compile(JOB_ID_PATTERN)
JOB_COLUMNS = ("id", "name", "org", "state", "flavor", "accelerators", "nodes", "age", "elapsed", "attempt",
               "reason")  # fmt: skip

JobRef = Annotated[
    str, typer.Argument(help="Job id, or name (its newest job).", autocompletion=complete.jobs)
]
OrgOpt = Annotated[
    str | None, typer.Option("--org", help="Only this org's jobs.", autocompletion=complete.orgs)
]
ReconnectOpt = Annotated[
    str,
    typer.Option("--reconnect", help="How long to keep trying an unreachable server: 90s, 10m, 1h."),
]

jobs_app = typer.Typer(help="List, describe, cancel jobs; read their events, logs and checkpoints.",
                       no_args_is_help=True)  # fmt: skip


# --- how jobs are shown ----------------------------------------------------------------


def job_row(job: dict[str, Any], now: float) -> dict[str, Any]:
    """A job as a table shows it: where it runs, how old it is, how long this attempt ran."""
    started, state = job.get("attempt_started_at"), job["state"]
    ran = started is not None and state not in ("PENDING", "ADMITTED")
    nodes = job.get("nodes") or []
    return {
        **job,
        "flavor": job.get("flavor") or "|".join(job["spec"]["gang"]["flavors"]),
        "nodes": ",".join(nodes[:2]) + (f" +{len(nodes) - 2}" if len(nodes) > 2 else ""),
        "age": span(now - job["submitted_at"]),
        "elapsed": span((job.get("finished_at") or now) - started) if ran and started is not None else "-",
    }


def emit_jobs(jobs: list[dict[str, Any]] | dict[str, Any], output: Output) -> None:
    if output in (Output.table, Output.csv):
        now = time.time()
        jobs = job_row(jobs, now) if isinstance(jobs, dict) else [job_row(j, now) for j in jobs]
    emit(jobs, output, JOB_COLUMNS)


def in_words(job: dict[str, Any], now: float) -> str:
    """What the job is doing, as `submit --wait` narrates it."""
    state, reason, message = job["state"], job.get("reason"), job.get("message") or ""
    because = f" ({reason}: {message})" if reason and message else f" ({reason})" if reason else ""
    nodes = ", ".join(job.get("nodes") or [])
    if state == "PENDING":
        text = f"waiting{because}" if reason else "waiting in the queue"
        if job.get("estimated_start"):
            est = job["estimated_start"]
            text += f"; estimated start {local(est)} ({relative(est, now)})"
        return text
    words = {
        "ADMITTED": f"placed on {nodes}; launching",
        "STARTING": f"starting on {nodes}: replicas are coming up",
        "RUNNING": f"running on {nodes} (attempt {job['attempt']})",
        "PREEMPTED": f"preempted{because}: stopping, then back to the queue",
        "RESTARTING": f"failed{because}: restarting from its latest checkpoint",
        "SUCCEEDED": "succeeded",
    }
    if state in words:
        return words[state]
    code = f", exit code {job['exit_code']}" if job.get("exit_code") is not None else ""
    return f"{state.lower()}{because}{code}"


# --- finding jobs ----------------------------------------------------------------------


def resolve(client: Client, ref: str, org: str | None) -> str:
    """The id of the job ``ref`` names: itself if it is an id, else the newest job with
    that name the caller can see."""
    if JOB_ID.fullmatch(ref):
        return ref
    rows = client.get("/v1/jobs", name=ref, org=org, limit=1000)
    if not rows:
        where = f" in org '{org}'" if org else ""
        raise ClientError(f"job '{ref}' not found{where}: no job you can see has that id or name")
    orgs = sorted({r["org"] for r in rows})
    if len(orgs) > 1:
        raise ClientError(f"jobs named '{ref}' exist in orgs {', '.join(orgs)}: add --org")
    return str(rows[0]["id"])


def matching(client: Client, org: str | None, states: list[str], name: str | None) -> list[dict[str, Any]]:
    """Every job the filters select, across pages."""
    out: list[dict[str, Any]] = []
    while True:
        page = client.get("/v1/jobs", org=org, state=states, name=name, limit=1000, offset=len(out))
        out.extend(page)
        if len(page) < 1000:
            return out


def _states(given: list[str] | None, allowed: tuple[str, ...], flag: str = "--state") -> list[str]:
    states = [s.upper() for s in given or []]
    for s in states:
        if s not in allowed:
            raise ClientError(f"{flag}: '{s}' is not one of {', '.join(allowed)}")
    return states


# --- commands --------------------------------------------------------------------------


@friendly
def submit(
    file: Annotated[Path, typer.Argument(help="The job spec (YAML).")],
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            help="Follow the job to its end: exit 0 if it succeeds, 1 if not, "
            "3 if the server stayed unreachable.",
        ),
    ] = False,
    request_id: Annotated[
        str | None, typer.Option("--request-id", help="Makes retries idempotent (default: a fresh id).")
    ] = None,
    reconnect: ReconnectOpt = "5m",
    output: OutOpt = Output.table,
    url: UrlOpt = None,
    token: TokenOpt = None,
    context: ContextOpt = None,
) -> None:
    """Submit a job spec; with --wait, follow it to its end."""
    from scheduler.cli.pool_cmds import parse_duration
    from scheduler.config import load_job_spec
    from values.errors import ConfigError

    patience = parse_duration(reconnect, "--reconnect")
    try:
        spec = load_job_spec(file)
    except ConfigError as exc:
        raise ClientError("; ".join(exc.lines())) from None
    client = connect(url, token, context)
    # Retrying a submission whose answer was lost must not make a second job: the id makes
    # the server return the first one.
    body = {"spec": spec.model_dump(mode="json"), "client_request_id": request_id or uuid.uuid4().hex}
    job = _patiently(lambda: client.post("/v1/jobs", body), patience)
    if not wait:
        emit_jobs(job, output)
        return
    err.print(f"submitted {job['id']} ({job['name']}); waiting for it to finish "
              "(Ctrl-C stops waiting, not the job)")  # fmt: skip
    last, job_id = None, job["id"]
    while job["state"] not in TERMINAL:
        now = time.time()
        said = in_words(job, now)
        if said != last:
            err.print(f"{local(now)}  {job['state']}: {said}", highlight=False)
            last = said
        time.sleep(1.0)
        job = _patiently(lambda: client.get(f"/v1/jobs/{job_id}"), patience)
    err.print(f"{local(time.time())}  {job['state']}: {in_words(job, time.time())}", highlight=False)
    emit_jobs(job, output)
    if job["state"] != "SUCCEEDED":
        raise typer.Exit(EXIT_REFUSED)


def _patiently(call: Any, patience: float) -> Any:
    """``call()``, tried again while the server does not answer, for up to ``patience``
    seconds; then the last error (exit 3)."""
    lost_at = None
    while True:
        try:
            got = call()
        except Unreachable as exc:
            now = time.time()
            if lost_at is None:
                lost_at = now
                err.print(f"{local(now)}  server unreachable ({exc}); trying again for up to "
                          f"{span(patience)}", highlight=False)  # fmt: skip
            if now - lost_at >= patience:
                raise Unreachable(f"gave up after {span(now - lost_at)}: {exc}") from None
            time.sleep(min(5.0, 1.0 + (now - lost_at) / 10))
            continue
        if lost_at is not None:
            err.print(f"{local(time.time())}  the server answers again", highlight=False)
        return got


@jobs_app.command("list")
@friendly
def jobs_list(
    org: OrgOpt = None,
    state: Annotated[list[str] | None, typer.Option("--state", help="Repeat for several.")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Only jobs of this name.")] = None,
    team: Annotated[str | None, typer.Option("--team")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 100,
    output: OutOpt = Output.table,
    url: UrlOpt = None,
    token: TokenOpt = None,
    context: ContextOpt = None,
) -> None:
    """Jobs, newest first."""
    states = _states(state, UNFINISHED + TERMINAL)
    rows = connect(url, token, context).get("/v1/jobs", org=org, state=states, name=name, team=team,
                                            limit=limit)  # fmt: skip
    emit_jobs(rows, output)


@jobs_app.command("describe")
@friendly
def jobs_describe(job: JobRef, org: OrgOpt = None, output: OutOpt = Output.yaml, url: UrlOpt = None,
                  token: TokenOpt = None, context: ContextOpt = None) -> None:  # fmt: skip
    """Everything about one job (YAML by default, times local)."""
    client = connect(url, token, context)
    emit_jobs(client.get(f"/v1/jobs/{resolve(client, job, org)}"), output)


@jobs_app.command("cancel")
@friendly
def jobs_cancel(
    jobs: Annotated[
        list[str] | None, typer.Argument(help="Job ids or names.", autocompletion=complete.jobs)
    ] = None,
    state: Annotated[
        list[str] | None, typer.Option("--state", help="Cancel every job in this state; repeatable.")
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Cancel every unfinished job of this name.")
    ] = None,
    org: OrgOpt = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    context: ContextOpt = None,
) -> None:
    """Cancel jobs by id or name, or every unfinished job the filters select; a running
    gang gets its grace period."""
    client = connect(url, token, context)
    if jobs and (state or name):
        raise ClientError("give jobs, or --state/--name filters, not both")
    if jobs:
        ids = [resolve(client, ref, org) for ref in jobs]
    elif state or name:
        ids = [j["id"] for j in matching(client, org, _states(state, UNFINISHED) or list(UNFINISHED), name)]
        if not ids:
            typer.echo("no unfinished job matches")
            return
    else:
        raise ClientError("nothing to cancel: give job ids or names, or --state / --name")
    failed = 0
    for job_id in ids:
        try:
            done = client.post(f"/v1/jobs/{job_id}/cancel")
            typer.echo(f"{done['id']} {done['state']}")
        except Unreachable:
            raise
        except ClientError as exc:
            if exc.status == 409 and not jobs:  # finished while we went through the list
                typer.echo(f"{job_id} already finished")
                continue
            err.print(f"[red]error:[/red] {job_id}: {exc}", highlight=False)
            failed += 1
    if failed:
        raise typer.Exit(EXIT_REFUSED)


@jobs_app.command("events")
@friendly
def jobs_events(job: JobRef, org: OrgOpt = None, output: OutOpt = Output.table, url: UrlOpt = None,
                token: TokenOpt = None, context: ContextOpt = None) -> None:  # fmt: skip
    """The job's history: every transition with its reason."""
    client = connect(url, token, context)
    rows = client.get(f"/v1/jobs/{resolve(client, job, org)}/events")
    emit(rows, output, ("at", "attempt", "event", "from_state", "to_state", "reason", "message"))


@jobs_app.command("checkpoints")
@friendly
def jobs_checkpoints(job: JobRef, org: OrgOpt = None, output: OutOpt = Output.table, url: UrlOpt = None,
                     token: TokenOpt = None, context: ContextOpt = None) -> None:  # fmt: skip
    """The checkpoints the job reported, newest first: a restart resumes from the top one."""
    client = connect(url, token, context)
    rows = client.get(f"/v1/jobs/{resolve(client, job, org)}/checkpoints")
    emit(rows, output, ("at", "attempt", "step", "path"))


@jobs_app.command("logs")
@friendly
def jobs_logs(
    job: JobRef,
    attempt: Annotated[
        int | None, typer.Option("--attempt", min=0, help="Default: the latest attempt with logs.")
    ] = None,
    replica: Annotated[
        int | None, typer.Option("--replica", min=0, help="One replica's lines, by rank.")
    ] = None,
    tail: Annotated[int, typer.Option("--tail", min=1, max=10_000)] = 200,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines until the job ends.")
    ] = False,
    org: OrgOpt = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    context: ContextOpt = None,
) -> None:
    """The job's log lines, as far as the backend keeps them."""
    client = connect(url, token, context)
    job_id = resolve(client, job, org)
    params = {"attempt": attempt, "tail": tail, "replica": replica}
    body = client.get(f"/v1/jobs/{job_id}/logs", **params)
    if body["attempt"] != body.get("current_attempt", body["attempt"]):
        err.print(f"attempt {body['current_attempt']} has no logs yet; attempt {body['attempt']}'s:")
    shown: list[str] = body["lines"]
    if shown:
        typer.echo("\n".join(shown))
    while follow and body.get("state") not in TERMINAL:
        time.sleep(1.0)
        try:
            latest = client.get(f"/v1/jobs/{job_id}/logs", **{**params, "tail": 10_000})
        except ClientError:  # a restarted job's next attempt has no logs until it launches
            state = client.get(f"/v1/jobs/{job_id}")["state"]
            body = {**body, "state": state}
            continue
        if latest["attempt"] != body["attempt"]:
            typer.echo(f"--- attempt {latest['attempt']} ---")
            shown = []
        fresh = new_lines(shown, latest["lines"])
        if fresh:
            typer.echo("\n".join(fresh))
            shown = (shown + fresh)[-10_000:]
        body = latest


def new_lines(shown: list[str], latest: list[str]) -> list[str]:
    """The lines of ``latest`` after the longest overlap of its start with the end of
    ``shown``: the API serves a tail, so consecutive tails overlap."""
    for k in range(min(len(shown), len(latest)), 0, -1):
        if latest[:k] == shown[-k:]:
            return latest[k:]
    return latest


@friendly
def queue(
    org: OrgOpt = None,
    flavor: Annotated[str | None, typer.Option("--flavor")] = None,
    output: OutOpt = Output.table,
    url: UrlOpt = None,
    token: TokenOpt = None,
    context: ContextOpt = None,
) -> None:
    """Pending jobs in queue order: why each waits, and when it should start and why then."""
    rows = connect(url, token, context).get("/v1/queue", org=org, flavor=flavor)
    if output in (Output.table, Output.csv):
        now = time.time()
        rows = [{**r, "starts": relative(r["estimated_start"], now), "age": span(now - r["submitted_at"]),
                 "accelerators": _range(r["min_accelerators"], r["accelerators"])} for r in rows]  # fmt: skip
    emit(
        rows,
        output,
        ("id", "name", "org", "priority", "accelerators", "age", "reason", "starts", "estimated_start",
         "message"),
    )  # fmt: skip


def _range(least: int, most: int) -> str | int:
    """An elastic gang's accelerators as 'least-most' (it starts with what fits between)."""
    return most if least == most else f"{least}-{most}"


def register(app: typer.Typer) -> None:
    app.command("submit")(submit)
    app.command("queue")(queue)
    app.add_typer(jobs_app, name="jobs")
