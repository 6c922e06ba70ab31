"""The analytics API: ``create_app(settings)`` builds it; ``python -m api`` serves it.

Start-up never blocks on PostgreSQL: the pool connects in the background with backoff, and
``/ready`` answers 503 until it has (and whenever the database is unreachable later).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import docs, errors, openapi
from api.cache import listen_forever
from api.context import AppContext
from api.models import PROBLEM_RESPONSES
from api.observability import RequestObserver
from api.routes import anomalies, erasure, events, health, metrics, tenants, usage
from api.seed import seed_tokens
from include.log import configure_logging
from include.settings import Settings, get_settings

log = logging.getLogger("lakehouse.api")
USAGE_FLUSH_S = 5.0
ERASURE_RETRY_S = 20.0

DESCRIPTION = """
Tenant-scoped analytics of the lakehouse. Every call needs `Authorization: Bearer <token>`:
an **admin** token may name any tenant (`tenant_id`), a **tenant** token reads only its own.
Errors are RFC 9457 problem documents (`application/problem+json`).
"""


async def _every(seconds: float, what: str, action: Callable[[], Awaitable[object]]) -> None:
    while True:
        await asyncio.sleep(seconds)
        try:
            await action()
        except Exception as exc:
            log.warning("background task failed", extra={"task": what, "error": repr(exc)})


async def _start(ctx: AppContext) -> None:
    await ctx.db.connect_forever()
    while True:
        try:
            await seed_tokens(ctx.db, ctx.settings)
            return
        except Exception as exc:
            log.warning("token seeding failed, retrying", extra={"error": repr(exc)})
            await asyncio.sleep(2)


async def _retry_erasures(ctx: AppContext) -> None:
    # Claimed by moving updated_at, so of several worker processes only one retries a request
    # (the outer condition is checked again on the locked row).
    async with ctx.db.platform() as conn:
        pending = await conn.fetch(
            "UPDATE erasure_requests SET updated_at = now() WHERE request_id IN ("
            "  SELECT request_id FROM erasure_requests WHERE status = 'lake_pending' "
            "  AND dag_run_id IS NULL AND updated_at < now() - interval '60 seconds' "
            "  FOR UPDATE SKIP LOCKED) "
            "AND status = 'lake_pending' AND dag_run_id IS NULL "
            "AND updated_at < now() - interval '60 seconds' RETURNING request_id"
        )
    for row in pending:
        await erasure.trigger_lake_erasure(ctx, row["request_id"])


def app_from_environment() -> FastAPI:
    """The API for the environment's settings (the factory each uvicorn worker calls)."""
    settings = get_settings()
    configure_logging(settings.log_level)
    return create_app(settings)


def create_app(settings: Settings) -> FastAPI:
    """The API for ``settings``."""
    ctx = AppContext.create(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tasks = [
            asyncio.create_task(_start(ctx)),
            asyncio.create_task(_every(USAGE_FLUSH_S, "usage", lambda: ctx.requests.flush(ctx.db))),
            asyncio.create_task(_every(ERASURE_RETRY_S, "erasure", lambda: _retry_erasures(ctx))),
        ]
        if settings.api_cache_mb:
            tasks.append(asyncio.create_task(listen_forever(settings.api_pg_dsn, ctx.cache)))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            with contextlib.suppress(Exception):
                await ctx.requests.flush(ctx.db)
            await ctx.db.close()

    app = FastAPI(
        title="Lakehouse analytics API",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        # FastAPI's own pages load their assets from a CDN: api.docs serves offline ones.
        docs_url=None,
        redoc_url=None,
        responses=PROBLEM_RESPONSES,
    )
    app.state.ctx = ctx
    errors.install(app)
    openapi.install(app)
    docs.install(app)
    for module in (metrics, events, anomalies, usage, tenants, erasure, health):
        app.include_router(module.router)
    app.add_middleware(
        RequestObserver, metrics=ctx.metrics, max_body_bytes=settings.api_max_request_bytes
    )
    return app
