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
ADDITIVE_SQL = """
SELECT date_trunc($2, minute) AS b, event_type, sum(events)::bigint AS events,
       sum(amount) AS amount, sum(items)::bigint AS items
FROM stream_minute_metrics
WHERE tenant_id = $1 AND minute >= $3 AND minute < $4
GROUP BY 1, 2
"""
_DISTINCT_FROM_SLOTS = """
SELECT {bucket}
       count(DISTINCT session_id) FILTER (WHERE session_id <> '') AS sessions,
       count(DISTINCT session_id) FILTER (WHERE session_id <> '' AND purchased) AS purchasing,
       count(DISTINCT customer_id) FILTER (WHERE customer_id <> '') AS customers
FROM session_slots
WHERE tenant_id = $1 AND slot >= $3 AND slot < $4 AND $2::text IS NOT NULL
{group}
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


def distinct_sql(*, from_slots: bool, per_bucket: bool) -> str:
    """The distinct-count query: per bucket (``b`` first) or over the whole range."""
    template = _DISTINCT_FROM_SLOTS if from_slots else _DISTINCT_FROM_EVENTS
    column = "slot" if from_slots else "event_time"
    if per_bucket:
        return template.format(bucket=f"date_trunc($2, {column}) AS b,", group="GROUP BY 1")
    return template.format(bucket="", group="")


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


def measures(additive: _Additive, distinct: Distinct) -> MetricValues:
    """The measures of one bucket (or the range) from its sums and distinct counts."""
    orders = additive.events_by_type.get(PURCHASE, 0)
    revenue = additive.amount_by_type.get(PURCHASE, Decimal(0)).quantize(CENT)
    return MetricValues(
        events=sum(additive.events_by_type.values()),
        events_by_type=dict(sorted(additive.events_by_type.items())),
        orders=orders,
        revenue=revenue,
        refunds=additive.amount_by_type.get(REFUND, Decimal(0)).quantize(CENT),
        items_sold=additive.items_by_type.get(PURCHASE, 0),
        average_order_value=(revenue / orders).quantize(CENT) if orders else None,
        sessions=distinct.sessions,
        purchasing_sessions=distinct.purchasing,
        conversion_rate=distinct.purchasing / distinct.sessions if distinct.sessions else None,
        unique_customers=distinct.customers,
    )


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
    series = [
        SeriesPoint(
            bucket_start=bucket,
            **measures(
                per_bucket.get(bucket, _Additive()), distinct.get(bucket, Distinct())
            ).model_dump(),
        )
        for bucket in buckets
    ]
    return series, measures(overall, total_distinct)


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
    additive = await conn.fetch(ADDITIVE_SQL, tenant_id, unit, start, end)
    per_bucket = await conn.fetch(
        distinct_sql(from_slots=from_slots, per_bucket=True), tenant_id, unit, start, end
    )
    total = await conn.fetchrow(
        distinct_sql(from_slots=from_slots, per_bucket=False), tenant_id, unit, start, end
    )
    assert total is not None
    total_distinct = Distinct(total["sessions"], total["purchasing"], total["customers"])
    return assemble(
        buckets, [dict(r) for r in additive], [dict(r) for r in per_bucket], total_distinct
    )
