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
from datetime import UTC, datetime
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
SELECT b, array_agg(event_type) AS types, array_agg(events) AS events,
       array_agg(amount) AS amounts, array_agg(items) AS items
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
FRESHNESS_SQL = """
SELECT (SELECT max(minute) FROM stream_minute_metrics
        WHERE tenant_id = $1 AND minute >= $2 AND minute < $3) AS speed_newest,
       (SELECT max(event_time) FROM events
        WHERE tenant_id = $1 AND event_time >= $2 AND event_time < $3) AS batch_newest,
       (SELECT max(updated_at) FROM stream_heartbeat) AS speed_updated,
       (SELECT updated_at FROM load_watermarks WHERE target = 'events') AS batch_updated,
       (SELECT currency FROM tenants WHERE tenant_id = $1) AS currency
"""


def additive_sql(grid: int = 0) -> str:
    """The additive query reading the inner window from ``GRIDS[grid]``."""
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
    return str(value.quantize(CENT))


def measure_values(
    by_type: dict[str, int], amount: dict[str, Decimal], items: dict[str, int], n: Counts
) -> dict[str, Any]:
    """The JSON-ready measures of one bucket (or the range) from its sums and distinct counts
    (money as 2-decimal strings, as ``MetricValues`` serializes it)."""
    orders = by_type.get(PURCHASE, 0)
    revenue = amount.get(PURCHASE, ZERO).quantize(CENT)
    sessions, purchasing, customers = n
    return {
        "events": sum(by_type.values()),
        "events_by_type": dict(sorted(by_type.items())),
        "orders": orders,
        "revenue": str(revenue),
        "refunds": _money(amount.get(REFUND, ZERO)),
        "items_sold": items.get(PURCHASE, 0),
        "average_order_value": _money(revenue / orders) if orders else None,
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
    ``amounts``, ``items``); ``counts`` the distinct counts of each bucket, in order."""
    per_bucket: dict[datetime, Any] = {row[0]: row for row in additive_rows}
    all_events: dict[str, int] = {}
    all_amount: dict[str, Decimal] = {}
    all_items: dict[str, int] = {}
    series = []
    for bucket, n in zip(buckets, counts, strict=True):
        row = per_bucket.get(bucket)
        if row is None:
            values = measure_values({}, {}, {}, n)
        else:
            types = row[1]
            by_type = dict(zip(types, row[2], strict=True))
            amount = dict(zip(types, row[3], strict=True))
            items = dict(zip(types, row[4], strict=True))
            for kind in types:
                all_events[kind] = all_events.get(kind, 0) + by_type[kind]
                all_amount[kind] = all_amount.get(kind, ZERO) + amount[kind]
                all_items[kind] = all_items.get(kind, 0) + items[kind]
            values = measure_values(by_type, amount, items, n)
        values["bucket_start"] = iso(bucket.astimezone(UTC))
        series.append(values)
    return series, measure_values(all_events, all_amount, all_items, total)


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
    additive = await conn.fetch(
        additive_sql(grid), tenant_id, unit, start, end, pieces.at_minute(a), pieces.at_minute(b)
    )
    counts, total = await distinct_series(conn, tenant_id, buckets, start, end)
    return assemble(buckets, additive, counts, total)
