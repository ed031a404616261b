"""API errors: one JSON shape, a message naming the field, never a stack trace.

Shape: ``{"detail": "<one line>", "errors": [{"field": ..., "message": ...}]}``; the CLI
prints ``detail``.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from values.errors import ConfigError, format_path, validation_problems

log = logging.getLogger(__name__)


class Problem(BaseModel):
    field: str
    message: str


class ErrorBody(BaseModel):
    """Every error response: one line for people, one entry per field for programs."""

    detail: str
    errors: list[Problem]


# Documented on every operation, so clients (and schema-driven tests) see the real shape
# instead of FastAPI's default validation-error model.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in (
        (400, "Bad request"),
        (401, "Missing or unknown token"),
        (403, "Not allowed for this token"),
        (404, "Not found"),
        (409, "Conflict with the current state"),
        (413, "Request too large"),
        (422, "A field is invalid; the message names it"),
        (429, "Too many requests"),
        (503, "Not ready (database unavailable)"),
    )
}


class ApiError(Exception):
    def __init__(self, status: int, message: str, field: str | None = None, *, denied: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        # An attempt to act outside the caller's org or role: audited (403s always are;
        # a 404 that hides another org's job sets this).
        self.denied = denied or status == 403


def not_found(what: str, name: str) -> ApiError:
    return ApiError(404, f"{what} '{name}' not found")


def forbidden(message: str) -> ApiError:
    return ApiError(403, message)


def _body(problems: list[tuple[str, str]]) -> dict[str, Any]:
    lines = [f"{f}: {m}" if f else m for f, m in problems]
    return {"detail": "; ".join(lines), "errors": [{"field": f, "message": m} for f, m in problems]}


def _request_problems(exc: RequestValidationError) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for err in exc.errors():
        loc = list(err.get("loc", ()))
        where = loc[0] if loc else "body"
        rest = loc[1:]
        if err.get("type") == "json_invalid":
            problems.append(("body", f"is not valid JSON ({err.get('msg', '')})"))
            continue
        try:
            # The pool's wording ("must be at least 1 (got 0)") and field paths, as for files.
            one = ValidationError.from_exception_data("request", [{**err, "loc": tuple(rest)}])  # type: ignore[typeddict-item]
            path, message = validation_problems(one)[0]
        except Exception:
            path, message = format_path(rest), str(err.get("msg", "is invalid"))
        if where in ("query", "path", "header"):
            path = path or str(where)
        problems.append((path or "body", message))
    return problems or [("body", "is invalid")]


_FASTAPI_PARSE_ERROR = "There was an error parsing the body"


def _audit_denial(request: Request, token_id: str, message: str) -> None:
    from scheduler.store.orgs import audit  # the store imports nothing from the API

    ctx = request.app.state.ctx
    try:
        with ctx.db.write() as s:
            audit(
                s,
                ctx.clock(),
                token_id,
                "access.denied",
                f"{request.method} {request.url.path}",
                reason=message,
            )
    except Exception:  # the refusal stands even if it cannot be recorded
        log.warning("could not audit a refused request by %s on %s", token_id, request.url.path)


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        who = getattr(request.state, "principal", None)
        if exc.denied and who is not None:
            await run_in_threadpool(_audit_denial, request, who.token_id, exc.message)
        return JSONResponse(_body([(exc.field or "", exc.message)]), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(_body(_request_problems(exc)), status_code=422)

    @app.exception_handler(ValidationError)
    async def _invalid_model(_: Request, exc: ValidationError) -> JSONResponse:
        return JSONResponse(_body(validation_problems(exc)), status_code=422)

    @app.exception_handler(ConfigError)
    async def _config(_: Request, exc: ConfigError) -> JSONResponse:
        return JSONResponse(_body(exc.problems), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        problem = ("", str(exc.detail))
        if exc.status_code == 400 and exc.detail == _FASTAPI_PARSE_ERROR:
            # FastAPI's wording names neither the field nor the cause.
            deep = isinstance(exc.__cause__, RecursionError)
            problem = (
                "body",
                "is not valid JSON: " + ("nested too deeply" if deep else "it could not be parsed"),
            )
        return JSONResponse(_body([problem]), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    async def _database_down(_: Request, exc: Exception) -> JSONResponse:
        # Lost connection, server restarting, pool exhausted: the client may retry (with
        # the same client_request_id a retried submission is not duplicated).
        log.warning("database unavailable: %s", str(exc).splitlines()[0][:200])
        body = _body([("", "database unavailable; retry shortly")])
        return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(_body([("", "internal error; see the server log")]), status_code=500)
