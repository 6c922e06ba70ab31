"""Queries behind ``/metrics``: additive measures from the speed layer, exact distinct counts
from the loaded events (or their 15-minute ``session_slots`` rollup), assembled per bucket.

Every query runs inside :meth:`api.db.Database.tenant`, whose transaction has the tenant's
row-level security context and the request's time zone (so ``date_trunc`` and
``generate_series`` cut buckets at local midnight, DST included). Queries still filter by
tenant themselves: the policy is the second line, not the only one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from api.db import Conn
from api.distinct import distinct_series
from api.models import Granularity

CENT = Decimal("0.01")
PURCHASE, REFUND = "purchase", "refund"

BUCKETS_SQL = """
SELECT b FROM generate_series(
    date_trunc($1, $2::timestamptz), $3::timestamptz - interval '1 microsecond',
    ('1 ' || $1)::interval) AS b
"""
_ADDITIVE = """
SELECT date_trunc($2, {column}) AS b, event_type, sum(events)::bigint AS events,
       sum(amount) AS amount, sum(items)::bigint AS items
FROM {table}
WHERE tenant_id = $1 AND {column} >= $3 AND {column} < $4
GROUP BY 1, 2
"""
# Per bucket, keys whose first active slot in the bucket is this one (``prev_slot`` before the
# bucket, or before the range in a partial first bucket), and keys whose first active slot in
# the whole range is this one: their sums are the bucket's and the range's distinct counts.
_DISTINCT_FROM_SLOTS = """
SELECT b,
       sum(n) FILTER (WHERE kind = 'session' AND prev_slot < greatest(b, $3)) AS sessions,
       sum(n) FILTER (WHERE kind = 'purchasing' AND prev_slot < greatest(b, $3)) AS purchasing,
       sum(n) FILTER (WHERE kind = 'customer' AND prev_slot < greatest(b, $3)) AS customers,
       sum(n) FILTER (WHERE kind = 'session' AND prev_slot < $3) AS range_sessions,
       sum(n) FILTER (WHERE kind = 'purchasing' AND prev_slot < $3) AS range_purchasing,
       sum(n) FILTER (WHERE kind = 'customer' AND prev_slot < $3) AS range_customers
FROM (
    SELECT date_trunc($2, slot) AS b, kind, prev_slot, n
    FROM activity_counts
    WHERE tenant_id = $1 AND slot >= $3 AND slot < $4
) counted
GROUP BY b
"""
_DISTINCT_FROM_EVENTS = """
SELECT {bucket}
       count(DISTINCT session_id) AS sessions,
       count(DISTINCT session_id) FILTER (WHERE event_type = 'purchase') AS purchasing,
       count(DISTINCT customer_customer_id) AS customers
FROM events
WHERE tenant_id = $1 AND event_time >= $3 AND event_time < $4 AND $2::text IS NOT NULL
{group}
"""
FRESHNESS_SQL = """
SELECT (SELECT max(minute) FROM stream_minute_metrics
        WHERE tenant_id = $1 AND minute >= $2 AND minute < $3) AS speed_newest,
       (SELECT max(event_time) FROM events
        WHERE tenant_id = $1 AND event_time >= $2 AND event_time < $3) AS batch_newest,
       (SELECT max(updated_at) FROM stream_heartbeat) AS speed_updated,
       (SELECT updated_at FROM load_watermarks WHERE target = 'events') AS batch_updated,
       (SELECT currency FROM tenants WHERE tenant_id = $1) AS currency
"""


def additive_sql(*, from_slots: bool) -> str:
    """The speed layer's sums per bucket and event type, from 15-minute slots or minutes."""
    if from_slots:
        return _ADDITIVE.format(table="stream_slot_metrics", column="slot")
    return _ADDITIVE.format(table="stream_minute_metrics", column="minute")


def events_distinct_sql(*, per_bucket: bool) -> str:
    """Distinct counts from the loaded events: per bucket (``b`` first) or over the range."""
    if per_bucket:
        return _DISTINCT_FROM_EVENTS.format(
            bucket="date_trunc($2, event_time) AS b,", group="GROUP BY 1"
        )
    return _DISTINCT_FROM_EVENTS.format(bucket="", group="")


SLOTS_DISTINCT_SQL = _DISTINCT_FROM_SLOTS


@dataclass
class _Sums:
    """Per event type: events, amount and items of one bucket or of the range."""

    events: dict[str, int] = field(default_factory=dict)
    amount: dict[str, Decimal] = field(default_factory=dict)
    items: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Distinct:
    """Distinct counts of a bucket or range."""

    sessions: int = 0
    purchasing: int = 0
    customers: int = 0


ZERO = Decimal(0)


def measure_values(sums: _Sums, distinct: Distinct) -> dict[str, Any]:
    """The measures of one bucket (or the range) from its sums and distinct counts."""
    orders = sums.events.get(PURCHASE, 0)
    revenue = sums.amount.get(PURCHASE, ZERO).quantize(CENT)
    return {
        "events": sum(sums.events.values()),
        "events_by_type": dict(sorted(sums.events.items())),
        "orders": orders,
        "revenue": revenue,
        "refunds": sums.amount.get(REFUND, ZERO).quantize(CENT),
        "items_sold": sums.items.get(PURCHASE, 0),
        "average_order_value": (revenue / orders).quantize(CENT) if orders else None,
        "sessions": distinct.sessions,
        "purchasing_sessions": distinct.purchasing,
        "conversion_rate": distinct.purchasing / distinct.sessions if distinct.sessions else None,
        "unique_customers": distinct.customers,
    }


def assemble(
    buckets: Iterable[datetime],
    additive_rows: Iterable[Mapping[str, Any]],
    distinct_rows: Iterable[Mapping[str, Any]],
    total_distinct: Distinct,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Series (one point per bucket, empty buckets included) and totals, as plain values for
    :class:`api.models.MetricsResponse` to validate in one pass (720 points for 30 days hourly:
    building a model per point would cost more than the rest of the request's Python)."""
    per_bucket: dict[datetime, _Sums] = defaultdict(_Sums)
    overall = _Sums()
    for row in additive_rows:
        kind, events, amount, items = (
            row["event_type"], int(row["events"]), row["amount"], int(row["items"])
        )  # fmt: skip
        amount = amount if isinstance(amount, Decimal) else Decimal(str(amount))
        sums = per_bucket[row["b"]]
        sums.events[kind] = sums.events.get(kind, 0) + events
        sums.amount[kind] = sums.amount.get(kind, ZERO) + amount
        sums.items[kind] = sums.items.get(kind, 0) + items
        overall.events[kind] = overall.events.get(kind, 0) + events
        overall.amount[kind] = overall.amount.get(kind, ZERO) + amount
        overall.items[kind] = overall.items.get(kind, 0) + items
    distinct = {
        row["b"]: Distinct(int(row["sessions"]), int(row["purchasing"]), int(row["customers"]))
        for row in distinct_rows
    }
    empty, none = _Sums(), Distinct()
    series = [
        {
            "bucket_start": bucket,
            **measure_values(per_bucket.get(bucket, empty), distinct.get(bucket, none)),
        }
        for bucket in buckets
    ]
    return series, measure_values(overall, total_distinct)


async def distinct_counts(
    conn: Conn, tenant_id: str, unit: str, start: datetime, end: datetime, *, from_slots: bool
) -> tuple[list[dict[str, Any]], Distinct]:
    """Distinct counts per bucket (rows with ``b``) and over the whole range."""
    if from_slots:
        rows = await conn.fetch(SLOTS_DISTINCT_SQL, tenant_id, unit, start, end)
        total = Distinct(
            sum(int(r["range_sessions"] or 0) for r in rows),
            sum(int(r["range_purchasing"] or 0) for r in rows),
            sum(int(r["range_customers"] or 0) for r in rows),
        )
        return [
            {
                "b": r["b"],
                "sessions": r["sessions"] or 0,
                "purchasing": r["purchasing"] or 0,
                "customers": r["customers"] or 0,
            }
            for r in rows
        ], total
    per_bucket = await conn.fetch(events_distinct_sql(per_bucket=True), tenant_id, unit, start, end)
    row = await conn.fetchrow(events_distinct_sql(per_bucket=False), tenant_id, unit, start, end)
    assert row is not None
    return [dict(r) for r in per_bucket], Distinct(
        row["sessions"], row["purchasing"], row["customers"]
    )


async def metrics_for(
    conn: Conn,
    tenant_id: str,
    start: datetime,
    end: datetime,
    granularity: Granularity,
    *,
    from_slots: bool,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Series and totals of ``tenant_id`` over ``start``..``end`` (see :func:`assemble`)."""
    unit = granularity.value
    buckets = [row["b"] for row in await conn.fetch(BUCKETS_SQL, unit, start, end)]
    additive = await conn.fetch(additive_sql(from_slots=from_slots), tenant_id, unit, start, end)
    counts, total = await distinct_series(conn, tenant_id, buckets, start, end)
    per_bucket = [
        {"b": b, "sessions": n[0], "purchasing": n[1], "customers": n[2]}
        for b, n in zip(buckets, counts, strict=True)
    ]
    return assemble(buckets, [dict(r) for r in additive], per_bucket, Distinct(*total))
