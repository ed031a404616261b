"""`trainpool server` and the commands that talk to it over HTTP.

Thin on purpose: every command is one or two API calls and a printer. Errors from the
server arrive as one line (``ClientError``) and exit with code 1.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from scheduler.cli.client import Client, ClientError, Connection, Output, emit, err, friendly
from scheduler.cli.times import local, span
from scheduler.control.loop_place import LoopPlace
from scheduler.control.wake import Pace

if TYPE_CHECKING:
    from scheduler.collector import GcTuning

UrlOpt = Annotated[
    str | None, typer.Option("--url", help="Server URL (else TRAINPOOL_URL, else the context).")
]
TokenOpt = Annotated[
    str | None, typer.Option("--token", help="Bearer token (else TRAINPOOL_TOKEN, else the context).")
]
ContextOpt = Annotated[str | None, typer.Option("--context", help="A named context of the config file.")]
OutOpt = Annotated[Output, typer.Option("-o", "--output", help="table, json, yaml (csv where noted).")]


def _client(url: str | None, token: str | None, context: str | None) -> Client:
    return Client(Connection.resolve(url, token, context))


# --- server --------------------------------------------------------------------------


def _gc_tuning() -> GcTuning:
    """TRAINPOOL_GC_THRESHOLD="g0,g1,g2" and TRAINPOOL_GC_EVERY=seconds between full
    collections (for experiments), else the tuned defaults."""
    from scheduler.collector import GcTuning

    default = GcTuning()
    text = os.environ.get("TRAINPOOL_GC_THRESHOLD", ",".join(map(str, default.thresholds)))
    try:
        g0, g1, g2 = (int(x) for x in text.split(","))
    except ValueError:
        err.print(
            f"[red]error:[/red] TRAINPOOL_GC_THRESHOLD: '{text}' is not three integers", highlight=False
        )
        raise typer.Exit(2) from None
    every = os.environ.get("TRAINPOOL_GC_EVERY", str(default.every))
    try:
        seconds = float(every)
        if not seconds > 0:
            raise ValueError
    except ValueError:
        err.print(
            f"[red]error:[/red] TRAINPOOL_GC_EVERY: '{every}' is not a positive number", highlight=False
        )
        raise typer.Exit(2) from None
    return GcTuning(thresholds=(g0, g1, g2), every=seconds)


def _key_values(items: list[str], flag: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            err.print(f"[red]error:[/red] {flag}: '{item}' is not KEY=VALUE", highlight=False)
            raise typer.Exit(2)
        out[key] = value
    return out


def _networks(items: list[str], flag: str) -> tuple[str, ...]:
    import ipaddress

    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            err.print(f"[red]error:[/red] {flag}: '{item}' is not an IP address or network", highlight=False)
            raise typer.Exit(2) from None
    return tuple(items)


def server(
    db: Annotated[str | None, typer.Option("--db", help="SQLite path or postgresql+psycopg:// URL.")] = None,
    pool: Annotated[Path | None, typer.Option("--pool", help="The pool file (flavors, orgs, nodes).")] = None,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8642,
    backend: Annotated[str, typer.Option("--backend", help="sim, ray or kubernetes.")] = "sim",
    address: Annotated[
        str | None, typer.Option("--address", help="Ray cluster address, or kubeconfig path / 'in-cluster'.")
    ] = None,
    backend_opt: Annotated[
        list[str] | None, typer.Option("--backend-opt", help="KEY=VALUE for the backend; repeatable.")
    ] = None,
    checkpoint_root: Annotated[
        str | None,
        typer.Option("--checkpoint-root", help="Shared checkpoint folder (default: beside the db)."),
    ] = None,
    sim_state: Annotated[str | None, typer.Option("--sim-state", help="Sim backend state file.")] = None,
    sim_duration: Annotated[
        float, typer.Option("--sim-duration", min=0, help="Default sim job seconds.")
    ] = 60.0,
    interval: Annotated[
        float,
        typer.Option(
            "--interval",
            min=0.01,
            envvar="TRAINPOOL_INTERVAL",
            help="Most seconds between cycles (backends are polled at least this often).",
        ),
    ] = 1.0,
    batch_delay: Annotated[
        float,
        typer.Option(
            "--batch-delay",
            min=0,
            envvar="TRAINPOOL_BATCH_DELAY",
            help="Seconds from a change (submit, cancel, node) to its cycle: a burst is one cycle.",
        ),
    ] = Pace.batch_delay,
    min_gap: Annotated[
        float,
        typer.Option(
            "--min-gap",
            min=0,
            envvar="TRAINPOOL_MIN_GAP",
            help="Fewest seconds between the end of a cycle and the next.",
        ),
    ] = Pace.min_gap,
    loop: Annotated[
        LoopPlace,
        typer.Option(
            "--loop",
            envvar="TRAINPOOL_LOOP",
            help="Where the control loop runs: a child process (its CPU leaves the API's alone) or a thread.",
        ),
    ] = LoopPlace.PROCESS,
    lease_ttl: Annotated[float, typer.Option("--lease-ttl", min=0.5, help="Leader lease seconds.")] = 10.0,
    trusted_proxy: Annotated[
        list[str] | None,
        typer.Option(
            "--trusted-proxy",
            help="Address or network (CIDR) of a proxy whose X-Forwarded-For is believed; repeatable.",
        ),
    ] = None,
) -> None:
    """Run the pool service: HTTP API, control loop and metrics."""
    import logging

    from sqlalchemy.exc import SQLAlchemyError

    from scheduler.control.loop_process import LoopStartError
    from scheduler.control.options import ServerOptions
    from scheduler.control.root import LOG_FORMAT, Root
    from scheduler.store.db import DatabaseURLError
    from values.errors import ConfigError

    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    opts = ServerOptions(
        db=db, pool=str(pool) if pool else None, backend=backend, backend_address=address,
        backend_options=_key_values(backend_opt or [], "--backend-opt"), checkpoint_root=checkpoint_root,
        sim_state=sim_state, sim_duration=sim_duration, lease_ttl=lease_ttl, loop=loop, gc=_gc_tuning(),
        pace=Pace(interval=interval, batch_delay=batch_delay, min_gap=min_gap),
        trusted_proxies=_networks(trusted_proxy or [], "--trusted-proxy"),
    )  # fmt: skip
    try:
        root = Root(opts, say=lambda line: typer.echo(line, err=True))
        root.start()
    except ConfigError as exc:
        for line in exc.lines():
            err.print(f"[red]error:[/red] {line}", highlight=False)
        raise typer.Exit(2) from None
    except (DatabaseURLError, ValueError, OSError, LoopStartError) as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        err.print(f"[red]error:[/red] --db: cannot use the database: {reason}", highlight=False)
        raise typer.Exit(2) from None
    typer.echo(f"trainpool server on http://{host}:{port} (API under /v1, docs at /docs)", err=True)
    root.serve(host, port)


# --- jobs ----------------------------------------------------------------------------

JOB_COLUMNS = ("id", "name", "org", "state", "flavor", "accelerators", "nodes", "age", "elapsed", "attempt",
               "reason")  # fmt: skip
_TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED", "REJECTED"}


def job_row(job: dict[str, Any], now: float) -> dict[str, Any]:
    """A job as a table shows it: where it runs, how old it is, how long this attempt ran."""
    started, state = job.get("attempt_started_at"), job["state"]
    ran = started is not None and (state in ("RUNNING", "STOPPING") or state in _TERMINAL)
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


jobs_app = typer.Typer(help="List, describe, cancel jobs and read their events.", no_args_is_help=True)


@friendly
def submit(
    file: Annotated[Path, typer.Argument(help="The job spec (YAML).")],
    wait: Annotated[bool, typer.Option("--wait", help="Wait until the job finishes.")] = False,
    request_id: Annotated[str | None, typer.Option("--request-id", help="Makes retries idempotent.")] = None,
    output: OutOpt = Output.table,
    url: UrlOpt = None,
    token: TokenOpt = None,
    context: ContextOpt = None,
) -> None:
    """Submit a job spec; with --wait, follow it to the end (exit 1 unless it succeeds)."""
    from scheduler.config import load_job_spec
    from values.errors import ConfigError

    try:
        spec = load_job_spec(file)
    except ConfigError as exc:
        raise ClientError("; ".join(exc.lines())) from None
    client = _client(url, token, context)
    body: dict[str, Any] = {"spec": spec.model_dump(mode="json"), "client_request_id": request_id}
    job = client.post("/v1/jobs", body)
    if not wait:
        emit(job, output, JOB_COLUMNS)
        return
    err.print(f"submitted {job['id']}; waiting (Ctrl-C stops waiting, not the job)")
    last = None
    while job["state"] not in ("SUCCEEDED", "FAILED", "CANCELLED", "REJECTED"):
        seen = (job["state"], job.get("reason"))
        if seen != last:
            reason = (
                f" ({job['reason']}: {job['message']})"
                if job.get("reason") and job["state"] == "PENDING"
                else ""
            )
            err.print(f"{local(time.time())}  {job['state']}{reason}", highlight=False)
            last = seen
        time.sleep(1.0)
        job = client.get(f"/v1/jobs/{job['id']}")
    emit(job, output, JOB_COLUMNS)
    if job["state"] != "SUCCEEDED":
        raise typer.Exit(1)


@jobs_app.command("list")
@friendly
def jobs_list(
    org: Annotated[str | None, typer.Option("--org")] = None,
    state: Annotated[list[str] | None, typer.Option("--state", help="Repeat for several.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 100,
    output: OutOpt = Output.table,
    url: UrlOpt = None,
    token: TokenOpt = None,
    context: ContextOpt = None,
) -> None:
    """Jobs, newest first."""
    states = [s.upper() for s in state] if state else None
    emit(
        _client(url, token, context).get("/v1/jobs", org=org, state=states, limit=limit), output, JOB_COLUMNS
    )


@jobs_app.command("describe")
@friendly
def jobs_describe(job_id: str, output: OutOpt = Output.yaml, url: UrlOpt = None, token: TokenOpt = None,
                  context: ContextOpt = None) -> None:  # fmt: skip
    """Everything about one job (YAML by default)."""
    emit(_client(url, token, context).get(f"/v1/jobs/{job_id}"), output, JOB_COLUMNS)


@jobs_app.command("cancel")
@friendly
def jobs_cancel(job_id: str, url: UrlOpt = None, token: TokenOpt = None, context: ContextOpt = None) -> None:
    """Cancel a job; a running gang gets its grace period."""
    job = _client(url, token, context).post(f"/v1/jobs/{job_id}/cancel")
    typer.echo(f"{job['id']} {job['state']}")


@jobs_app.command("events")
@friendly
def jobs_events(job_id: str, output: OutOpt = Output.table, url: UrlOpt = None, token: TokenOpt = None,
                context: ContextOpt = None) -> None:  # fmt: skip
    """The job's history: every transition with its reason."""
    rows = _client(url, token, context).get(f"/v1/jobs/{job_id}/events")
    emit(rows, output, ("at", "attempt", "event", "from_state", "to_state", "reason", "message"))


@jobs_app.command("logs")
@friendly
def jobs_logs(
    job_id: str,
    attempt: Annotated[int | None, typer.Option("--attempt", min=0)] = None,
    replica: Annotated[
        int | None, typer.Option("--replica", min=0, help="One replica's lines, by rank.")
    ] = None,
    tail: Annotated[int, typer.Option("--tail", min=1, max=10_000)] = 200,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines until the job ends.")
    ] = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
    context: ContextOpt = None,
) -> None:
    """The job's log lines, as far as the backend keeps them."""
    client = _client(url, token, context)
    params = {"attempt": attempt, "tail": tail, "replica": replica}
    body = client.get(f"/v1/jobs/{job_id}/logs", **params)
    shown: list[str] = body["lines"]
    if shown:
        typer.echo("\n".join(shown))
    while follow and body.get("state") not in _TERMINAL:
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
    org: Annotated[str | None, typer.Option("--org")] = None,
    flavor: Annotated[str | None, typer.Option("--flavor")] = None,
    output: OutOpt = Output.table,
    url: UrlOpt = None,
    token: TokenOpt = None,
    context: ContextOpt = None,
) -> None:
    """Pending jobs: why each waits and when it should start."""
    rows = _client(url, token, context).get("/v1/queue", org=org, flavor=flavor)
    emit(
        rows,
        output,
        ("id", "name", "org", "priority", "accelerators", "reason", "estimated_start", "message"),
    )


# --- nodes ---------------------------------------------------------------------------

NODE_COLUMNS = ("name", "flavor", "accelerators", "allocated", "health", "cordoned", "rack", "spine")
nodes_app = typer.Typer(help="Nodes: list, describe, cordon, uncordon.", no_args_is_help=True)


@nodes_app.command("list")
@friendly
def nodes_list(
    flavor: Annotated[str | None, typer.Option("--flavor")] = None,
    output: OutOpt = Output.table,
    url: UrlOpt = None,
    token: TokenOpt = None,
    context: ContextOpt = None,
) -> None:
    """Every node with its health and how many accelerators are allocated."""
    emit(_client(url, token, context).get("/v1/nodes", flavor=flavor), output, NODE_COLUMNS)


@nodes_app.command("describe")
@friendly
def nodes_describe(name: str, output: OutOpt = Output.yaml, url: UrlOpt = None, token: TokenOpt = None,
                   context: ContextOpt = None) -> None:  # fmt: skip
    client = _client(url, token, context)
    node = client.get(f"/v1/nodes/{name}")
    try:  # the health model's verdict and its evidence, where the node runs an agent
        node["agent_health"] = client.get(f"/v1/agents/{name}/health")
    except ClientError:
        node["agent_health"] = None
    emit(node, output, NODE_COLUMNS)


@nodes_app.command("cordon")
@friendly
def nodes_cordon(name: str, url: UrlOpt = None, token: TokenOpt = None, context: ContextOpt = None) -> None:
    """No new work lands on the node; running work stays (pool-admin)."""
    node = _client(url, token, context).post(f"/v1/nodes/{name}/cordon")
    typer.echo(f"{node['name']} cordoned")


@nodes_app.command("uncordon")
@friendly
def nodes_uncordon(name: str, url: UrlOpt = None, token: TokenOpt = None, context: ContextOpt = None) -> None:
    node = _client(url, token, context).post(f"/v1/nodes/{name}/uncordon")
    typer.echo(f"{node['name']} uncordoned")


# --- orgs and quotas -----------------------------------------------------------------


@friendly
def orgs(
    output: OutOpt = Output.table, url: UrlOpt = None, token: TokenOpt = None, context: ContextOpt = None
) -> None:
    """Organizations you can see, with their teams."""
    rows = _client(url, token, context).get("/v1/orgs")
    if output is Output.table:
        rows = [{**r, "teams": [t["name"] for t in r["teams"]], "flavors": sorted(r["quotas"])} for r in rows]
    emit(rows, output, ("name", "weight", "flavors", "teams"))


quota_app = typer.Typer(help="Show and set organizations' quotas.", no_args_is_help=True)


@quota_app.command("show")
@friendly
def quota_show(org: str, output: OutOpt = Output.table, url: UrlOpt = None, token: TokenOpt = None,
               context: ContextOpt = None) -> None:  # fmt: skip
    """An org's quota per flavor."""
    quotas = _client(url, token, context).get(f"/v1/orgs/{org}/quotas")
    emit(
        [{"flavor": f, **q} for f, q in quotas.items()],
        output,
        ("flavor", "nominal", "borrowing_limit", "lending_limit"),
    )


@quota_app.command("set")
@friendly
def quota_set(
    org: str,
    flavor: str,
    nominal: Annotated[int | None, typer.Option("--nominal", min=0)] = None,
    borrowing_limit: Annotated[int | None, typer.Option("--borrowing-limit", min=0)] = None,
    lending_limit: Annotated[int | None, typer.Option("--lending-limit", min=0)] = None,
    no_borrowing_limit: Annotated[
        bool, typer.Option("--no-borrowing-limit", help="Remove the borrowing limit.")
    ] = False,
    no_lending_limit: Annotated[
        bool, typer.Option("--no-lending-limit", help="Remove the lending limit.")
    ] = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
    context: ContextOpt = None,
) -> None:
    """Change an org's quota for one flavor: only the values given (pool-admin; audited)."""
    body: dict[str, int | None] = {}
    for name, value, unset in (
        ("nominal", nominal, False),
        ("borrowing_limit", borrowing_limit, no_borrowing_limit),
        ("lending_limit", lending_limit, no_lending_limit),
    ):
        flag = "--" + name.replace("_", "-")
        if unset and value is not None:
            raise ClientError(f"{flag}: give a limit or --no-{flag[2:]}, not both")
        if value is not None or unset:
            body[name] = value
    if not body:
        raise ClientError("nothing to change: give --nominal, a limit, or --no-...-limit")
    row = _client(url, token, context).patch(f"/v1/orgs/{org}/quotas/{flavor}", body)
    typer.echo(f"{org}/{flavor}: nominal {row['nominal']}, borrowing_limit {row['borrowing_limit']}, "
               f"lending_limit {row['lending_limit']}")  # fmt: skip


@quota_app.command("apply")
@friendly
def quota_apply(
    pool: Annotated[Path, typer.Argument(help="A pool file; its orgs' quotas and teams are applied.")],
    url: UrlOpt = None,
    token: TokenOpt = None,
    context: ContextOpt = None,
) -> None:
    """Make the server's orgs, quotas and teams match a pool file (pool-admin; audited)."""
    from scheduler.config import load_pool_config
    from values.errors import ConfigError

    try:
        config = load_pool_config(pool)
    except ConfigError as exc:
        raise ClientError("; ".join(exc.lines())) from None
    client = _client(url, token, context)
    known = {o["name"]: o for o in client.get("/v1/orgs")}
    for org in config.orgs:
        if org.name not in known:
            client.post("/v1/orgs", {"name": org.name, "weight": org.weight})
            typer.echo(f"{org.name}: created")
        current = known.get(org.name, {}).get("quotas", {})
        for flavor, quota in org.quotas.items():
            wanted = quota.model_dump()
            if current.get(flavor) != wanted:
                client.put(f"/v1/orgs/{org.name}/quotas/{flavor}", wanted)
                typer.echo(f"{org.name}/{flavor}: {wanted}")
        for team in org.teams:
            client.put(f"/v1/orgs/{org.name}/teams/{team.name}", {"weight": team.weight})


teams_app = typer.Typer(help="Teams of an organization and their weights.", no_args_is_help=True)


@teams_app.command("list")
@friendly
def teams_list(org: str, output: OutOpt = Output.table, url: UrlOpt = None, token: TokenOpt = None,
               context: ContextOpt = None) -> None:  # fmt: skip
    emit(_client(url, token, context).get(f"/v1/orgs/{org}/teams"), output, ("org", "name", "weight"))


@teams_app.command("set")
@friendly
def teams_set(
    org: str,
    team: str,
    weight: Annotated[float, typer.Option("--weight", min=0.0001)] = 1.0,
    url: UrlOpt = None,
    token: TokenOpt = None,
    context: ContextOpt = None,
) -> None:
    """Create a team or change its weight (org-admin of the org)."""
    row = _client(url, token, context).put(f"/v1/orgs/{org}/teams/{team}", {"weight": weight})
    typer.echo(f"{row['org']}/{row['name']}: weight {row['weight']}")


# --- tokens and usage ----------------------------------------------------------------

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def parse_duration(text: str, flag: str) -> float:
    """``3600``, ``90s``, ``15m``, ``12h``, ``30d`` -> seconds."""
    value, unit = (text[:-1], text[-1]) if text and text[-1] in _UNITS else (text, "s")
    try:
        seconds = float(value) * _UNITS[unit]
    except ValueError:
        raise ClientError(f"{flag}: '{text}' is not a duration (like 3600, 12h or 30d)") from None
    if not seconds > 0:
        raise ClientError(f"{flag}: must be positive, got '{text}'")
    return seconds


tokens_app = typer.Typer(help="Create, list and revoke API tokens.", no_args_is_help=True)


@tokens_app.command("create")
@friendly
def tokens_create(
    role: Annotated[str, typer.Option("--role", help="member, org-admin, pool-admin or agent")],
    org: Annotated[str | None, typer.Option("--org")] = None,
    node: Annotated[str | None, typer.Option("--node", help="The node an agent token acts for.")] = None,
    name: Annotated[str, typer.Option("--name", help="Who or what holds it.")] = "",
    ttl: Annotated[str | None, typer.Option("--ttl", help="Lifetime: 3600, 12h, 30d (default 90d).")] = None,
    output: OutOpt = Output.table,
    url: UrlOpt = None,
    token: TokenOpt = None,
    context: ContextOpt = None,
) -> None:
    """Make a token; its secret is printed once."""
    if role == "agent" or node:  # node-bound agent tokens live beside the others (issue 6)
        made = _client(url, token, context).post("/v1/agents/tokens", {"node": node or "", "name": name})
        made |= {"role": "agent", "org": None}
    else:
        body: dict[str, Any] = {"role": role, "org": org, "name": name}
        if ttl is not None:
            body["ttl_seconds"] = parse_duration(ttl, "--ttl")
        made = _client(url, token, context).post("/v1/tokens", body)
    if output is Output.table:
        typer.echo(f"token {made['id']} ({made['role']}{' of ' + made['org'] if made['org'] else ''})")
        typer.echo(f"secret (shown once): {made['secret']}")
    else:
        emit(made, output)


@tokens_app.command("list")
@friendly
def tokens_list(output: OutOpt = Output.table, url: UrlOpt = None, token: TokenOpt = None,
                context: ContextOpt = None) -> None:  # fmt: skip
    rows = _client(url, token, context).get("/v1/tokens")
    emit(rows, output, ("id", "role", "org", "name", "created_at", "expires_at", "revoked_at"))


@tokens_app.command("revoke")
@friendly
def tokens_revoke(
    token_id: str, url: UrlOpt = None, token: TokenOpt = None, context: ContextOpt = None
) -> None:
    """Revoke a token; the tokens an org-admin token made are revoked with it."""
    row = _client(url, token, context).delete(f"/v1/tokens/{token_id}")
    also = row.get("also_revoked") or []
    typer.echo(f"{row['id']} revoked" + (f", and the {len(also)} it made: {', '.join(also)}" if also else ""))


def _since(text: str | None) -> float | None:
    """'7d', '12h', '30m', an ISO date, or Unix seconds."""
    if text is None:
        return None
    units = {"d": 86_400, "h": 3600, "m": 60}
    try:
        if text[-1:] in units:
            return time.time() - float(text[:-1]) * units[text[-1]]
        if text.replace(".", "", 1).isdigit():
            return float(text)
        return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()
    except ValueError:
        raise ClientError(
            f"--since: '{text}' is not a duration (7d, 12h, 30m), a date or Unix seconds"
        ) from None


@friendly
def usage(
    since: Annotated[
        str | None, typer.Option("--since", help="7d, 12h, 2026-01-01 (default 30 days).")
    ] = None,
    by: Annotated[str, typer.Option("--by", help="org, team or flavor")] = "org",
    org: Annotated[str | None, typer.Option("--org")] = None,
    output: OutOpt = Output.table,
    url: UrlOpt = None,
    token: TokenOpt = None,
    context: ContextOpt = None,
) -> None:
    """Accelerator-hours by org, team or flavor (-o csv for spreadsheets)."""
    rows = _client(url, token, context).get("/v1/usage", since=_since(since), by=by, org=org)
    cols = {"org": ("org",), "team": ("org", "team"), "flavor": ("flavor",)}.get(by, ())
    emit(rows, output, (*cols, "accelerator_hours"))


def register(app: typer.Typer) -> None:
    """Add the service commands to the `trainpool` app."""
    app.command("server")(server)
    app.command("submit")(submit)
    app.command("queue")(queue)
    app.command("orgs")(orgs)
    app.command("usage")(usage)
    app.add_typer(jobs_app, name="jobs")
    app.add_typer(nodes_app, name="nodes")
    app.add_typer(quota_app, name="quota")
    app.add_typer(tokens_app, name="tokens")
    app.add_typer(teams_app, name="teams")
