"""``GET /events``: one tenant's events, newest first, with keyset pagination."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import AwareDatetime

from api.cursor import decode_cursor, encode_cursor
from api.deps import Caller, Ctx, TenantScope
from api.errors import Problem
from api.models import EventItem, EventsPage
from include.events.models import EventType
from include.privacy import CUSTOMER_ID_PATTERN, mask_email, mask_ip

router = APIRouter(tags=["events"])
DEFAULT_PAGE = 100

_COLUMNS = """
    event_id, event_type, event_time, schema_version, session_id,
    customer_customer_id AS customer_id, customer_email, customer_country, customer_segment,
    device_type, device_ip, order_order_id AS order_id, order_total_amount, order_currency,
    order_payment_method, item_count, marketing_campaign,
    (ml_context_model_scores ->> 'fraud')::double precision AS fraud_score
"""


@router.get("/events", summary="A tenant's events, newest first")
async def events(
    ctx: Ctx,
    caller: Caller,
    tenant_id: TenantScope,
    start: Annotated[AwareDatetime | None, Query(description="Inclusive lower bound.")] = None,
    end: Annotated[AwareDatetime | None, Query(description="Exclusive upper bound.")] = None,
    event_type: EventType | None = None,
    customer_id: Annotated[str | None, Query(pattern=CUSTOMER_ID_PATTERN.pattern)] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, description="Page size (capped by configuration).")] = (
        DEFAULT_PAGE
    ),
) -> EventsPage:
    """Flat events of the loaded ``events`` table. ``customer_email`` and ``device_ip`` are
    masked for tenant tokens. Pass ``next_cursor`` back as ``cursor`` (with the same filters)
    for the next page; it is null on the last page."""
    if limit > ctx.settings.api_max_page_size:
        raise Problem(422, f"limit may be at most {ctx.settings.api_max_page_size}")
    if start is not None and end is not None and end <= start:
        raise Problem(422, "end must be after start")
    clauses = ["tenant_id = $1"]
    params: list[Any] = [tenant_id]

    def where(template: str, *values: Any) -> None:
        placeholders = [f"${len(params) + i + 1}" for i in range(len(values))]
        clauses.append(template.format(*placeholders))
        params.extend(values)

    if start is not None:
        where("event_time >= {}", start)
    if end is not None:
        where("event_time < {}", end)
    if event_type is not None:
        where("event_type = {}", event_type.value)
    if customer_id is not None:
        where("customer_customer_id = {}", customer_id)
    if cursor is not None:
        where("(event_time, event_id) < ({}, {})", *decode_cursor(cursor))
    params.append(limit + 1)
    query = (
        f"SELECT {_COLUMNS} FROM events WHERE {' AND '.join(clauses)} "
        f"ORDER BY event_time DESC, event_id DESC LIMIT ${len(params)}"
    )
    async with ctx.db.tenant(tenant_id) as conn:
        rows = await conn.fetch(query, *params)
    page = [dict(row) for row in rows[:limit]]
    if not caller.is_admin:
        for item in page:
            item["customer_email"] = mask_email(item["customer_email"])
            item["device_ip"] = mask_ip(item["device_ip"])
    next_cursor = (
        encode_cursor(page[-1]["event_time"], page[-1]["event_id"]) if len(rows) > limit else None
    )
    return EventsPage(items=[EventItem(**item) for item in page], next_cursor=next_cursor)
