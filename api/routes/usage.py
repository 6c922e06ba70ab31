"""``GET /usage``: cost-allocation figures per tenant."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from api.deps import TENANT_PATTERN, Caller, Ctx, resolve_tenant
from api.models import TenantUsage, UsageResponse

router = APIRouter(tags=["usage"])

USAGE_SQL = """
SELECT (SELECT coalesce(sum(events), 0)::bigint FROM stream_minute_metrics
        WHERE tenant_id = $1) AS events_ingested,
       (SELECT coalesce(sum(requests), 0)::bigint FROM api_usage
        WHERE tenant_id = $1) AS api_requests
"""
QUARANTINE_SQL = """
SELECT reason, sum(messages)::bigint AS messages FROM stream_quarantine_counts
WHERE tenant_id = $1 GROUP BY reason ORDER BY reason
"""


@router.get("/usage", summary="Events ingested, quarantined, bytes stored and API requests")
async def usage(
    request: Request,
    ctx: Ctx,
    caller: Caller,
    tenant_id: Annotated[
        str | None,
        Query(pattern=TENANT_PATTERN, description="One tenant; admins get every tenant if unset."),
    ] = None,
) -> UsageResponse:
    """All-time figures: distinct events counted by the stream, quarantined messages by
    reason, bytes of the tenant's live lake and archive files, and API requests made for it
    (counts reach the database within a few seconds)."""
    if caller.is_admin and tenant_id is None:
        async with ctx.db.platform() as conn:
            tenants = [r["tenant_id"] for r in await conn.fetch("SELECT tenant_id FROM tenants")]
    else:
        tenants = [await resolve_tenant(request, ctx, caller, tenant_id)]
    result = []
    for tenant in sorted(tenants):
        async with ctx.db.tenant(tenant) as conn:
            figures = await conn.fetchrow(USAGE_SQL, tenant)
            reasons = await conn.fetch(QUARANTINE_SQL, tenant)
        assert figures is not None
        stores = await ctx.lake_usage.of(tenant)
        by_reason = {row["reason"]: int(row["messages"]) for row in reasons}
        result.append(
            TenantUsage(
                tenant_id=tenant,
                events_ingested=figures["events_ingested"],
                quarantined=sum(by_reason.values()),
                quarantined_by_reason=by_reason,
                stored_bytes=sum(stores.values()),
                stored_bytes_by_store=stores,
                api_requests=figures["api_requests"],
            )
        )
    return UsageResponse(tenants=result)
