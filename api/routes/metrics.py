"""``GET /metrics``, ``/metrics/funnel`` and ``/metrics/top-products``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import AwareDatetime

from api.analytics import FRESHNESS_SQL, iso, metrics_for, render
from api.deps import Ctx, TenantScope
from api.models import (
    FunnelResponse,
    FunnelStep,
    Granularity,
    MetricsResponse,
    Product,
    RankBy,
    TopProductsResponse,
)
from api.ranges import (
    check_buckets,
    check_range,
    check_timezone,
    check_whole_minutes,
)

router = APIRouter(prefix="/metrics", tags=["metrics"])


def _iso_or_none(moment: datetime | None) -> str | None:
    return None if moment is None else iso(moment)


Start = Annotated[AwareDatetime, Query(description="Inclusive range start (ISO-8601 with offset).")]
End = Annotated[AwareDatetime, Query(description="Exclusive range end (ISO-8601 with offset).")]
FUNNEL = ("page_view", "product_view", "add_to_cart", "checkout_started", "purchase")


@router.get("", summary="Metrics series and totals of a tenant", response_model=MetricsResponse)
async def metrics(
    ctx: Ctx,
    tenant_id: TenantScope,
    start: Start,
    end: End,
    granularity: Granularity = Granularity.HOUR,
    timezone: Annotated[
        str, Query(max_length=64, description="IANA time zone of buckets.")
    ] = "UTC",
) -> Response:
    """Events, orders, revenue, refunds, items, AOV, conversion and unique customers per bucket.

    Buckets start at whole minutes/hours/days in ``timezone``; the first and last may be
    partial. ``start`` and ``end`` must be whole minutes.
    """
    settings = ctx.settings
    check_range(start, end, settings.api_max_range_days)
    check_whole_minutes(start, end)
    check_buckets(start, end, granularity, settings.api_max_buckets)
    zone = check_timezone(timezone)
    # Answers are cached by request while their tenant's data is unchanged (api/cache.py).
    key = (start.timestamp(), end.timestamp(), start.isoformat(), end.isoformat(),
           granularity.value, zone)  # fmt: skip
    version = ctx.cache.version(tenant_id)
    cached = ctx.cache.get(tenant_id, key)
    if cached is not None:
        return Response(cached, media_type="application/json")
    async with ctx.db.tenant(tenant_id, timezone=zone) as conn:
        series, totals = await metrics_for(conn, tenant_id, start, end, granularity)
        fresh = await conn.fetchrow(FRESHNESS_SQL, tenant_id, start, end)
    assert fresh is not None
    newest = [t for t in (fresh["speed_newest"], fresh["batch_newest"]) if t is not None]
    # JSON-ready values rendered by orjson in MetricsResponse's shape (a unit test holds the
    # bytes equal to pydantic's): validating 720 points would cost more than the queries.
    body = render(
        {
            "tenant_id": tenant_id,
            "start": iso(start),
            "end": iso(end),
            "granularity": granularity.value,
            "timezone": zone,
            "currency": str(fresh["currency"]),
            "series": series,
            "totals": totals,
            "freshness": {
                "newest_event_time": iso(max(newest)) if newest else None,
                "speed_layer_updated_at": _iso_or_none(fresh["speed_updated"]),
                "batch_loaded_at": _iso_or_none(fresh["batch_updated"]),
            },
        }
    )
    ctx.cache.put(tenant_id, key, version, body)
    return Response(body, media_type="application/json")


@router.get("/funnel", summary="Shopping funnel of a tenant")
async def funnel(ctx: Ctx, tenant_id: TenantScope, start: Start, end: End) -> FunnelResponse:
    """Sessions reaching each step, counting a session at a step only if it also had every
    earlier step (``page_view`` > ``product_view`` > ``add_to_cart`` > ``checkout_started`` >
    ``purchase``) in the range; from the loaded events."""
    check_range(start, end, ctx.settings.api_max_range_days)
    flags = ", ".join(f"bool_or(event_type = '{step}') AS s{i}" for i, step in enumerate(FUNNEL))
    reached = ", ".join(
        "count(*) FILTER (WHERE " + " AND ".join(f"s{j}" for j in range(i + 1)) + f") AS r{i}"
        for i in range(len(FUNNEL))
    )
    query = (
        f"WITH per_session AS (SELECT session_id, {flags} FROM events "
        "WHERE tenant_id = $1 AND event_time >= $2 AND event_time < $3 "
        f"AND session_id IS NOT NULL GROUP BY session_id) SELECT {reached} FROM per_session"
    )
    async with ctx.db.tenant(tenant_id) as conn:
        row = await conn.fetchrow(query, tenant_id, start, end)
    assert row is not None
    counts = [int(row[f"r{i}"]) for i in range(len(FUNNEL))]
    steps = [
        FunnelStep(
            step=step,
            sessions=count,
            rate_from_previous=(count / counts[i - 1] if i and counts[i - 1] else None),
            rate_from_first=(count / counts[0] if counts[0] else None),
        )
        for i, (step, count) in enumerate(zip(FUNNEL, counts, strict=True))
    ]
    return FunnelResponse(tenant_id=tenant_id, start=start, end=end, steps=steps)


@router.get("/top-products", summary="Best-selling products of a tenant")
async def top_products(
    ctx: Ctx,
    tenant_id: TenantScope,
    start: Start,
    end: End,
    by: RankBy = RankBy.REVENUE,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> TopProductsResponse:
    """Purchased products ranked by line revenue (quantity x unit price) or quantity."""
    check_range(start, end, ctx.settings.api_max_range_days)
    order = "revenue" if by is RankBy.REVENUE else "quantity"
    query = f"""
        SELECT i.sku, max(i.category) AS category, sum(i.quantity)::bigint AS quantity,
               sum(i.quantity * i.unit_price) AS revenue, count(DISTINCT i.event_id) AS orders
        FROM event_items i
        JOIN events e ON e.tenant_id = i.tenant_id AND e.event_id = i.event_id
        WHERE i.tenant_id = $1 AND e.tenant_id = $1 AND i.event_type = 'purchase'
          AND e.event_time >= $2 AND e.event_time < $3
          AND i.event_date BETWEEN $4 AND $5
        GROUP BY i.sku ORDER BY {order} DESC, i.sku LIMIT $6
    """
    # Item lines are partitioned by the UTC date of their event: bound them for pruning.
    first_day = start.astimezone(UTC).date()
    last_day = (end - timedelta(microseconds=1)).astimezone(UTC).date()
    async with ctx.db.tenant(tenant_id) as conn:
        rows = await conn.fetch(query, tenant_id, start, end, first_day, last_day, limit)
    return TopProductsResponse(
        tenant_id=tenant_id,
        start=start,
        end=end,
        by=by,
        products=[Product(**dict(row)) for row in rows],
    )
