"""The FastAPI app: routers, error handlers, health, metrics. The control loop runs
elsewhere (``scheduler.control.root``); the app asks it through ``ctx.loop``."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text
from starlette.exceptions import HTTPException as StarletteHTTPException

from scheduler.api import errors, routes_agents, routes_jobs, routes_pool, routes_quota, routes_snapshot
from scheduler.api.auth import authorize_scrape
from scheduler.api.context import ServerContext
from scheduler.control.handle import LoopStatus, LoopUnavailable
from scheduler.control.metrics_relay import render
from scheduler.store.db import current_revision, head_revision

log = logging.getLogger(__name__)


def create_app(ctx: ServerContext) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        ctx.submits.close()

    app = FastAPI(
        title="trainpool",
        version="0.1.0",
        description="Scheduler of a shared accelerator pool.",
        lifespan=lifespan,
        responses=errors.ERROR_RESPONSES,
    )
    app.state.ctx = ctx
    errors.install(app)
    app.include_router(routes_jobs.router)
    app.include_router(routes_pool.router)
    app.include_router(routes_quota.router)
    app.include_router(routes_snapshot.router)
    app.include_router(routes_agents.router)
    _install_latency(app, ctx)

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"])
    def readyz() -> JSONResponse:
        problems = []
        try:
            with ctx.db.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            if current_revision(ctx.db) != head_revision():
                problems.append("database schema is not at the current migration")
        except Exception as exc:  # any failure means not ready; say which
            problems.append(f"database unreachable: {type(exc).__name__}")
        loop = LoopStatus(leader=False, last_cycle_at=None)
        if ctx.loop is not None:
            try:
                loop = ctx.loop.status()
            except LoopUnavailable as exc:
                problems.append(f"control loop: {exc}")
        body: dict[str, Any] = {"status": "ok" if not problems else "unavailable", "leader": loop.leader}
        if loop.leader and loop.last_cycle_at is not None:
            # For alerting: a leader whose cycles keep failing shows a growing age.
            body["last_cycle_age_seconds"] = round(ctx.clock() - loop.last_cycle_at, 3)
        if problems:
            body["problems"] = problems
        return JSONResponse(body, status_code=200 if not problems else 503)

    @app.get(
        "/metrics",
        tags=["ops"],
        dependencies=[Depends(authorize_scrape)],
        response_class=Response,
        responses={
            200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}, "description": "Prometheus text"}
        },
    )
    def metrics() -> Response:
        families = []
        if ctx.loop is not None:
            try:
                families = ctx.loop.metric_families()
            except LoopUnavailable as exc:  # the API's own metrics are still worth a scrape
                log.warning("/metrics without the control loop's: %s", exc)
        return Response(render(ctx.metrics.registry, families), media_type=CONTENT_TYPE_LATEST)

    return app


def _install_latency(app: FastAPI, ctx: ServerContext) -> None:
    app.add_middleware(_Latency, ctx=ctx)


class _Latency:
    """Pure ASGI (no per-request task as BaseHTTPMiddleware makes): API latency by route."""

    def __init__(self, app: Any, ctx: ServerContext) -> None:
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]
        if _declared_length(scope) > MAX_BODY:
            await _too_large(send)
            self.ctx.metrics.api_latency.labels(scope["method"], "unmatched", "4xx").observe(0.0)
            return

        async def _send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        received = [0]

        async def _receive() -> dict[str, Any]:
            # A chunked body declares no length: count it as it arrives, and stop reading
            # at the limit so that it never sits whole in memory.
            message: dict[str, Any] = await receive()
            if message["type"] == "http.request":
                received[0] += len(message.get("body", b""))
                if received[0] > MAX_BODY:
                    raise _BodyTooLarge()
            return message

        try:
            await self.app(scope, _receive, _send)
        except _BodyTooLarge:
            if status[0] == 500:  # nothing sent yet
                status[0] = 413
                await _too_large(send)
        finally:
            # The route template ("/v1/jobs/{job_id}"), never the raw path: no job ids in labels.
            route = getattr(scope.get("route"), "path", "unmatched")
            self.ctx.metrics.api_latency.labels(scope["method"], route, f"{status[0] // 100}xx").observe(
                time.perf_counter() - started
            )


class _BodyTooLarge(StarletteHTTPException):
    """An HTTP error, so that FastAPI's body parsing passes it on as it is (413)."""

    def __init__(self) -> None:
        super().__init__(413, f"body: larger than {MAX_BODY} bytes")


# A job spec is a few kilobytes; anything near this is a mistake or an attack.
MAX_BODY = 1024 * 1024


def _declared_length(scope: dict[str, Any]) -> int:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


async def _too_large(send: Any) -> None:
    body = json.dumps(
        {
            "detail": f"body: larger than {MAX_BODY} bytes",
            "errors": [{"field": "body", "message": "too large"}],
        }
    ).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
