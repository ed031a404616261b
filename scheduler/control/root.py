"""The server's composition root: the one place that builds its parts and starts every
thread and process it runs (``trainpool server``, ``trainpool up`` and the demo).

In the API's process: the database (migrated here, once), the orgs and the first admin
token, the HTTP app over a ``ServerContext``, uvicorn (in the calling thread, or in a
thread for the embedded pool) and the garbage collector's thread. The control loop, by
default (``LoopPlace.PROCESS``), runs in a spawned child that builds its own database
connection and backend: the loop in its main thread, the health evaluation, the thread
that answers the API (``loop_process``) and a collector of its own. The API's process
keeps the GIL for requests, so a busy loop no longer halves the accepted submission
rate. ``LoopPlace.THREAD`` runs the same parts in threads of the API's process.

The child dies with the API's process: Ctrl-C reaches only the parent (the child
ignores SIGINT), which stops the child with SIGTERM after the HTTP server stopped; the
child ends its cycle, hands the leader lease over and closes its backend. If the parent
is killed (SIGKILL), the kernel kills the child at once (PDEATHSIG SIGKILL), exactly as
the one process was killed before: the lease then expires, and the next leader's first
cycle repairs whatever the kill interrupted.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from fastapi import FastAPI
from sqlalchemy.exc import IntegrityError

from scheduler.api.app import create_app
from scheduler.api.context import ServerContext
from scheduler.collector import GcTuning, Observe, collect_every, tune
from scheduler.config import PoolConfig
from scheduler.control import loop_process
from scheduler.control.handle import LoopHandle
from scheduler.control.loop_host import LoopHost
from scheduler.control.loop_place import LoopPlace
from scheduler.control.loop_process import LoopProcess
from scheduler.control.options import ServerOptions, checkpoint_root, pool_config, secret_from_env
from scheduler.control.wake import Doorbell
from scheduler.metrics import Metrics
from scheduler.parent_death import die_with_parent
from scheduler.store import orgs as orgstore
from scheduler.store import tokens as tokenstore
from scheduler.store.db import Database, open_database
from scheduler.store.view import PoolView
from values.errors import ConfigError

log = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Connecting to a backend (a Ray cluster) can take a while on a loaded machine.
LOOP_START_TIMEOUT = 180.0
Say = Callable[[str], None]
Stop = Callable[[], None]


class Root:
    def __init__(self, opts: ServerOptions, say: Say = print) -> None:
        self.opts = opts
        self.say = say
        self.ctx: ServerContext | None = None
        self.app: FastAPI | None = None
        self._stops: list[Stop] = []  # run in reverse order of starting
        self._http: Any = None  # uvicorn.Server, when served from a thread

    def start(self) -> FastAPI:
        """Build everything and start the loop and the collector; nothing listens yet."""
        try:
            db = open_database(self.opts.db)
            self._stops.append(db.dispose)
            if db.created:
                self.say(f"created a new database at {db.engine.url.database}")
            if not self.opts.pool:
                self.say("no --pool given: using the built-in demo pool (4 h100 nodes of 8, org 'default')")
            config = pool_config(self.opts)
            made = _seed(db, config, self.opts.admin_token)
            if made:
                self.say(f"first pool-admin token (shown once, store it now): {made}")
            metrics = Metrics()
            ctx = ServerContext(
                db=db, pool=PoolView.from_config(config), metrics=metrics,
                checkpoint_root=str(checkpoint_root(self.opts, db)), validation=config.validation,
                metrics_token=self.opts.metrics_token or secret_from_env("TRAINPOOL_METRICS_TOKEN"),
            )  # fmt: skip
            ctx.loop = self._start_loop(db, config, metrics)
            self.app = create_app(ctx)
            self.ctx = ctx
            if self.opts.gc is not None:
                self._stops.append(_tune_gc(self.opts.gc, metrics.gc_pause.observe))
        except BaseException:
            self.stop()
            raise
        return self.app

    def serve(self, host: str, port: int) -> None:
        """Serve HTTP in this thread until SIGINT or SIGTERM, then stop everything."""
        import uvicorn

        app = self.app or self.start()
        # uvicorn stops serving on SIGTERM, puts back the handler it found and raises the
        # signal again: with the default one the process would die there, before the loop
        # handed its lease over. This one unwinds through ``finally`` (exit 143).
        signal.signal(signal.SIGTERM, _exit_by_signal)
        try:
            uvicorn.run(app, **_http_options(host, port, self.opts.trusted_proxies))
        finally:
            self.stop()

    def serve_in_thread(self, host: str, port: int, timeout: float = 30.0) -> None:
        """Serve HTTP from a thread; returns once it listens (``stop`` ends it)."""
        import uvicorn

        app = self.app or self.start()
        server = self._http = uvicorn.Server(
            uvicorn.Config(app, **_http_options(host, port, self.opts.trusted_proxies))
        )
        thread = _thread("trainpool-http", server.run)
        self._stops.append(lambda: thread.join(timeout=30))
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"--port: the server could not listen on {host}:{port}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop what was started, HTTP first, then the loop (it hands the lease over)."""
        if self._http is not None:
            self._http.should_exit = True
        while self._stops:
            stop = self._stops.pop()
            try:
                stop()
            except Exception:
                log.exception("stopping the server: a part failed to stop")

    def _start_loop(self, db: Database, config: PoolConfig, metrics: Metrics) -> LoopHandle:
        if self.opts.loop is LoopPlace.PROCESS:
            return self._spawn_loop()
        host = LoopHost.build(self.opts, db, config, metrics)
        self._stops.append(host.close)
        self._stops.append(_start_health(host))
        thread = _thread("control-loop", host.loop.run, host.timing)

        def stop_loop() -> None:
            host.timing.stop()
            thread.join(timeout=30)

        self._stops.append(stop_loop)
        return host

    def _spawn_loop(self) -> LoopProcess:
        # Spawned, not forked: this process already holds database connections and
        # threads, which a forked child would inherit half-used.
        ctx = mp.get_context("spawn")
        doorbell = Doorbell()
        ours, theirs = ctx.Pipe()
        level = logging.getLogger().getEffectiveLevel()
        process = ctx.Process(
            target=loop_process_main,
            args=(self.opts, doorbell, theirs, os.getpid(), level),
            name="trainpool-loop",
        )
        process.start()
        theirs.close()
        child = LoopProcess(process, ours, doorbell)
        self._stops.append(child.stop)
        child.wait_ready(LOOP_START_TIMEOUT)
        return child


def loop_process_main(
    opts: ServerOptions, doorbell: Doorbell, conn: Connection, parent: int, log_level: int
) -> None:
    """The control loop's process: build, say ready, cycle until SIGTERM, hand over."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group; the parent stops us
    die_with_parent(parent, signal.SIGKILL)  # as if one process were killed (see the docstring)
    logging.basicConfig(level=log_level, format=LOG_FORMAT)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        db = open_database(opts.db, migrate=False)  # the parent migrated it
        metrics = Metrics()
        host = LoopHost.build(opts, db, pool_config(opts), metrics, doorbell)
    except ConfigError as exc:
        loop_process.say_failed(conn, "; ".join(exc.lines()))
        raise SystemExit(2) from None
    except Exception as exc:
        loop_process.say_failed(conn, str(exc) or type(exc).__name__)
        raise SystemExit(2) from None
    signal.signal(signal.SIGTERM, lambda *_: host.timing.stop())
    loop_process.say_ready(conn)
    handlers: dict[str, Callable[..., Any]] = {
        "status": host.status,
        "logs": host.logs,
        "metrics": lambda: list(metrics.registry.collect()),
    }
    _thread("loop-answers", loop_process.answer, conn, handlers, host.timing.stop)
    stops = [_start_health(host)]
    if opts.gc is not None:
        stops.append(_tune_gc(opts.gc, metrics.gc_pause.observe))
    try:
        host.loop.run(host.timing)  # returns once stopped, the lease handed over
    finally:
        for stop in reversed(stops):
            stop()
        host.close()
        db.dispose()


def _seed(db: Database, config: PoolConfig, admin_token: str | None) -> str | None:
    """Orgs from the pool file and the first admin token; a second server starting at
    the same moment may insert the same rows first, so a clash is retried once."""
    for attempt in range(2):
        try:
            with db.write() as s:
                orgstore.seed_from_config(s, config.orgs, time.time())
                return tokenstore.bootstrap_admin(
                    s, time.time(), admin_token or secret_from_env("TRAINPOOL_ADMIN_TOKEN")
                )
        except IntegrityError:
            if attempt:
                raise
    return None


def _http_options(host: str, port: int, trusted_proxies: tuple[str, ...]) -> dict[str, Any]:
    # A long keep-alive: clients reuse connections, and a client that sends on a
    # connection the server is just closing sees a spurious error. Forwarded headers
    # only from the configured proxies: uvicorn's default believes any from loopback,
    # so a local process could pose as any address.
    return {
        "host": host, "port": port, "log_level": "warning", "access_log": False, "timeout_keep_alive": 75,
        "proxy_headers": bool(trusted_proxies), "forwarded_allow_ips": list(trusted_proxies) or "",
    }  # fmt: skip


def _exit_by_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def _thread(name: str, target: Callable[..., object], *args: object) -> threading.Thread:
    # Daemon threads: a part that does not stop in time must not keep the process alive.
    thread = threading.Thread(target=target, args=args, name=name, daemon=True)
    thread.start()
    return thread


def _start_health(host: LoopHost) -> Stop:
    if host.health is None:
        return lambda: None
    stop = threading.Event()
    thread = _thread("health", host.health.run, stop)

    def stop_health() -> None:
        stop.set()
        thread.join(timeout=10)

    return stop_health


def _tune_gc(tuning: GcTuning, observe: Observe) -> Stop:
    tune(tuning)
    stop = threading.Event()
    _thread("gc", collect_every, tuning.every, stop, observe)
    return stop.set
