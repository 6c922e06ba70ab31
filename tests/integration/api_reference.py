"""Reference answers of the API, computed in Python from the events a test published."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

CENT = Decimal("0.01")


def event_time(event: dict[str, Any]) -> datetime:
    """The event's time in UTC."""
    return datetime.fromisoformat(event["event_time"]).astimezone(UTC)


def bucket_of(moment: datetime, granularity: str, zone: str) -> datetime:
    """Start (UTC) of the ``granularity`` bucket in ``zone`` that contains ``moment``."""
    local = moment.astimezone(ZoneInfo(zone))
    if granularity == "minute":
        local = local.replace(second=0, microsecond=0)
    elif granularity == "hour":
        local = local.replace(minute=0, second=0, microsecond=0)
    else:
        local = local.replace(hour=0, minute=0, second=0, microsecond=0)
    return local.astimezone(UTC)


def measures(events: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """What ``/metrics`` must report for exactly these events."""
    by_type: dict[str, int] = defaultdict(int)
    revenue, refunds = Decimal(0), Decimal(0)
    items_sold = 0
    sessions: set[str] = set()
    purchasing: set[str] = set()
    customers: set[str] = set()
    for event in events:
        kind = event["event_type"]
        by_type[kind] += 1
        amount = Decimal(str(event["order"]["total_amount"])) if event.get("order") else Decimal(0)
        if kind == "purchase":
            revenue += amount
            items_sold += sum(item["quantity"] for item in event["items"])
        elif kind == "refund":
            refunds += amount
        if event.get("session_id"):
            sessions.add(event["session_id"])
            if kind == "purchase":
                purchasing.add(event["session_id"])
        customer = (event.get("customer") or {}).get("customer_id")
        if customer:
            customers.add(customer)
    orders = by_type.get("purchase", 0)
    return {
        "events": sum(by_type.values()),
        "events_by_type": dict(sorted(by_type.items())),
        "orders": orders,
        "revenue": revenue.quantize(CENT),
        "refunds": refunds.quantize(CENT),
        "items_sold": items_sold,
        "average_order_value": (revenue / orders).quantize(CENT) if orders else None,
        "sessions": len(sessions),
        "purchasing_sessions": len(purchasing),
        "conversion_rate": len(purchasing) / len(sessions) if sessions else None,
        "unique_customers": len(customers),
    }


def expected_metrics(
    events: list[dict[str, Any]], start: datetime, end: datetime, granularity: str, zone: str
) -> tuple[dict[datetime, dict[str, Any]], dict[str, Any]]:
    """(non-empty buckets -> measures, totals) of the events in ``start``..``end``."""
    inside = [e for e in events if start <= event_time(e) < end]
    grouped: dict[datetime, list[dict[str, Any]]] = defaultdict(list)
    for event in inside:
        grouped[bucket_of(event_time(event), granularity, zone)].append(event)
    return {b: measures(group) for b, group in grouped.items()}, measures(inside)


def as_reference(api_values: dict[str, Any]) -> dict[str, Any]:
    """An API measures object in the reference's types (money as Decimal)."""
    out = {key: api_values[key] for key in measures([])}
    for key in ("revenue", "refunds", "average_order_value"):
        if out[key] is not None:
            out[key] = Decimal(out[key])
    return out


# The measures of a bucket without events, as the API serves them.
ZERO_MEASURES: dict[str, Any] = {
    "events": 0,
    "events_by_type": {},
    "orders": 0,
    "revenue": "0.00",
    "refunds": "0.00",
    "items_sold": 0,
    "average_order_value": None,
    "sessions": 0,
    "purchasing_sessions": 0,
    "conversion_rate": None,
    "unique_customers": 0,
}
