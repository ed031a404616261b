"""Assembling a server: database, pool file, backend, first admin token, loop, app."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI
from sqlalchemy.exc import IntegrityError

from scheduler.api.app import create_app
from scheduler.api.context import ServerContext
from scheduler.apply import ApplyOptions
from scheduler.backends.registry import BackendSettings, build_backend
from scheduler.config import PoolConfig, load_pool_config, parse_pool_config
from scheduler.loop import ControlLoop, LoopSettings
from scheduler.metrics import Metrics
from scheduler.store import orgs as orgstore
from scheduler.store import tokens as tokenstore
from scheduler.store.db import Database, default_sqlite_path, open_database
from scheduler.store.view import PoolView

# Used when no --pool is given, so `trainpool server` alone gives a pool to try.
DEMO_POOL = """
name: demo
flavors: [{name: h100}]
node_groups: [{flavor: h100, count: 4, accelerators: 8, racks_per_spine: 2, name_prefix: h100}]
orgs: [{name: default, quotas: {h100: {nominal: 32}}}]
"""


@dataclass
class ServerOptions:
    db: str | None = None
    pool: str | None = None
    backend: str = "sim"
    backend_address: str | None = None
    backend_options: dict[str, str] = field(default_factory=dict)
    checkpoint_root: str | None = None
    sim_state: str | None = None
    # The first pool-admin token's secret (else TRAINPOOL_ADMIN_TOKEN[_FILE], else a new one).
    admin_token: str | None = None
    sim_duration: float = 60.0
    interval: float = 1.0
    lease_ttl: float = 10.0


def admin_secret_from_env() -> str | None:
    """TRAINPOOL_ADMIN_TOKEN, or the first line of the file TRAINPOOL_ADMIN_TOKEN_FILE names."""
    secret = os.environ.get("TRAINPOOL_ADMIN_TOKEN", "").strip()
    path = os.environ.get("TRAINPOOL_ADMIN_TOKEN_FILE", "").strip()
    if not secret and path:
        secret = Path(path).read_text().strip().splitlines()[0].strip()
    return secret or None


def _sim_state_path(opts: ServerOptions, db: Database) -> Path:
    if opts.sim_state:
        return Path(opts.sim_state)
    if db.is_sqlite and db.engine.url.database not in (None, "", ":memory:"):
        return Path(f"{db.engine.url.database}.sim.json")
    # One state file per database, so two pools on one machine do not share gangs.
    digest = hashlib.sha256(db.url.encode()).hexdigest()[:12]
    return default_sqlite_path().parent / f"sim-{digest}.json"


def _state_dir(db: Database) -> Path:
    """Beside the SQLite file, else the default data directory."""
    if db.is_sqlite and db.engine.url.database not in (None, "", ":memory:"):
        return Path(db.engine.url.database).resolve().parent
    return default_sqlite_path().parent


def _seed(db: Database, config: PoolConfig, admin_token: str | None) -> str | None:
    """Orgs from the pool file and the first admin token; a second server starting at
    the same moment may insert the same rows first, so a clash is retried once."""
    for attempt in range(2):
        try:
            with db.write() as s:
                orgstore.seed_from_config(s, config.orgs, time.time())
                return tokenstore.bootstrap_admin(s, time.time(), admin_token or admin_secret_from_env())
        except IntegrityError:
            if attempt:
                raise
    return None


def build(opts: ServerOptions, say: Callable[[str], None] = print) -> tuple[FastAPI, ServerContext]:
    db = open_database(opts.db)
    if db.created:
        say(f"created a new database at {db.engine.url.database}")
    if opts.pool:
        config: PoolConfig = load_pool_config(opts.pool)
    else:
        config = parse_pool_config(DEMO_POOL, "<built-in demo pool>")
        say("no --pool given: using the built-in demo pool (4 h100 nodes of 8, org 'default')")
    state_dir = _state_dir(db)
    checkpoint_root = Path(opts.checkpoint_root) if opts.checkpoint_root else state_dir / "checkpoints"
    made = _seed(db, config, opts.admin_token)
    if made:
        say(f"first pool-admin token (shown once, store it now): {made}")
    backend = build_backend(
        opts.backend,
        BackendSettings(
            config=config,
            address=opts.backend_address,
            checkpoint_root=checkpoint_root,
            state_dir=state_dir,
            options=dict(opts.backend_options),
            sim_duration=opts.sim_duration,
            sim_state=_sim_state_path(opts, db) if opts.backend == "sim" else None,
        ),
    )
    metrics = Metrics()
    pool = PoolView.from_config(config)
    loop = ControlLoop(
        db,
        backend,
        pool,
        settings=LoopSettings(
            interval=opts.interval,
            lease_ttl=opts.lease_ttl,
            apply=ApplyOptions(checkpoint_root=str(checkpoint_root)),
        ),
        metrics=metrics,
    )
    ctx = ServerContext(db=db, pool=pool, metrics=metrics, loop=loop)
    return create_app(ctx), ctx
