"""Liveness, readiness and the Prometheus metrics of the API itself."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.db import CONNECTION_ERRORS, DatabaseUnavailableError
from api.deps import Ctx
from api.errors import Problem
from api.models import Health
from api.observability import LOAD_WATERMARKS_SQL, LoadWatermark

router = APIRouter(tags=["operations"])
_UNREACHABLE: tuple[type[Exception], ...] = (DatabaseUnavailableError, *CONNECTION_ERRORS)


@router.get("/health", summary="Liveness: the process answers")
async def health() -> Health:
    """Always ``ok`` while the process serves requests."""
    return Health(status="ok")


@router.get(
    "/ready",
    summary="Readiness: database reachable and stream heartbeat fresh",
    responses={503: {"description": "Not ready (problem document with the failed checks)"}},
)
async def ready(ctx: Ctx) -> Health:
    """``ready`` when PostgreSQL answers and the streaming job committed a batch recently."""
    checks: dict[str, str] = {}
    try:
        async with ctx.db.platform() as conn:
            beat = await conn.fetchval("SELECT max(updated_at) FROM stream_heartbeat")
        checks["database"] = "ok"
        limit = ctx.settings.api_heartbeat_max_age_seconds
        if beat is None:
            checks["stream"] = "no heartbeat yet"
        else:
            age = (datetime.now(UTC) - beat).total_seconds()
            checks["stream"] = "ok" if age <= limit else f"heartbeat {age:.0f} s old (> {limit:g})"
    except _UNREACHABLE:
        checks["database"] = "unreachable"
        checks["stream"] = "unknown"
    if any(value != "ok" for value in checks.values()):
        raise Problem(503, "not ready", headers={"Retry-After": "5"}, extra={"checks": checks})
    return Health(status="ready", checks=checks)


@router.get("/internal/metrics", summary="Prometheus metrics of the API", include_in_schema=False)
async def internal_metrics(ctx: Ctx) -> Response:
    """Request counts and latency histograms per route, and the loads' progress, in Prometheus
    text format."""
    try:
        async with ctx.db.platform() as conn:
            rows = await conn.fetch(LOAD_WATERMARKS_SQL)
        ctx.metrics.loads.update(LoadWatermark(*row) for row in rows)
    except _UNREACHABLE:
        pass  # the request series still answer; the load series keep their last values
    return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)
