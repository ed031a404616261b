"""Shell completion of what lives on the server: job ids and names, nodes, orgs.

Asked of the server the command would talk to (its --url/--token/--context if typed
already, else the environment and the config file), with a short timeout; a server
that does not answer completes nothing rather than printing an error into the prompt.
"""

from __future__ import annotations

from typing import Any

import typer

from scheduler.cli.client import Client, ClientError, Connection


def _ask(ctx: typer.Context, path: str, **params: Any) -> Any:
    p = ctx.params
    try:
        conn = Connection.resolve(p.get("url"), p.get("token"), p.get("context"))
        return Client(conn, timeout=2.0).get(path, **params)
    except ClientError:
        return []


def jobs(ctx: typer.Context, incomplete: str) -> list[str]:
    rows = _ask(ctx, "/v1/jobs", limit=200, org=ctx.params.get("org"))
    seen = [r["id"] for r in rows] + list(dict.fromkeys(r["name"] for r in rows))
    return [x for x in seen if x.startswith(incomplete)]


def nodes(ctx: typer.Context, incomplete: str) -> list[str]:
    return [n["name"] for n in _ask(ctx, "/v1/nodes") if n["name"].startswith(incomplete)]


def orgs(ctx: typer.Context, incomplete: str) -> list[str]:
    return [o["name"] for o in _ask(ctx, "/v1/orgs") if o["name"].startswith(incomplete)]
