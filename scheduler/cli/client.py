"""The CLI's HTTP client (where the server is, who we are) and how it shows results and errors.

Server URL and token come from, in order: flags, TRAINPOOL_URL / TRAINPOOL_TOKEN, the
named (or current) context of the config file (TRAINPOOL_CONFIG, else
~/.config/trainpool/config.yaml), then http://127.0.0.1:8642 without a token.

    current-context: prod
    contexts:
      prod: {url: https://pool.example.org, token: tp_...}
      local: {url: http://127.0.0.1:8642}
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import httpx
import typer
import yaml
from rich.console import Console
from rich.table import Table

from scheduler.cli.times import is_time_field, local, readable

DEFAULT_URL = "http://127.0.0.1:8642"


class ClientError(Exception):
    """Shown to the user as one line; the CLI exits non-zero."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # the HTTP status, where the server answered


class Unreachable(ClientError):
    """No answer from the server (refused, timed out, or it said 502-504: not ready)."""


UrlOpt = Annotated[
    str | None, typer.Option("--url", help="Server URL (else TRAINPOOL_URL, else the context).")
]
TokenOpt = Annotated[
    str | None, typer.Option("--token", help="Bearer token (else TRAINPOOL_TOKEN, else the context).")
]
ContextOpt = Annotated[str | None, typer.Option("--context", help="A named context of the config file.")]


def config_path() -> Path:
    env = os.environ.get("TRAINPOOL_CONFIG")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "trainpool" / "config.yaml"


def _context(name: str | None) -> dict[str, Any]:
    path = config_path()
    if not path.exists():
        if name:
            raise ClientError(f"--context {name}: no config file at {path}")
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ClientError(f"{path}: not valid YAML ({exc.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise ClientError(f"{path}: expected a mapping with 'contexts' and 'current-context'")
    contexts = data.get("contexts") or {}
    chosen = name or data.get("current-context")
    if not chosen:
        return {}
    if not isinstance(contexts, dict) or chosen not in contexts:
        known = ", ".join(contexts) if isinstance(contexts, dict) else ""
        raise ClientError(f"{path}: no context '{chosen}' (known: {known or 'none'})")
    ctx = contexts[chosen]
    if not isinstance(ctx, dict):
        raise ClientError(f"{path}: contexts.{chosen} must be a mapping with url and token")
    return ctx


@dataclass
class Connection:
    url: str
    token: str | None

    @classmethod
    def resolve(cls, url: str | None, token: str | None, context: str | None) -> Connection:
        ctx = _context(context) if (context or not (url and token)) else {}
        return cls(
            url=(url or os.environ.get("TRAINPOOL_URL") or ctx.get("url") or DEFAULT_URL).rstrip("/"),
            token=token or os.environ.get("TRAINPOOL_TOKEN") or ctx.get("token"),
        )


def connect(url: str | None, token: str | None, context: str | None) -> Client:
    return Client(Connection.resolve(url, token, context))


class Client:
    def __init__(self, conn: Connection, timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {conn.token}"} if conn.token else {}
        self.conn = conn
        self._http = httpx.Client(base_url=conn.url, headers=headers, timeout=timeout)

    def request(
        self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None
    ) -> Any:
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            resp = self._http.request(method, path, json=json, params=clean)
        except httpx.TransportError as exc:
            raise Unreachable(
                f"cannot reach the server at {self.conn.url} ({exc.__class__.__name__}); "
                "is `trainpool server` running, and is --url / TRAINPOOL_URL right?"
            ) from None
        if resp.status_code in (502, 503, 504):
            raise Unreachable(f"{_detail(resp)} (HTTP {resp.status_code})", resp.status_code)
        if resp.status_code >= 400:
            raise ClientError(f"{_detail(resp)} (HTTP {resp.status_code})", resp.status_code)
        return resp.json() if resp.content else None

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, json=body)

    def put(self, path: str, body: Any, **params: Any) -> Any:
        return self.request("PUT", path, json=body, params=params)

    def patch(self, path: str, body: Any, **params: Any) -> Any:
        return self.request("PATCH", path, json=body, params=params)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)


def _detail(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text.strip().splitlines()[0] if resp.text.strip() else resp.reason_phrase
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])
    return str(body)


# --- how results and errors are shown --------------------------------------------------

P = ParamSpec("P")
R = TypeVar("R")
err = Console(stderr=True, soft_wrap=True)  # an error stays one line, whatever the width


class Output(StrEnum):
    table = "table"
    json = "json"
    yaml = "yaml"
    csv = "csv"


OutOpt = Annotated[Output, typer.Option("-o", "--output", help="table, json, yaml (csv where noted).")]


# Exit codes: 1 the server said no (or the job did not succeed), 2 bad usage (click's),
# 3 no answer from the server; scripts retry on 3 only.
EXIT_REFUSED, EXIT_UNREACHABLE = 1, 3


def friendly(fn: Callable[P, R]) -> Callable[P, R]:
    """One clear line on stderr and an exit code instead of a traceback."""

    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except ClientError as exc:
            err.print(f"[red]error:[/red] {exc}", highlight=False)
            raise typer.Exit(EXIT_UNREACHABLE if isinstance(exc, Unreachable) else EXIT_REFUSED) from None

    return wrapper


def emit(
    rows: Sequence[dict[str, Any]] | dict[str, Any], output: Output, columns: Sequence[str] = ()
) -> None:
    if output is Output.json:
        typer.echo(json.dumps(rows, indent=2))
    elif output is Output.yaml:  # for people: local times; json keeps Unix seconds
        typer.echo(yaml.safe_dump(readable(rows), sort_keys=False).rstrip())
    elif output is Output.csv:
        items = [rows] if isinstance(rows, dict) else list(rows)
        cols = list(columns) or (list(items[0]) if items else [])
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(items)
        typer.echo(buf.getvalue().rstrip())
    else:
        items = [rows] if isinstance(rows, dict) else list(rows)
        cols = list(columns) or (list(items[0]) if items else [])
        table = Table(*cols, box=None, header_style="bold")
        for row in items:
            table.add_row(*[_cell(c, row.get(c)) for c in cols])
        # Piped output gets full width: ids must not be cut to "j-ce3f…".
        Console(width=None if sys.stdout.isatty() else 250).print(table)


def _cell(column: str, value: Any) -> str:
    if is_time_field(column):
        return local(value)
    if value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)
