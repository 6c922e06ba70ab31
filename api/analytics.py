"""Queries behind ``/metrics``: additive measures from the speed layer's precomputed sums, exact
distinct counts from the roaring-bitmap pieces (``api.distinct``), assembled per bucket into
JSON-ready values.

Every query runs inside :meth:`api.db.Database.tenant`, whose transaction has the tenant's
row-level security context and the request's time zone (so ``date_trunc`` and
``generate_series`` cut buckets at local midnight, DST included). Queries still filter by
tenant themselves: the policy is the second line, not the only one.

The additive sums come from the coarsest table whose grid holds every bucket boundary inside
the range: ``stream_hour_metrics`` (UTC hours) for hour and day buckets of whole-hour zones,
``stream_slot_metrics`` (15 minutes) for half- and quarter-hour zones, ``stream_minute_metrics``
for minute buckets; the range's ragged ends (a start or end off that grid) come from minutes.
PostgreSQL returns one row per bucket (per-type arrays), so Python touches each bucket once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson

from api.db import Conn
from api.distinct import Counts, bucket_bounds, distinct_series
from api.models import Granularity
from include.warehouse import distinct as pieces

CENT = Decimal("0.01")
PURCHASE, REFUND = "purchase", "refund"
ZERO = Decimal(0)

BUCKETS_SQL = """
SELECT b FROM generate_series(
    date_trunc($1, $2::timestamptz), $3::timestamptz - interval '1 microsecond',
    ('1 ' || $1)::interval) AS b
"""
# Grids of the speed layer's tables: (table, time column, minutes).
GRIDS = (
    ("stream_hour_metrics", "hour", 60),
    ("stream_slot_metrics", "slot", 15),
    ("stream_minute_metrics", "minute", 1),
)
# Per bucket: the event types and their counts, amounts and items. The inner window
# ($5..$6) from the grid's table, the ragged ends ($3..$5, $6..$4) from minutes.
_ADDITIVE = """
SELECT b, array_agg(event_type ORDER BY event_type) AS types,
       array_agg(events ORDER BY event_type) AS events,
       sum(events)::bigint AS total,
       coalesce(sum(events) FILTER (WHERE event_type = 'purchase'), 0)::bigint AS orders,
       coalesce(sum(amount) FILTER (WHERE event_type = 'purchase'), 0)::numeric(20, 2)
           AS revenue,
       coalesce(sum(amount) FILTER (WHERE event_type = 'refund'), 0)::numeric(20, 2) AS refunds,
       coalesce(sum(items) FILTER (WHERE event_type = 'purchase'), 0)::bigint AS items_sold
FROM (
    SELECT date_trunc($2, t) AS b, event_type, sum(events)::bigint AS events,
           sum(amount) AS amount, sum(items)::bigint AS items
    FROM (
        SELECT {column} AS t, event_type, events, amount, items FROM {table}
        WHERE tenant_id = $1 AND {column} >= $5 AND {column} < $6
        UNION ALL
        SELECT minute, event_type, events, amount, items FROM stream_minute_metrics
        WHERE tenant_id = $1 AND {edges}
    ) rows
    GROUP BY 1, 2
) per_type
GROUP BY b
"""
_EDGES = "((minute >= $3 AND minute < $5) OR (minute >= $6 AND minute < $4))"
# Hour buckets on the hour grid: the stored answer of each hour, plus the ragged ends.
_HOURLY = """
SELECT hour AS b, types, events, total, orders, revenue, refunds, items_sold
FROM stream_hour_answers
WHERE tenant_id = $1 AND hour >= $5 AND hour < $6 AND date_bin('1 hour', hour, $5) = hour
UNION ALL
SELECT * FROM ({edges}) ends
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


def additive_sql(grid: int = 0, *, hourly: bool = False) -> str:
    """The additive query reading the inner window from ``GRIDS[grid]``; with ``hourly`` (hour
    buckets on the hour grid) from the stored answer of each hour."""
    if hourly:
        edges = _ADDITIVE.format(table="stream_hour_metrics", column="hour", edges=_EDGES)
        return _HOURLY.format(edges=edges.replace("$5 AND hour < $6", "$6 AND hour < $6"))
    table, column, _ = GRIDS[grid]
    return _ADDITIVE.format(table=table, column=column, edges=_EDGES)


def choose_grid(bounds: Sequence[tuple[int, int]]) -> int:
    """Index in :data:`GRIDS` of the coarsest grid holding every bucket boundary inside the
    range (minute indexes)."""
    inner = [a for a, _ in bounds[1:]]
    for index, (_, _, size) in enumerate(GRIDS):
        if all(m % size == 0 for m in inner):
            return index
    return len(GRIDS) - 1


def inner_window(start: int, end: int, size: int) -> tuple[int, int]:
    """The part of minutes ``start..end`` on a grid of ``size`` minutes (empty: equal ends)."""
    a = -(-start // size) * size
    b = end // size * size
    return (a, b) if a < b else (start, start)


@dataclass(frozen=True)
class Distinct:
    """Distinct counts of a bucket or range."""

    sessions: int = 0
    purchasing: int = 0
    customers: int = 0


def _money(value: Decimal) -> str:
    return str(value if value.as_tuple().exponent == -2 else value.quantize(CENT))


_EMPTY: dict[str, int] = {}
_EMPTY_BUCKET: dict[str, Any] = {
    "events": 0,
    "events_by_type": _EMPTY,
    "orders": 0,
    "revenue": "0.00",
    "refunds": "0.00",
    "items_sold": 0,
    "average_order_value": None,
}


def measure_values(
    total: int,
    by_type: dict[str, int],
    orders: int,
    revenue: Decimal,
    refunds: Decimal,
    items_sold: int,
    n: Counts,
) -> dict[str, Any]:
    """The JSON-ready measures of one bucket (or the range) from its sums (``by_type`` sorted
    by type) and distinct counts (money as 2-decimal strings, as ``MetricValues`` serializes
    it)."""
    sessions, purchasing, customers = n
    return {
        "events": total,
        "events_by_type": by_type,
        "orders": orders,
        "revenue": _money(revenue),
        "refunds": _money(refunds),
        "items_sold": items_sold,
        "average_order_value": str((revenue / orders).quantize(CENT)) if orders else None,
        "sessions": sessions,
        "purchasing_sessions": purchasing,
        "conversion_rate": purchasing / sessions if sessions else None,
        "unique_customers": customers,
    }


def render(answer: dict[str, Any]) -> bytes:
    """JSON bytes of a ``/metrics`` answer made of JSON-ready values."""
    return orjson.dumps(answer)


def iso(moment: datetime) -> str:
    """A datetime as pydantic serializes it (``Z`` for UTC)."""
    text = moment.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def assemble(
    buckets: Sequence[datetime],
    additive_rows: Iterable[Any],
    counts: Sequence[Counts],
    total: Counts,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Series (one point per bucket, empty buckets included) and totals, JSON-ready.

    ``additive_rows`` are rows of :func:`additive_sql` (``b``, ``types``, ``events``,
    ``total``, ``orders``, ``revenue``, ``refunds``, ``items_sold``; money as numeric(20, 2));
    ``counts`` the distinct counts of each bucket, in order; bucket starts in UTC."""
    per_bucket: dict[datetime, Any] = {row[0]: row for row in additive_rows}
    all_types: dict[str, int] = {}
    events = orders = items = 0
    revenue = refunds = ZERO
    series = []
    for bucket, n in zip(buckets, counts, strict=True):
        row = per_bucket.get(bucket)
        sessions, purchasing, customers = n
        if row is None:
            values = {**_EMPTY_BUCKET, "sessions": sessions, "purchasing_sessions": purchasing,
                      "conversion_rate": purchasing / sessions if sessions else None,
                      "unique_customers": customers}  # fmt: skip
        else:
            _, types, counted, bucket_events, bucket_orders, money_in, money_out, sold = row
            by_type = dict(zip(types, counted, strict=True))
            for kind, count in by_type.items():
                all_types[kind] = all_types.get(kind, 0) + count
            events += bucket_events
            orders += bucket_orders
            revenue += money_in
            refunds += money_out
            items += sold
            # Inlined measure_values: money from numeric(20, 2) is already 2-decimal text.
            values = {
                "events": bucket_events,
                "events_by_type": by_type,
                "orders": bucket_orders,
                "revenue": str(money_in),
                "refunds": str(money_out),
                "items_sold": sold,
                "average_order_value": (
                    str((money_in / bucket_orders).quantize(CENT)) if bucket_orders else None
                ),
                "sessions": sessions,
                "purchasing_sessions": purchasing,
                "conversion_rate": purchasing / sessions if sessions else None,
                "unique_customers": customers,
            }
        values["bucket_start"] = iso(bucket)
        series.append(values)
    totals = measure_values(
        events, dict(sorted(all_types.items())), orders, revenue, refunds, items, total
    )
    return series, totals


async def metrics_for(
    conn: Conn,
    tenant_id: str,
    start: datetime,
    end: datetime,
    granularity: Granularity,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Series and totals of ``tenant_id`` over ``start``..``end`` (see :func:`assemble`)."""
    unit = granularity.value
    buckets = [row[0] for row in await conn.fetch(BUCKETS_SQL, unit, start, end)]
    bounds = bucket_bounds(buckets, start, end)
    grid = choose_grid(bounds)
    first, last = pieces.minute_of(start), pieces.minute_of(end)
    a, b = inner_window(first, last, GRIDS[grid][2])
    full = [(x, y) for x, y in bounds if y - x == 60]
    hourly = granularity is Granularity.HOUR and GRIDS[grid][2] >= 15 and bool(full)
    if hourly:  # whole hour buckets from stored answers, partial ones from minutes
        a, b = full[0][0], full[-1][1]
    additive = await conn.fetch(
        additive_sql(grid, hourly=hourly),
        tenant_id, unit, start, end, pieces.at_minute(a), pieces.at_minute(b),
    )  # fmt: skip
    counts, total = await distinct_series(conn, tenant_id, buckets, start, end)
    return assemble(buckets, additive, counts, total)
