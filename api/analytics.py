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
from api.models import Granularity, MetricValues, SeriesPoint

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
       (SELECT updated_at FROM load_watermarks WHERE target = 'events') AS batch_updated
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
class _Additive:
    events_by_type: dict[str, int] = field(default_factory=dict)
    amount_by_type: dict[str, Decimal] = field(default_factory=dict)
    items_by_type: dict[str, int] = field(default_factory=dict)

    def add(self, event_type: str, events: int, amount: Decimal, items: int) -> None:
        self.events_by_type[event_type] = self.events_by_type.get(event_type, 0) + events
        self.amount_by_type[event_type] = self.amount_by_type.get(event_type, Decimal(0)) + amount
        self.items_by_type[event_type] = self.items_by_type.get(event_type, 0) + items


@dataclass(frozen=True)
class Distinct:
    """Distinct counts of a bucket or range."""

    sessions: int = 0
    purchasing: int = 0
    customers: int = 0


def measure_values(additive: _Additive, distinct: Distinct) -> dict[str, Any]:
    """The measures of one bucket (or the range) from its sums and distinct counts."""
    orders = additive.events_by_type.get(PURCHASE, 0)
    revenue = additive.amount_by_type.get(PURCHASE, Decimal(0)).quantize(CENT)
    return {
        "events": sum(additive.events_by_type.values()),
        "events_by_type": dict(sorted(additive.events_by_type.items())),
        "orders": orders,
        "revenue": revenue,
        "refunds": additive.amount_by_type.get(REFUND, Decimal(0)).quantize(CENT),
        "items_sold": additive.items_by_type.get(PURCHASE, 0),
        "average_order_value": (revenue / orders).quantize(CENT) if orders else None,
        "sessions": distinct.sessions,
        "purchasing_sessions": distinct.purchasing,
        "conversion_rate": distinct.purchasing / distinct.sessions if distinct.sessions else None,
        "unique_customers": distinct.customers,
    }


def measures(additive: _Additive, distinct: Distinct) -> MetricValues:
    """:func:`measure_values` as a validated model."""
    return MetricValues(**measure_values(additive, distinct))


def assemble(
    buckets: Iterable[datetime],
    additive_rows: Iterable[Mapping[str, Any]],
    distinct_rows: Iterable[Mapping[str, Any]],
    total_distinct: Distinct,
) -> tuple[list[SeriesPoint], MetricValues]:
    """Series (one point per bucket, empty buckets included) and totals."""
    per_bucket: dict[datetime, _Additive] = defaultdict(_Additive)
    overall = _Additive()
    for row in additive_rows:
        values = (
            str(row["event_type"]),
            int(row["events"]),
            Decimal(str(row["amount"])),
            int(row["items"]),
        )
        per_bucket[row["b"]].add(*values)
        overall.add(*values)
    distinct = {
        row["b"]: Distinct(
            int(row["sessions"]),
            int(row["purchasing"]),
            int(row["customers"]),
        )
        for row in distinct_rows
    }
    empty = _Additive()
    # 720 points for 30 days hourly: built from values typed above without re-validating them
    # (the response is validated by its JSON schema in the tests).
    series = [
        SeriesPoint.model_construct(
            bucket_start=bucket,
            **measure_values(per_bucket.get(bucket, empty), distinct.get(bucket, Distinct())),
        )
        for bucket in buckets
    ]
    return series, measures(overall, total_distinct)


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
) -> tuple[list[SeriesPoint], MetricValues]:
    """Series and totals of ``tenant_id`` over ``start``..``end``."""
    unit = granularity.value
    buckets = [row["b"] for row in await conn.fetch(BUCKETS_SQL, unit, start, end)]
    additive = await conn.fetch(additive_sql(from_slots=from_slots), tenant_id, unit, start, end)
    per_bucket, total = await distinct_counts(
        conn, tenant_id, unit, start, end, from_slots=from_slots
    )
    return assemble(buckets, [dict(r) for r in additive], per_bucket, total)
