"""`trainpool nodes`, `orgs`, `quota`, `teams`, `tokens`, `usage`, `whoami` and `audit`:
the pool and its organizations over the HTTP API."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from scheduler.cli import complete
from scheduler.cli.client import (
    ClientError,
    ContextOpt,
    OutOpt,
    Output,
    TokenOpt,
    UrlOpt,
    connect,
    emit,
    err,
    friendly,
)
from scheduler.cli.times import local, relative

OrgArg = Annotated[str, typer.Argument(help="The organization.", autocompletion=complete.orgs)]
NodeArg = Annotated[str, typer.Argument(help="The node.", autocompletion=complete.nodes)]


# --- nodes ---------------------------------------------------------------------------

NODE_COLUMNS = (
    "name",
    "flavor",
    "accelerators",
    "allocated",
    "health",
    "cordoned",
    "validation",
    "rack",
    "spine",
)
nodes_app = typer.Typer(help="Nodes: list, describe, cordon, uncordon, validate.", no_args_is_help=True)


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
    emit(connect(url, token, context).get("/v1/nodes", flavor=flavor), output, NODE_COLUMNS)


@nodes_app.command("describe")
@friendly
def nodes_describe(name: NodeArg, output: OutOpt = Output.yaml, url: UrlOpt = None, token: TokenOpt = None,
                   context: ContextOpt = None) -> None:  # fmt: skip
    """One node: its place in the topology, health, and the agent's evidence."""
    client = connect(url, token, context)
    node = client.get(f"/v1/nodes/{name}")
    try:  # the health model's verdict and its evidence, where the node runs an agent
        node["agent_health"] = client.get(f"/v1/agents/{name}/health")
    except ClientError:
        node["agent_health"] = None
    emit(node, output, NODE_COLUMNS)


@nodes_app.command("cordon")
@friendly
def nodes_cordon(
    name: NodeArg, url: UrlOpt = None, token: TokenOpt = None, context: ContextOpt = None
) -> None:
    """No new work lands on the node; running work stays (pool-admin)."""
    node = connect(url, token, context).post(f"/v1/nodes/{name}/cordon")
    typer.echo(f"{node['name']} cordoned")


@nodes_app.command("uncordon")
@friendly
def nodes_uncordon(
    name: NodeArg,
    validate: Annotated[
        bool | None,
        typer.Option(
            "--validate/--no-validate", help="Validate first (default: the pool's validation.on_uncordon)."
        ),
    ] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    context: ContextOpt = None,
) -> None:
    """New work may land on the node again, once it passes validation where the pool
    validates (pool-admin)."""
    path = f"/v1/nodes/{name}/uncordon" + ("" if validate is None else f"?validate={str(validate).lower()}")
    node = connect(url, token, context).post(path)
    if node.get("validation") in ("pending", "running"):
        typer.echo(f"{node['name']} validates first; it takes work once it passes (trainpool nodes describe)")
    else:
        typer.echo(f"{node['name']} uncordoned")


@nodes_app.command("validate")
@friendly
def nodes_validate(
    name: NodeArg,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the result; exit 1 if it fails.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds --wait waits.", min=1)] = 900.0,
    url: UrlOpt = None,
    token: TokenOpt = None,
    context: ContextOpt = None,
) -> None:
    """Cordon the node and run a validation (burn-in and a collective with a healthy
    peer); it takes work again once it passes (pool-admin)."""
    client = connect(url, token, context)
    node = client.post(f"/v1/nodes/{name}/validate")
    typer.echo(f"{node['name']}: validation {node['validation']}")
    if not wait:
        return
    deadline, said = time.monotonic() + timeout, (node["validation"], node["validation_message"])
    while node["validation"] in ("pending", "running"):
        if time.monotonic() > deadline:
            typer.echo(f"{name}: still {node['validation']} after {timeout:g}s", err=True)
            raise typer.Exit(1)
        time.sleep(1.0)
        node = client.get(f"/v1/nodes/{name}")
        now = (node["validation"], node["validation_message"])
        if now != said:
            typer.echo(f"{name}: {now[0]}: {now[1]}")
            said = now
    if node["validation"] != "passed":
        raise typer.Exit(1)


# --- orgs and quotas -----------------------------------------------------------------


@friendly
def orgs(
    output: OutOpt = Output.table, url: UrlOpt = None, token: TokenOpt = None, context: ContextOpt = None
) -> None:
    """Organizations you can see, with their teams."""
    rows = connect(url, token, context).get("/v1/orgs")
    if output is Output.table:
        rows = [{**r, "teams": [t["name"] for t in r["teams"]], "flavors": sorted(r["quotas"])} for r in rows]
    emit(rows, output, ("name", "weight", "flavors", "teams"))


quota_app = typer.Typer(help="Show and set organizations' quotas.", no_args_is_help=True)


@quota_app.command("show")
@friendly
def quota_show(org: OrgArg, output: OutOpt = Output.table, url: UrlOpt = None, token: TokenOpt = None,
               context: ContextOpt = None) -> None:  # fmt: skip
    """An org's quota per flavor: nominal and limits, in use, borrowed (from whom), lent
    (to whom: what reclaim can take back), and what is being reclaimed for it now."""
    rows = connect(url, token, context).get(f"/v1/orgs/{org}/standing")
    if output in (Output.table, Output.csv):
        now = time.time()
        rows = [
            {
                **r,
                "borrowed_from": _who(r["borrowed_from"]),
                "lent_to": _who(r["lent_to"]),
                "reclaiming": (
                    f"{r['reclaiming']} by {local(r['reclaimed_by'])} ({relative(r['reclaimed_by'], now)})"
                    if r["reclaiming"] else "-"
                ),
            }
            for r in rows
        ]  # fmt: skip
    emit(rows, output, ("flavor", "nominal", "borrowing_limit", "lending_limit", "in_use", "borrowed",
                        "borrowed_from", "lent", "lent_to", "reclaiming"))  # fmt: skip


def _who(amounts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(amounts.items(), key=lambda kv: (-kv[1], kv[0]))) or "-"


ForceOpt = Annotated[
    bool, typer.Option("--force", help="Store guarantees that add up to more than the pool has.")
]


@quota_app.command("set")
@friendly
def quota_set(
    org: OrgArg,
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
    force: ForceOpt = False,
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
    row = connect(url, token, context).patch(f"/v1/orgs/{org}/quotas/{flavor}", body, force=force or None)
    _warn(row)
    typer.echo(f"{org}/{flavor}: nominal {row['nominal']}, borrowing_limit {row['borrowing_limit']}, "
               f"lending_limit {row['lending_limit']}")  # fmt: skip


def _warn(row: dict[str, Any]) -> None:
    if row.get("warning"):
        err.print(f"[yellow]warning:[/yellow] {row['warning']}", highlight=False)


@quota_app.command("apply")
@friendly
def quota_apply(
    pool: Annotated[Path, typer.Argument(help="A pool file; its orgs' quotas and teams are applied.")],
    force: ForceOpt = False,
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
    client = connect(url, token, context)
    known = {o["name"]: o for o in client.get("/v1/orgs")}
    for org in config.orgs:
        if org.name not in known:
            client.post("/v1/orgs", {"name": org.name, "weight": org.weight})
            typer.echo(f"{org.name}: created")
        current = known.get(org.name, {}).get("quotas", {})
        for flavor, quota in org.quotas.items():
            wanted = quota.model_dump()
            if current.get(flavor) != wanted:
                _warn(client.put(f"/v1/orgs/{org.name}/quotas/{flavor}", wanted, force=force or None))
                typer.echo(f"{org.name}/{flavor}: {wanted}")
        for team in org.teams:
            client.put(f"/v1/orgs/{org.name}/teams/{team.name}", {"weight": team.weight})


teams_app = typer.Typer(help="Teams of an organization and their weights.", no_args_is_help=True)


@teams_app.command("list")
@friendly
def teams_list(org: OrgArg, output: OutOpt = Output.table, url: UrlOpt = None, token: TokenOpt = None,
               context: ContextOpt = None) -> None:  # fmt: skip
    """The org's teams and their weights."""
    emit(connect(url, token, context).get(f"/v1/orgs/{org}/teams"), output, ("org", "name", "weight"))


@teams_app.command("set")
@friendly
def teams_set(
    org: OrgArg,
    team: str,
    weight: Annotated[float, typer.Option("--weight", min=0.0001)] = 1.0,
    url: UrlOpt = None,
    token: TokenOpt = None,
    context: ContextOpt = None,
) -> None:
    """Create a team or change its weight (org-admin of the org)."""
    row = connect(url, token, context).put(f"/v1/orgs/{org}/teams/{team}", {"weight": weight})
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
        made = connect(url, token, context).post("/v1/agents/tokens", {"node": node or "", "name": name})
        made |= {"role": "agent", "org": None}
    else:
        body: dict[str, Any] = {"role": role, "org": org, "name": name}
        if ttl is not None:
            body["ttl_seconds"] = parse_duration(ttl, "--ttl")
        made = connect(url, token, context).post("/v1/tokens", body)
    if output is Output.table:
        typer.echo(f"token {made['id']} ({made['role']}{' of ' + made['org'] if made['org'] else ''})")
        typer.echo(f"secret (shown once): {made['secret']}")
    else:
        emit(made, output)


@tokens_app.command("list")
@friendly
def tokens_list(output: OutOpt = Output.table, url: UrlOpt = None, token: TokenOpt = None,
                context: ContextOpt = None) -> None:  # fmt: skip
    """Tokens you may manage: your org's (org-admin) or all (pool-admin); never secrets."""
    rows = connect(url, token, context).get("/v1/tokens")
    emit(rows, output, ("id", "role", "org", "name", "created_at", "expires_at", "revoked_at"))


@tokens_app.command("revoke")
@friendly
def tokens_revoke(
    token_id: str, url: UrlOpt = None, token: TokenOpt = None, context: ContextOpt = None
) -> None:
    """Revoke a token; the tokens an org-admin token made are revoked with it."""
    row = connect(url, token, context).delete(f"/v1/tokens/{token_id}")
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
    by: Annotated[
        str, typer.Option("--by", help="org, team, flavor or user (the submitting token's name).")
    ] = "org",
    org: Annotated[str | None, typer.Option("--org", autocompletion=complete.orgs)] = None,
    output: OutOpt = Output.table,
    url: UrlOpt = None,
    token: TokenOpt = None,
    context: ContextOpt = None,
) -> None:
    """Accelerator-hours by org, team, flavor or user (-o csv for spreadsheets); by org,
    also the share of them that went into work that was kept (effective_time_ratio; -o json
    splits what was lost by reason)."""
    columns = {"org": ("org",), "team": ("org", "team"), "flavor": ("flavor",), "user": ("org", "user")}
    if by not in columns:
        raise ClientError(f"--by: '{by}' is not one of {', '.join(columns)}")
    rows = connect(url, token, context).get("/v1/usage", since=_since(since), by=by, org=org)
    if by == "team" and output is not Output.json:
        rows = [{**r, "team": r["team"] or "(no team)"} for r in rows]
    extra = ("effective_time_ratio",) if by == "org" else ()
    emit(rows, output, (*columns[by], "accelerator_hours", *extra))


@friendly
def whoami(
    output: OutOpt = Output.table, url: UrlOpt = None, token: TokenOpt = None, context: ContextOpt = None
) -> None:
    """Which server, and who the token is: role, org, name, expiry."""
    client = connect(url, token, context)
    me = client.get("/v1/whoami")
    if output is Output.table:
        left = f" ({relative(me['expires_at'], time.time())})" if me.get("expires_at") else ""
        for key, value in (
            ("server", client.conn.url), ("token", me["token_id"]), ("role", me["role"]),
            ("org", me["org"] or "-"), ("name", me["name"] or "-"),
            ("expires", (local(me["expires_at"]) + left) if me.get("expires_at") else "never"),
        ):  # fmt: skip
            typer.echo(f"{key + ':':<9}{value}")
    else:
        emit({"server": client.conn.url, **me}, output)


@friendly
def audit(
    since: Annotated[str | None, typer.Option("--since", help="7d, 12h, 2026-01-01.")] = None,
    action: Annotated[
        str | None,
        typer.Option("--action", help="An action (quota.set), or a family ending in a dot (token.)."),
    ] = None,
    actor: Annotated[str | None, typer.Option("--actor", help="A token id.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 200,
    output: OutOpt = Output.table,
    url: UrlOpt = None,
    token: TokenOpt = None,
    context: ContextOpt = None,
) -> None:
    """Who changed what, and who was refused, newest first (pool-admin)."""
    rows = connect(url, token, context).get(
        "/v1/audit", since=_since(since), action=action, actor=actor, limit=limit
    )
    if output in (Output.table, Output.csv):
        rows = [{**r, "detail": _brief(r["detail"])} for r in rows]
    emit(rows, output, ("at", "actor", "action", "target", "detail"))


def _brief(detail: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in detail.items() if v not in (None, "", {}, []))


def register(app: typer.Typer) -> None:
    app.command("orgs")(orgs)
    app.command("usage")(usage)
    app.command("whoami")(whoami)
    app.command("audit")(audit)
    app.add_typer(nodes_app, name="nodes")
    app.add_typer(quota_app, name="quota")
    app.add_typer(tokens_app, name="tokens")
    app.add_typer(teams_app, name="teams")
