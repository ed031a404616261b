"""What a server is made of, as plain values: the options both of its processes read,
and what follows from them (the pool file, where state lives, the backend's settings).

Plain and picklable on purpose: the control loop's process gets the same options and
builds its own database connection and backend from them.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from scheduler.backends.registry import BackendSettings
from scheduler.collector import GcTuning
from scheduler.config import PoolConfig, load_pool_config, parse_pool_config
from scheduler.control.loop_place import LoopPlace
from scheduler.control.wake import Pace
from scheduler.store.db import Database, default_sqlite_path

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
    # The secret that may read /metrics and nothing else (else TRAINPOOL_METRICS_TOKEN[_FILE];
    # none: only pool-admin tokens may).
    metrics_token: str | None = None
    sim_duration: float = 60.0
    pace: Pace = field(default_factory=Pace)
    lease_ttl: float = 10.0
    loop: LoopPlace = LoopPlace.PROCESS
    gc: GcTuning | None = None  # None: the interpreter's defaults, no collector thread
    # Addresses or networks whose X-Forwarded-For is believed (the client address the
    # bad-token throttle counts); none: every peer is the client it appears to be.
    trusted_proxies: tuple[str, ...] = ()


def secret_from_env(name: str) -> str | None:
    """``$NAME``, or the first line of the file ``$NAME_FILE`` names (a mounted Secret)."""
    secret = os.environ.get(name, "").strip()
    path = os.environ.get(f"{name}_FILE", "").strip()
    if not secret and path:
        secret = Path(path).read_text().strip().splitlines()[0].strip()
    return secret or None


def pool_config(opts: ServerOptions) -> PoolConfig:
    if opts.pool:
        return load_pool_config(opts.pool)
    return parse_pool_config(DEMO_POOL, "<built-in demo pool>")


def state_dir(db: Database) -> Path:
    """Beside the SQLite file, else the default data directory."""
    if db.is_sqlite and db.engine.url.database not in (None, "", ":memory:"):
        return Path(db.engine.url.database).resolve().parent
    return default_sqlite_path().parent


def checkpoint_root(opts: ServerOptions, db: Database) -> Path:
    """Absolute (a relative --checkpoint-root is from the server's working directory), so
    that the API, the loop and every backend mean the same folder."""
    return Path(opts.checkpoint_root).absolute() if opts.checkpoint_root else state_dir(db) / "checkpoints"


def _sim_state_path(opts: ServerOptions, db: Database) -> Path:
    if opts.sim_state:
        return Path(opts.sim_state)
    if db.is_sqlite and db.engine.url.database not in (None, "", ":memory:"):
        return Path(f"{db.engine.url.database}.sim.json")
    # One state file per database, so two pools on one machine do not share gangs.
    digest = hashlib.sha256(db.url.encode()).hexdigest()[:12]
    return default_sqlite_path().parent / f"sim-{digest}.json"


def backend_settings(opts: ServerOptions, db: Database, config: PoolConfig) -> BackendSettings:
    return BackendSettings(
        config=config,
        address=opts.backend_address,
        checkpoint_root=checkpoint_root(opts, db),
        state_dir=state_dir(db),
        options=dict(opts.backend_options),
        sim_duration=opts.sim_duration,
        sim_state=_sim_state_path(opts, db) if opts.backend == "sim" else None,
    )
