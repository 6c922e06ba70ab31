"""One error shape for every 4xx and 5xx: RFC 9457 problem details (``application/problem+json``).

No handler ever puts an exception's text or a stack trace into a response: unexpected errors
are logged with the request id, and the client gets that id to quote.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.db import CONNECTION_ERRORS, DatabaseUnavailableError

log = logging.getLogger("lakehouse.api")
PROBLEM_JSON = "application/problem+json"


class Problem(Exception):  # noqa: N818 - it is the RFC's name for the thing
    """An error the API answers with a problem document."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.title = title or HTTPStatus(status).phrase
        self.headers = headers or {}
        self.extra = extra or {}


def problem_response(
    request: Request,
    status: int,
    detail: str,
    *,
    title: str | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    """A problem document for ``request``."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        "request_id": getattr(request.state, "request_id", None),
        **(extra or {}),
    }
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


async def _problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    return problem_response(
        request, exc.status, exc.detail, title=exc.title, headers=exc.headers, extra=exc.extra
    )


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    headers = dict(exc.headers) if exc.headers else None
    return problem_response(request, exc.status_code, detail, headers=headers)


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(error.get("loc", ())), "msg": str(error.get("msg", "")), "type": error["type"]}
        for error in exc.errors()
    ]
    summary = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors[:5])
    return problem_response(request, 422, f"invalid request: {summary}", extra={"errors": errors})


async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning(
        "database unavailable",
        extra={"request_id": getattr(request.state, "request_id", None), "error": repr(exc)},
    )
    return problem_response(
        request,
        503,
        "the database is not reachable right now; retry shortly",
        headers={"Retry-After": "2"},
    )


async def _bad_value(request: Request, exc: Exception) -> JSONResponse:
    # PostgreSQL refused a value the models let through (class 22: data exception).
    log.warning(
        "value refused by the database",
        extra={"request_id": getattr(request.state, "request_id", None), "error": repr(exc)},
    )
    return problem_response(request, 422, "a value of the request is not acceptable")


async def _too_slow(request: Request, exc: Exception) -> JSONResponse:
    log.warning(
        "query cancelled by statement_timeout",
        extra={"request_id": getattr(request.state, "request_id", None)},
    )
    return problem_response(
        request,
        503,
        "the query took too long; narrow the range or retry later",
        headers={"Retry-After": "5"},
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error(
        "unhandled error",
        exc_info=exc,
        # The route template, not the path: paths can hold customer ids.
        extra={
            "request_id": getattr(request.state, "request_id", None),
            "route": getattr(request.scope.get("route"), "path", "unmatched"),
        },
    )
    return problem_response(request, 500, "internal error; quote the request_id when reporting it")


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into a problem document."""
    app.add_exception_handler(Problem, _problem)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(DatabaseUnavailableError, _unavailable)
    for error in CONNECTION_ERRORS:
        app.add_exception_handler(error, _unavailable)
    app.add_exception_handler(asyncpg.DataError, _bad_value)
    app.add_exception_handler(asyncpg.QueryCanceledError, _too_slow)
    app.add_exception_handler(Exception, _unexpected)
