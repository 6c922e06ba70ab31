"""``make bench-api``: latency and requests/s of the analytics API over 10 million events.

Starts its own PostgreSQL and the API (``python -m api`` under supervisord, its default pool,
the rate limit lifted), registers 4 tenants, then in the same run:

1. **Load**: ``--events`` events, written server-side (``INSERT ... SELECT FROM
   generate_series``) over the last 35 days, then what the pipeline keeps next to them, derived
   with SQL: the speed layer (``stream_minute_metrics``, ``stream_slot_metrics``) and the
   distinct-count bitmaps; then ``VACUUM ANALYZE``.
2. **Same answer**: ``/metrics`` over 30 days, hourly, must equal a plain ``GROUP BY`` over the
   raw events, bucket by bucket.
3. **Concurrency**: ``--clients`` keep-alive clients drive ``/metrics`` (30 days, hourly, tenant
   and window varied) and then ``/events`` (first pages, filtered pages, next pages) for
   ``--seconds`` each after a warm-up, from a separate process whose CPU is measured.
4. **Side by side**: the plain ``GROUP BY`` (psycopg) and ``/metrics``, one client at a time.
5. **Where the time goes**: EXPLAIN ANALYZE of the queries behind ``/metrics``, the Python
   assembly and serialization of its answer, its size.

Progress goes to stderr; Markdown tables and a JSON summary to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform as host
import random
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from multiprocessing import get_context
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

import asyncpg
import httpx
import orjson
import psutil
import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from api import distinct as api_distinct
from api.analytics import (
    BUCKETS_SQL,
    CENT,
    FRESHNESS_SQL,
    additive_sql,
    assemble,
    iso,
    render,
)
from api.models import Granularity
from api.security import new_token, token_hash
from generator.catalog import demo_tenant_ids, merchant_profile
from include.db import connect
from include.embedded import supervisor
from include.embedded.paths import StatePaths
from include.events.models import EventType
from include.settings import Settings
from include.tenants import register_tenant, topic_for
from include.warehouse import distinct
from include.warehouse.erasure import ERASED_ROWS
from include.warehouse.partitions import Month, ensure_partitions
from include.warehouse.rollups import slot_of
from include.warehouse.tables import EVENTS
from tests.services import embedded_platform

T = TypeVar("T")
DAYS = 35
WINDOW = timedelta(days=30)
HOUR = timedelta(hours=1)
TENANT_SHARES = (0.4, 0.3, 0.2, 0.1)
# Sessions come in blocks of 8 with one session of each length 1..8: 36 events per block.
SESSIONS_PER_BLOCK = 8
EVENTS_PER_BLOCK = 36
TARGET_P99_MS = 50.0
LOADERS = 2  # sessions writing at once (one per core)
TARGET_SPEEDUP = 20.0

# A uniform draw in [0, 1) from a key and a salt: deterministic, so every run loads the same
# data (event ids aside). Inlined by the planner (a plain immutable SQL function).
UNIFORM_FUNCTION = """
CREATE FUNCTION pg_temp.u(key bigint, salt bigint) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT (hashint8extended(key, salt) & 4503599627370495)::double precision
             / 4503599627370496 $$
"""

# Sessions first(n, n + sessions) of one tenant and day, then their events. 70 % of sessions
# are a known customer's; sessions peak at noon UTC; a session's first event is a page view.
LOAD_EVENTS = """
INSERT INTO events (
    tenant_id, event_id, event_time, schema_version, event_type, session_id,
    customer_customer_id, customer_email, customer_country, customer_segment,
    device_type, device_os, device_browser, device_ip,
    order_order_id, order_total_amount, order_currency, order_payment_method,
    ml_context_model_version, ml_context_model_scores,
    processing_flags_pii_contains, processing_flags_gdpr_consent,
    lineage_source, lineage_producer_id, lineage_produced_at, lineage_trace_id,
    item_count, topic, message_id, publish_time, ingest_time, marketing_campaign)
SELECT %(tenant)s, gen_random_uuid(), e.at, 1, e.kind, s.session_id,
       'c' || s.customer, 'c' || s.customer || '@example.com',
       (ARRAY['US', 'GB', 'DE', 'FR', 'ES', 'IT', 'NL', 'CA', 'AU', 'JP'])[1 + mod(s.customer, 10)],
       (ARRAY['new', 'returning', 'vip'])[1 + mod(s.customer / 10, 3)],
       (ARRAY['mobile', 'desktop', 'tablet'])[1 + mod(s.n, 3)],
       (ARRAY['ios', 'android', 'windows', 'macos', 'linux'])[1 + mod(s.n / 3, 5)],
       (ARRAY['safari', 'chrome', 'firefox', 'edge'])[1 + mod(s.n / 15, 4)],
       '10.' || mod(s.n, 250) || '.' || mod(s.n / 250, 250) || '.' || mod(s.n / 62500, 250),
       CASE WHEN e.kind IN ('purchase', 'refund') THEN 'o-' || e.key END,
       CASE WHEN e.kind = 'purchase' THEN round((5 + 295 * pg_temp.u(e.key, 7) ^ 2)::numeric, 2)
            WHEN e.kind = 'refund' THEN round((5 + 95 * pg_temp.u(e.key, 7))::numeric, 2) END,
       CASE WHEN e.kind IN ('purchase', 'refund') THEN %(currency)s END,
       CASE WHEN e.kind IN ('purchase', 'refund')
            THEN (ARRAY['card', 'paypal', 'apple_pay', 'bank_transfer'])[1 + mod(e.key, 4)] END,
       'fraud-v3', jsonb_build_object('fraud', round((pg_temp.u(e.key, 8) ^ 6)::numeric, 4)),
       s.customer IS NOT NULL, true,
       'generator', 'bench-api', e.at, to_hex(e.key),
       CASE WHEN e.kind IN ('purchase', 'checkout_started') THEN 1 + mod(e.key / 7, 5)
            WHEN e.kind IN ('add_to_cart', 'remove_from_cart', 'refund') THEN 1 END,
       %(topic)s, '0:' || e.key || ':-1', e.at + interval '40 milliseconds',
       e.at + interval '1 second',
       CASE WHEN mod(s.n, 5) = 0 THEN (ARRAY['spring_sale', 'newsletter', 'retargeting'])
            [1 + mod(s.n / 5, 3)] END
FROM (
    SELECT n,
           %(tenant)s || '-s' || n AS session_id,
           CASE WHEN pg_temp.u(n, 1) < 0.7
                THEN mod(hashint8extended(n, 2) & 1048575, %(customers)s) END AS customer,
           %(day)s::timestamptz + make_interval(secs => 86400 * (
               pg_temp.u(n, 3) + 0.6 * sin(2 * pi() * pg_temp.u(n, 3)) / (2 * pi()))) AS started,
           make_interval(secs => 15 + 75 * pg_temp.u(n, 4)) AS gap,
           1 + mod(n * 3, 8) AS length
    FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS n
) AS s
CROSS JOIN LATERAL (
    SELECT s.n * 8 + i AS key,
           s.started + (i - 1) * s.gap AS at,
           CASE WHEN i = 1 THEN 'page_view'
                WHEN r < 0.42 THEN 'product_view'
                WHEN r < 0.66 THEN 'page_view'
                WHEN r < 0.80 THEN 'add_to_cart'
                WHEN r < 0.85 THEN 'remove_from_cart'
                WHEN r < 0.935 THEN 'checkout_started'
                WHEN r < 0.99 THEN 'purchase'
                ELSE 'refund' END AS kind
    FROM generate_series(1, s.length) AS i,
         LATERAL (SELECT pg_temp.u(s.n * 8 + i, 5) AS r) AS draw
) AS e
"""

# The speed layer as the streaming sink keeps it: per tenant, minute and event type.
LOAD_MINUTE_METRICS = """
INSERT INTO stream_minute_metrics (tenant_id, minute, event_type, events, amount, items)
SELECT tenant_id, date_trunc('minute', event_time), event_type, count(*),
       coalesce(sum(order_total_amount), 0), coalesce(sum(item_count), 0)
FROM events WHERE tenant_id = %s GROUP BY 1, 2, 3
"""

# ... and per 15-minute slot, as the sink keeps it next to the minutes.
LOAD_SLOT_METRICS = f"""
INSERT INTO stream_slot_metrics (tenant_id, slot, event_type, events, amount, items)
SELECT tenant_id, {slot_of("minute")}, event_type, sum(events), sum(amount), sum(items)
FROM stream_minute_metrics WHERE tenant_id = %s GROUP BY 1, 2, 3
"""

# The loader's statement reads its staging table: a temporary view of that name over the loaded
# events (temporary relations come first in the search path) feeds it the same rows.
STAGING_VIEW = "CREATE TEMP VIEW load_staging_events AS SELECT * FROM events"


def plain_metrics_sql() -> sql.Composed:
    """The ``/metrics`` answer straight from the raw events: one row per non-empty bucket of
    the session's time zone (``date_trunc`` of the unit given first) and the totals."""
    by_type = sql.SQL(", ").join(
        sql.SQL("count(*) FILTER (WHERE event_type = {}) AS {}").format(
            sql.Literal(kind.value), sql.Identifier(kind.value)
        )
        for kind in EventType
    )
    return sql.SQL(
        """
        SELECT date_trunc(%s, event_time) AS b, {by_type},
               coalesce(sum(order_total_amount) FILTER (WHERE event_type = 'purchase'), 0)
                   AS revenue,
               coalesce(sum(order_total_amount) FILTER (WHERE event_type = 'refund'), 0)
                   AS refunds,
               coalesce(sum(item_count) FILTER (WHERE event_type = 'purchase'), 0) AS items,
               count(DISTINCT session_id) AS sessions,
               count(DISTINCT session_id) FILTER (WHERE event_type = 'purchase') AS purchasing,
               count(DISTINCT customer_customer_id) AS customers
        FROM events
        WHERE tenant_id = %s AND event_time >= %s AND event_time < %s
        GROUP BY GROUPING SETS ((1), ())
        """
    ).format(by_type=by_type)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _timed(action: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    result = action()
    return result, time.perf_counter() - started


# --- 1. Load -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dataset:
    """What was loaded: tenants (largest first), the hour the data ends at, counts, timings."""

    tenants: list[str]
    anchor: datetime
    events: int
    sessions: int
    seconds: dict[str, float]


def plan_sessions(events: int, tenants: int, days: list[datetime]) -> list[list[int]]:
    """Sessions per tenant and day (a multiple of 8), skewed by tenant, fewer on weekends,
    adding up to the fewest whole blocks of 36 events that reach ``events``."""
    blocks = math.ceil(events / EVENTS_PER_BLOCK)
    weights = [
        [TENANT_SHARES[t] * (0.8 if day.weekday() >= 5 else 1.05) for day in days]
        for t in range(tenants)
    ]
    total = sum(sum(row) for row in weights)
    exact = [[blocks * w / total for w in row] for row in weights]
    counts = [[int(x) for x in row] for row in exact]
    missing = blocks - sum(sum(row) for row in counts)
    by_remainder = sorted(
        ((exact[t][d] - counts[t][d], t, d) for t in range(tenants) for d in range(len(days))),
        reverse=True,
    )
    for _, t, d in by_remainder[:missing]:
        counts[t][d] += 1
    return [[c * SESSIONS_PER_BLOCK for c in row] for row in counts]


def _loader(settings: Settings) -> psycopg.Connection[Any]:
    """A loading session: UTC, no JIT (compiling these one-off statements took longer than
    running them), room to aggregate in memory, the draw function and the staging view."""
    conn = connect(settings, autocommit=True)
    for statement in (
        "SET TimeZone = 'UTC'",
        "SET jit = off",
        "SET work_mem = '256MB'",
        UNIFORM_FUNCTION,
        STAGING_VIEW,
    ):
        conn.execute(statement)
    return conn


Statement = tuple[sql.Composable | str, Mapping[str, Any] | tuple[Any, ...] | None]


def run_parallel(
    settings: Settings, statements: list[Statement], done: Callable[[int], None] | None = None
) -> int:
    """Run ``statements`` on ``LOADERS`` sessions at once; return the rows they wrote."""

    def work(share: list[Statement]) -> int:
        rows = 0
        with _loader(settings) as conn:
            for query, params in share:
                count = conn.execute(query, params).rowcount  # type: ignore[arg-type]
                rows += count
                if done is not None:
                    done(count)
        return rows

    with ThreadPoolExecutor(LOADERS) as pool:
        return sum(pool.map(work, [statements[i::LOADERS] for i in range(LOADERS)]))


def load(settings: Settings, events: int) -> Dataset:
    """Register the tenants, load the events and derive the speed layer and session slots."""
    tenants = demo_tenant_ids(len(TENANT_SHARES))
    anchor = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - HOUR
    days = [anchor - timedelta(days=DAYS - d) for d in range(DAYS)]
    plan = plan_sessions(events, len(tenants), days)
    with connect(settings, autocommit=True) as conn:
        for tenant in tenants:
            merchant = merchant_profile(tenant)
            register_tenant(conn, tenant, merchant.display_name, merchant.currency)
        months, month = set(), Month.of(days[0].date())
        while month <= Month.of((anchor + timedelta(days=1)).date()):
            months.add(month)
            month = month.next()
        ensure_partitions(conn, "events", months)
    chunks: list[Statement] = []
    first = 0
    for t, tenant in enumerate(tenants):
        for d, day in enumerate(days):
            params = {
                "tenant": tenant,
                "currency": merchant_profile(tenant).currency,
                "topic": topic_for(tenant, settings.topic_template),
                "customers": max(1_000, sum(plan[t]) // 8),
                "day": day,
                "first": first,
                "last": first + plan[t][d] - 1,
            }
            first += plan[t][d]
            if plan[t][d]:
                chunks.append((LOAD_EVENTS, params))
    expected = first * EVENTS_PER_BLOCK // SESSIONS_PER_BLOCK
    timings: dict[str, float] = {}
    started = time.perf_counter()
    progress = {"rows": 0, "logged": 0}
    lock = threading.Lock()

    def loaded(rows: int) -> None:
        with lock:
            progress["rows"] += rows
            if progress["rows"] - progress["logged"] >= expected / 10:
                progress["logged"] = progress["rows"]
                elapsed = time.perf_counter() - started
                _log(
                    f"events: {progress['rows']:,} of {expected:,} in {elapsed:.0f} s "
                    f"({progress['rows'] / elapsed:,.0f} events/s)"
                )

    run_parallel(settings, chunks, loaded)
    timings["events"] = time.perf_counter() - started
    derived: list[tuple[str, list[Statement]]] = [
        ("stream_minute_metrics", [(LOAD_MINUTE_METRICS, (t,)) for t in tenants]),
        ("stream_slot_metrics", [(LOAD_SLOT_METRICS, (t,)) for t in tenants]),
        (
            "vacuum_analyze",
            [
                ("VACUUM ANALYZE events", None),
                ("VACUUM ANALYZE stream_minute_metrics, stream_slot_metrics", None),
            ],
        ),
    ]
    for name, statements in derived:
        started = time.perf_counter()
        rows = run_parallel(settings, statements)
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - started
        _log(f"{name}: {rows:,} rows in {timings[name]:.0f} s")
    started = time.perf_counter()

    def bitmaps(tenant: str) -> int:
        with connect(settings) as conn, conn.transaction():
            conn.execute("SET TimeZone = 'UTC'")
            return distinct.rebuild(conn, tenant)

    with ThreadPoolExecutor(LOADERS) as pool:
        pieces = sum(pool.map(bitmaps, tenants))
    with connect(settings, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE distinct_pieces, distinct_ids")
    timings["distinct_pieces"] = time.perf_counter() - started
    _log(f"distinct_pieces: {pieces:,} pieces in {timings['distinct_pieces']:.0f} s")
    with connect(settings) as conn:
        row = conn.execute("SELECT count(*), count(DISTINCT session_id) FROM events").fetchone()
    assert row is not None
    return Dataset(tenants, anchor, int(row[0]), int(row[1]), timings)


def storage(settings: Settings) -> dict[str, float]:
    """MiB on disk (table, indexes and TOAST) of the distinct-count structures and of the
    events they count."""
    names = ("distinct_pieces", "distinct_ids", "distinct_id_next", "events")
    out = {}
    with connect(settings) as conn:
        for name in names:
            row = conn.execute(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                "WHERE c.relname = %s OR c.oid IN (SELECT inhrelid FROM pg_inherits "
                "WHERE inhparent = %s::regclass)",
                (name, name),
            ).fetchone()
            out[name] = int(row[0]) / 2**20 if row else 0.0
        row = conn.execute(
            "SELECT count(*), coalesce(sum(octet_length(bitmap)), 0) FROM distinct_pieces"
        ).fetchone()
        assert row is not None
        out["pieces"] = float(row[0])
        out["bitmap_payload_mib"] = int(row[1]) / 2**20
    return out


def create_tokens(settings: Settings, tenants: list[str]) -> dict[str, str]:
    """One tenant token per tenant (what a tenant's client holds), by tenant."""
    tokens = {tenant: new_token() for tenant in tenants}
    with connect(settings) as conn:
        for tenant, secret in tokens.items():
            conn.execute(
                "INSERT INTO api_tokens (token_id, token_hash, role, tenant_id, name) "
                "VALUES (%s, %s, 'tenant', %s, 'bench-api')",
                (uuid.uuid4(), token_hash(secret), tenant),
            )
    return tokens


# --- 2. The same answer ----------------------------------------------------------------------


def _measures(row: Mapping[str, Any] | None) -> dict[str, Any]:
    """The measures of /metrics from one row of the plain query (an empty bucket for None)."""
    by_type = {} if row is None else {k.value: int(row[k.value]) for k in EventType}
    by_type = {kind: count for kind, count in sorted(by_type.items()) if count}
    orders = by_type.get(EventType.PURCHASE.value, 0)
    revenue = Decimal(0) if row is None else Decimal(row["revenue"]).quantize(CENT)
    sessions = 0 if row is None else int(row["sessions"])
    purchasing = 0 if row is None else int(row["purchasing"])
    return {
        "events": sum(by_type.values()),
        "events_by_type": by_type,
        "orders": orders,
        "revenue": revenue,
        "refunds": Decimal(0) if row is None else Decimal(row["refunds"]).quantize(CENT),
        "items_sold": 0 if row is None else int(row["items"]),
        "average_order_value": (revenue / orders).quantize(CENT) if orders else None,
        "sessions": sessions,
        "purchasing_sessions": purchasing,
        "conversion_rate": purchasing / sessions if sessions else None,
        "unique_customers": 0 if row is None else int(row["customers"]),
    }


def plain_metrics(
    conn: psycopg.Connection[dict[str, Any]],
    tenant: str,
    start: datetime,
    end: datetime,
    unit: str = "hour",
    zone: str = "UTC",
) -> dict[str, Any]:
    """The non-empty buckets and the totals of ``tenant`` from the raw events, in /metrics'
    shape, buckets cut in ``zone``."""
    conn.execute("SELECT set_config('TimeZone', %s, false)", (zone,))
    rows = conn.execute(plain_metrics_sql(), (unit, tenant, start, end)).fetchall()
    conn.execute("SET TimeZone = 'UTC'")
    by_bucket = {row["b"]: _measures(row) for row in rows if row["b"] is not None}
    totals = next((row for row in rows if row["b"] is None), None)
    return {"buckets": by_bucket, "totals": _measures(totals)}


def _from_api(values: dict[str, Any]) -> dict[str, Any]:
    out = dict(values)
    for money in ("revenue", "refunds", "average_order_value"):
        out[money] = None if out[money] is None else Decimal(str(out[money]))
    if "bucket_start" in out:
        out["bucket_start"] = datetime.fromisoformat(out["bucket_start"])
    return out


def check_same_answer(api_body: bytes, plain: dict[str, Any]) -> None:
    """Raise unless the API's series and totals equal the plain query's: every non-empty bucket
    of the plain query is in the series with the same measures, every other bucket is empty."""
    body = orjson.loads(api_body)
    series = [_from_api(point) for point in body["series"]]
    starts = [p["bucket_start"] for p in series]
    assert starts == sorted(set(starts)), "buckets not strictly increasing"
    assert starts[0] <= datetime.fromisoformat(body["start"]), "first bucket after start"
    empty = _measures(None)
    missing = set(plain["buckets"]) - set(starts)
    assert not missing, f"buckets with events missing from the series: {sorted(missing)[:3]}"
    for got in series:
        want = plain["buckets"].get(got["bucket_start"], empty)
        assert {k: got[k] for k in want} == want, f"bucket differs:\napi   {got}\nplain {want}"
    totals = _from_api(body["totals"])
    want = plain["totals"]
    assert {k: totals[k] for k in want} == want, f"totals differ:\napi   {totals}\nplain {want}"


def metrics_params(tenant: str, end: datetime) -> dict[str, str]:
    """Query parameters of /metrics over the 30 days before ``end``, hourly."""
    start = end - WINDOW
    return {
        "tenant_id": tenant,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "granularity": "hour",
    }


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def wait_for_api(base_url: str, token: str, tenant: str, anchor: datetime) -> None:
    """Block until /metrics answers 200 (the API's pool connects in the background)."""
    deadline = time.monotonic() + 120
    with httpx.Client(base_url=base_url, timeout=60) as client:
        while True:
            try:
                response = client.get(
                    "/metrics", params=metrics_params(tenant, anchor), headers=_auth(token)
                )
                if response.status_code == 200:
                    return
                status = f"{response.status_code} {response.text[:200]}"
            except httpx.HTTPError as exc:
                status = repr(exc)
            if time.monotonic() > deadline:
                raise RuntimeError(f"the API did not answer /metrics: {status}")
            time.sleep(0.5)


ZONES = ("UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata", "Asia/Kathmandu",
         "Australia/Adelaide", "Pacific/Chatham")  # fmt: skip


def sample_requests(tenants: list[str], anchor: datetime, count: int) -> list[dict[str, str]]:
    """``count`` distinct /metrics requests: minute, hour and day buckets, seven zones (whole,
    half and quarter hour offsets), ranges on and off the 15-minute grid, 1 hour to 400 days."""
    rng = random.Random(16)
    out: dict[str, dict[str, str]] = {}
    while len(out) < count:
        unit = ("minute", "hour", "day")[len(out) % 3]
        span = {
            "minute": timedelta(minutes=rng.choice([60, 333, 1_440])),
            "hour": timedelta(hours=rng.choice([1, 24, 24 * 7, 24 * 30])),
            "day": timedelta(days=rng.choice([1, 7, 30, 400])),
        }[unit]
        end = anchor - timedelta(minutes=rng.choice([0, 7, 15, 30, 45, 53, rng.randrange(1, 9999)]))
        params = {
            "tenant_id": rng.choice(tenants),
            "start": (
                end - span - timedelta(minutes=rng.choice([0, 0, 1, 22]) if span.days < 400 else 0)
            ).isoformat(),
            "end": end.isoformat(),
            "granularity": unit,
            "timezone": ZONES[len(out) % len(ZONES)],
        }
        out[orjson.dumps(params).decode()] = params
    return list(out.values())


def check_sample(
    settings: Settings, base_url: str, tokens: dict[str, str], requests: list[dict[str, str]]
) -> int:
    """Every request of ``requests`` through /metrics equal, bucket by bucket, to the plain
    GROUP BY; returns how many were checked."""
    with (
        psycopg.connect(settings.pg_dsn, row_factory=dict_row, autocommit=True) as conn,
        httpx.Client(base_url=base_url, timeout=120) as client,
    ):
        conn.execute("SET jit = off")
        for params in requests:
            tenant = params["tenant_id"]
            response = client.get("/metrics", params=params, headers=_auth(tokens[tenant]))
            assert response.status_code == 200, (params, response.text[:300])
            start, end = (datetime.fromisoformat(params[k]) for k in ("start", "end"))
            plain = plain_metrics(
                conn, tenant, start, end, params["granularity"], params["timezone"]
            )
            try:
                check_same_answer(response.content, plain)
            except AssertionError as exc:
                raise AssertionError(f"{params}: {exc}") from None
    return len(requests)


LATE_SHIFT = "interval '9 days 3 hours 7 minutes'"
_LATE_VALUES = {
    "event_id": "gen_random_uuid()",
    "event_time": f"e.event_time - {LATE_SHIFT}",
    "session_id": "CASE WHEN n % 3 = 0 THEN e.session_id || '-late' ELSE e.session_id END",
    "customer_customer_id": "CASE WHEN n % 4 = 0 THEN 'late-' || n ELSE e.customer_customer_id END",
}
# Copies of the newest events, 9 days earlier, a third in new sessions, a quarter of new
# customers.
LATE_EVENTS = (
    (
        f"INSERT INTO load_staging_events ({', '.join(EVENTS.columns)}) SELECT "
        + ", ".join(_LATE_VALUES.get(c, f"e.{c}") for c in EVENTS.columns)
        + " FROM (SELECT *, row_number() OVER () AS n FROM events "
        "WHERE tenant_id = %s AND event_time >= %s ORDER BY event_time LIMIT %s) e"
    )
    .replace("%", "%%")
    .replace("%%s", "%s")
)


def add_late_events(settings: Settings, tenant: str, anchor: datetime, count: int) -> int:
    """``count`` events that arrive late (9 days back), new and known sessions and customers,
    written as the pipeline writes them: the stream's minute and slot sums, then the load's
    transaction (events, distinct-count bitmaps)."""
    keep = sql.SQL("NOT " + ERASED_ROWS["events"])
    with connect(settings) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        conn.execute("TRUNCATE load_staging_events")
        conn.execute(LATE_EVENTS, (tenant, anchor - timedelta(days=2), count))
        with conn.transaction():
            conn.execute("SET LOCAL TimeZone = 'UTC'")
            inserted = conn.execute(
                f"INSERT INTO events ({', '.join(EVENTS.columns)}) "
                f"SELECT {', '.join(EVENTS.columns)} FROM load_staging_events s "
                "ON CONFLICT DO NOTHING"
            ).rowcount
            conn.execute(
                "INSERT INTO stream_minute_metrics AS m "
                "(tenant_id, minute, event_type, events, amount, items) "
                "SELECT tenant_id, date_trunc('minute', event_time), event_type, count(*), "
                "coalesce(sum(order_total_amount), 0), coalesce(sum(item_count), 0) "
                "FROM load_staging_events GROUP BY 1, 2, 3 "
                "ON CONFLICT (tenant_id, minute, event_type) DO UPDATE SET "
                "events = m.events + excluded.events, amount = m.amount + excluded.amount, "
                "items = m.items + excluded.items"
            )
            conn.execute(
                "INSERT INTO stream_slot_metrics AS m "
                "(tenant_id, slot, event_type, events, amount, items) "
                f"SELECT tenant_id, {slot_of('event_time')}, event_type, count(*), "
                "coalesce(sum(order_total_amount), 0), coalesce(sum(item_count), 0) "
                "FROM load_staging_events GROUP BY 1, 2, 3 "
                "ON CONFLICT (tenant_id, slot, event_type) DO UPDATE SET "
                "events = m.events + excluded.events, amount = m.amount + excluded.amount, "
                "items = m.items + excluded.items"
            )
            distinct.apply_load(conn, keep)
        conn.execute("TRUNCATE load_staging_events")
        conn.commit()
    return inserted


def erase_customer(base_url: str, token: str, tenant: str, customer: str) -> int:
    """``DELETE`` a customer through the API (its PostgreSQL part; no Airflow runs here)."""
    response = httpx.delete(
        f"{base_url}/tenants/{tenant}/customers/{customer}", headers=_auth(token), timeout=120
    )
    assert response.status_code == 202, response.text
    return int(response.json()["postgres_rows"])


# --- 3. Concurrency --------------------------------------------------------------------------


@dataclass(frozen=True)
class DriveSpec:
    """One load-generator run: which endpoint, how many clients, how long."""

    base_url: str
    tokens: dict[str, str]
    endpoint: str  # "metrics" or "events"
    clients: int
    seconds: float
    anchor: datetime
    seed: int
    transport: str  # "raw" (RawConnection) or "httpx"
    # Dashboards: each client asks for its own fixed /metrics request every interval_s.
    interval_s: float = 0.0


@dataclass
class DriveResult:
    """Latencies (s) of the answered requests, and what the generator itself used."""

    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    failures: int = 0
    response_bytes: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0

    @property
    def errors(self) -> int:
        """Transport failures and answers other than 200."""
        return self.failures + sum(n for status, n in self.statuses.items() if status != 200)


class RawConnection:
    """A minimal keep-alive HTTP/1.1 client for one connection: a GET, then the response's
    status and ``Content-Length`` body. Several times cheaper per request than ``httpx``, so
    the load generator leaves the cores to the API (uvicorn always sends a length)."""

    def __init__(self, base_url: str) -> None:
        url = urlsplit(base_url)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def get(self, path: str, params: dict[str, str], token: str) -> tuple[int, bytes]:
        if self.streams is None:
            self.streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.streams
        writer.write(
            f"GET {path}?{urlencode(params)} HTTP/1.1\r\nHost: {self.host}\r\n"
            f"Authorization: Bearer {token}\r\n\r\n".encode()
        )
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.lower().split(b"\r\n")
                if line.startswith(b"content-length:")
            )
            return int(head[9:12]), await reader.readexactly(length)
        except Exception:
            await self.close()
            raise

    async def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


class _Client:
    """One simulated client: a loop of requests, each sent when the previous one answered."""

    def __init__(self, spec: DriveSpec, number: int, out: DriveResult) -> None:
        self.spec, self.out = spec, out
        self.rng = random.Random(spec.seed * 1_000 + number)
        self.number = number
        # Last /events page (tenant, filters, next cursor), to ask for the following page.
        self.last_page: tuple[str, dict[str, str], str] | None = None

    def request(self) -> tuple[str, str, dict[str, str]]:
        tenants = sorted(self.spec.tokens)
        if self.spec.interval_s:
            tenant = tenants[self.number % len(tenants)]
            end = self.spec.anchor - HOUR * (self.number // len(tenants))
            return tenant, "/metrics", metrics_params(tenant, end)
        tenant = self.rng.choice(tenants)
        if self.spec.endpoint == "metrics":
            end = self.spec.anchor - HOUR * self.rng.randrange(72)
            return tenant, "/metrics", metrics_params(tenant, end)
        draw = self.rng.random()
        if draw < 0.35 and self.last_page is not None:
            tenant, filters, cursor = self.last_page
            return tenant, "/events", {**filters, "cursor": cursor}
        filters = {"tenant_id": tenant, "limit": "100"}
        if draw < 0.65:
            filters["event_type"] = self.rng.choice(list(EventType)).value
        return tenant, "/events", filters

    async def run(self, fetch: Fetch, deadline: float) -> None:
        if self.spec.interval_s:  # dashboards are not synchronized: each its own phase
            await asyncio.sleep(self.rng.uniform(0, self.spec.interval_s))
        while time.perf_counter() < deadline:
            tenant, path, params = self.request()
            started = time.perf_counter()
            try:
                status, body = await fetch(path, params, self.spec.tokens[tenant])
            except (OSError, asyncio.IncompleteReadError, StopIteration, httpx.HTTPError):
                self.out.failures += 1
                await asyncio.sleep(0.1)
                continue
            self.out.latencies.append(time.perf_counter() - started)
            if self.spec.interval_s:
                await asyncio.sleep(max(0.0, started + self.spec.interval_s - time.perf_counter()))
            self.out.statuses[status] = self.out.statuses.get(status, 0) + 1
            self.out.response_bytes += len(body)
            if path == "/events" and status == 200:
                cursor = orjson.loads(body)["next_cursor"]
                filters = {k: v for k, v in params.items() if k != "cursor"}
                self.last_page = (tenant, filters, cursor) if cursor else None


Fetch = Callable[[str, dict[str, str], str], Awaitable[tuple[int, bytes]]]


async def _drive(spec: DriveSpec) -> DriveResult:
    out = DriveResult()
    clients = [_Client(spec, n, out) for n in range(spec.clients)]
    cpu, started = time.process_time(), time.perf_counter()
    deadline = started + spec.seconds
    if spec.transport == "httpx":
        limits = httpx.Limits(max_connections=spec.clients, max_keepalive_connections=spec.clients)
        async with httpx.AsyncClient(base_url=spec.base_url, limits=limits, timeout=120) as http:

            async def fetch(path: str, params: dict[str, str], token: str) -> tuple[int, bytes]:
                response = await http.get(path, params=params, headers=_auth(token))
                return response.status_code, response.content

            await asyncio.gather(*(c.run(fetch, deadline) for c in clients))
    else:
        connections = [RawConnection(spec.base_url) for _ in clients]
        await asyncio.gather(
            *(c.run(conn.get, deadline) for c, conn in zip(clients, connections, strict=True))
        )
        for conn in connections:
            await conn.close()
    out.wall_s = time.perf_counter() - started
    out.cpu_s = time.process_time() - cpu
    return out


def drive(spec: DriveSpec) -> DriveResult:
    """Run one load-generator phase (in the load-generator process)."""
    return asyncio.run(_drive(spec))


def _process_tree_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of a process and each of its descendants, by pid."""
    out: dict[int, float] = {}
    root = psutil.Process(pid)
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        out[process.pid] = times.user + times.system
    return out


def _cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


@dataclass(frozen=True)
class EndpointRun:
    """The concurrency measurement of one endpoint."""

    endpoint: str  # "metrics", "events", or "dashboards" (metrics, 1 refresh/s per client)
    requests: int
    errors: int
    statuses: dict[int, int]
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    mean_response_kib: float
    cpu_cores: dict[str, float]  # load generator, API process, PostgreSQL


def measure_endpoint(
    pool: ProcessPoolExecutor, spec: DriveSpec, warmup_s: float, pids: dict[str, int]
) -> EndpointRun:
    """Warm up, then drive ``spec`` while sampling the CPU of the API and PostgreSQL."""
    pool.submit(drive, replace(spec, seconds=warmup_s)).result()
    before = {name: _process_tree_cpu(pid) for name, pid in pids.items()}
    machine = psutil.cpu_times()
    result = pool.submit(drive, spec).result()
    busy = psutil.cpu_times()
    after = {name: _process_tree_cpu(pid) for name, pid in pids.items()}
    wall = result.wall_s
    cores = {"load generator": result.cpu_s / wall}
    cores |= {name: _cpu_used(before[name], after[name]) / wall for name in pids}
    idle = (busy.idle + busy.iowait) - (machine.idle + machine.iowait)
    total = sum(busy) - sum(machine)
    # Everything else the machine ran meanwhile (other work on a shared machine).
    cores["other"] = max(
        0.0, (total - idle) / total * (psutil.cpu_count() or 1) - sum(cores.values())
    )
    ms = [s * 1_000 for s in result.latencies]
    return EndpointRun(
        endpoint="dashboards" if spec.interval_s else spec.endpoint,
        requests=len(ms),
        errors=result.errors,
        statuses=result.statuses,
        rps=len(ms) / wall,
        p50_ms=_percentile(ms, 0.50),
        p95_ms=_percentile(ms, 0.95),
        p99_ms=_percentile(ms, 0.99),
        max_ms=max(ms),
        mean_response_kib=result.response_bytes / max(len(ms), 1) / 1024,
        cpu_cores=cores,
    )


# --- 4 and 5. One client, and where the time goes --------------------------------------------


def _summary_ms(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1_000 for s in seconds]
    return {"median_ms": statistics.median(ms), "p95_ms": _percentile(ms, 0.95), "runs": len(ms)}


def _pieces_args(tenant: str, start: datetime, end: datetime) -> tuple[Any, ...]:
    """Arguments of the pieces query for hourly UTC buckets of ``start``..``end``."""
    hours = [start + HOUR * h for h in range(int((end - start) / HOUR))]
    _, _, need = api_distinct.plan(
        api_distinct.bucket_bounds(hours, start, end),
        distinct.minute_of(start),
        distinct.minute_of(end),
    )
    blocks = list(need)
    return (tenant, [lv for lv, _ in blocks], [b for _, b in blocks], [need[b] for b in blocks])


async def explain_metrics(
    settings: Settings, tenant: str, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    """EXPLAIN ANALYZE of each query of /metrics, as the API runs it (its role, its tenant)."""
    unit = Granularity.HOUR.value
    queries = [
        ("buckets (generate_series)", BUCKETS_SQL, (unit, start, end)),
        (
            "additive measures (stream_hour_answers)",
            additive_sql(0, hourly=True),
            (tenant, unit, start, end, start, end),
        ),
        (
            "distinct counts: bitmap pieces of the buckets and the range (distinct_pieces)",
            api_distinct.FETCH,
            _pieces_args(tenant, start, end),
        ),
        ("freshness", FRESHNESS_SQL, (tenant, start, end)),
    ]
    conn = await asyncpg.connect(settings.api_pg_dsn, server_settings={"TimeZone": "UTC"})
    out = []
    try:
        async with conn.transaction():
            await conn.execute("SELECT set_config('lakehouse.tenant_id', $1, true)", tenant)
            for name, query, args in queries:
                await conn.fetch(query, *args)  # warm the cache as the benchmark did
                text = await conn.fetchval(
                    f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {query}", *args
                )
                plan = orjson.loads(text)[0]
                out.append(
                    {
                        "query": name,
                        "execution_ms": float(plan["Execution Time"]),
                        "planning_ms": float(plan["Planning Time"]),
                        "jit_ms": float(plan.get("JIT", {}).get("Timing", {}).get("Total", 0.0)),
                        "rows": int(plan["Plan"]["Actual Rows"]),
                    }
                )
    finally:
        await conn.close()
    return out


async def python_cost(
    settings: Settings, tenant: str, start: datetime, end: datetime, runs: int
) -> dict[str, float]:
    """Seconds of the API's Python work on one /metrics answer, from rows it would fetch:
    assembling the series (``api.analytics.assemble``), validating and serializing the response."""
    unit = Granularity.HOUR.value
    conn = await asyncpg.connect(settings.api_pg_dsn, server_settings={"TimeZone": "UTC"})
    try:
        async with conn.transaction():
            await conn.execute("SELECT set_config('lakehouse.tenant_id', $1, true)", tenant)
            buckets = [r["b"] for r in await conn.fetch(BUCKETS_SQL, unit, start, end)]
            additive = await conn.fetch(
                additive_sql(0, hourly=True), tenant, unit, start, end, start, end
            )
            counts, total = await api_distinct.distinct_series(conn, tenant, buckets, start, end)
    finally:
        await conn.close()
    assembling, serializing = [], []
    for _ in range(runs):
        (series, totals), seconds = _timed(lambda: assemble(buckets, additive, counts, total))
        answer = {
            "tenant_id": tenant,
            "start": iso(start),
            "end": iso(end),
            "granularity": "hour",
            "timezone": "UTC",
            "currency": "USD",
            "series": series,
            "totals": totals,
            "freshness": {
                "newest_event_time": None,
                "speed_layer_updated_at": None,
                "batch_loaded_at": None,
            },
        }
        # As the route does: JSON-ready values rendered by orjson.
        assembling.append(seconds)
        serializing.append(_timed(partial(render, answer))[1])
    return {
        "buckets": len(buckets),
        "additive_rows": len(additive),
        "assemble_ms": statistics.median(assembling) * 1_000,
        "serialize_ms": statistics.median(serializing) * 1_000,
    }


def single_client(
    settings: Settings, base_url: str, token: str, tenant: str, anchor: datetime, runs: int
) -> dict[str, Any]:
    """The plain GROUP BY and /metrics for the same tenant and window, one at a time."""
    start, end = anchor - WINDOW, anchor
    plain_s, api_s = [], []
    with (
        psycopg.connect(settings.pg_dsn, row_factory=dict_row, autocommit=True) as conn,
        httpx.Client(base_url=base_url, timeout=120) as client,
    ):
        conn.execute("SET TimeZone = 'UTC'")
        plain, _ = _timed(lambda: plain_metrics(conn, tenant, start, end))  # warm-up
        response = client.get("/metrics", params=metrics_params(tenant, end), headers=_auth(token))
        response.raise_for_status()
        check_same_answer(response.content, plain)
        _log(f"same answer: /metrics equals the plain GROUP BY ({tenant}, 30 days hourly)")
        for _ in range(runs):
            plain_s.append(_timed(lambda: plain_metrics(conn, tenant, start, end))[1])
            api_s.append(
                _timed(
                    lambda: client.get(
                        "/metrics", params=metrics_params(tenant, end), headers=_auth(token)
                    ).raise_for_status()
                )[1]
            )
    return {
        "tenant": tenant,
        "plain": _summary_ms(plain_s),
        "api": _summary_ms(api_s),
        "response_kib": len(response.content) / 1024,
        "speedup_median": statistics.median(plain_s) / statistics.median(api_s),
    }


# Issue #16's single-client cases: name, target (ms, p50), parameters from an end hour.
def scenario_params(name: str, tenant: str, end: datetime) -> dict[str, str]:
    """The /metrics request of single-client case ``name`` ending near ``end``."""
    if name == "30 days hourly":
        start, unit, zone = end - WINDOW, "hour", "UTC"
    elif name == "minute over 24 hours":
        start, unit, zone = end - timedelta(hours=24), "minute", "UTC"
    elif name == "30 days hourly, off the grid":
        end = end - timedelta(minutes=7)
        start, unit, zone = end - WINDOW - timedelta(minutes=22), "hour", "UTC"
    elif name == "30 days hourly, Asia/Kathmandu":
        start, unit, zone = end - WINDOW, "hour", "Asia/Kathmandu"
    elif name == "400 days daily, America/New_York":
        start, unit, zone = end - timedelta(days=400), "day", "America/New_York"
    else:
        raise KeyError(name)
    return {
        "tenant_id": tenant,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "granularity": unit,
        "timezone": zone,
    }


SCENARIOS = {
    "30 days hourly": 10.0,
    "minute over 24 hours": 50.0,
    "30 days hourly, off the grid": 50.0,
    "30 days hourly, Asia/Kathmandu": 50.0,
    "400 days daily, America/New_York": 50.0,
}


def scenarios(
    base_url: str, token: str, tenant: str, anchor: datetime, runs: int
) -> dict[str, dict[str, Any]]:
    """Per case, one client: cold (each request new to the cache: another end hour) and warm
    (the same request again), round trip over loopback (an upper bound of server time)."""
    out = {}
    with httpx.Client(base_url=base_url, timeout=120) as client:

        def once(params: dict[str, str]) -> float:
            started = time.perf_counter()
            client.get("/metrics", params=params, headers=_auth(token)).raise_for_status()
            return time.perf_counter() - started

        for number, name in enumerate(SCENARIOS):
            cold = [
                once(scenario_params(name, tenant, anchor - HOUR * (100 + number * runs + run)))
                for run in range(runs)
            ]
            params = scenario_params(name, tenant, anchor - HOUR * 99)
            once(params)
            warm = [once(params) for _ in range(runs)]
            body = client.get("/metrics", params=params, headers=_auth(token)).content
            out[name] = {
                "cold": _summary_ms(cold),
                "warm": _summary_ms(warm),
                "buckets": len(orjson.loads(body)["series"]),
                "response_kib": len(body) / 1024,
                "target_p50_ms": SCENARIOS[name],
            }
    return out


# --- Report ----------------------------------------------------------------------------------


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def report(
    args: argparse.Namespace,
    settings: Settings,
    data: Dataset,
    runs: list[EndpointRun],
    side: dict[str, Any],
    explain: list[dict[str, Any]],
    python: dict[str, float],
    cases: dict[str, dict[str, Any]],
    checks: dict[str, int],
    sizes: dict[str, float],
) -> None:
    """Print Markdown tables, then the JSON summary."""
    metrics = next(r for r in runs if r.endpoint == "metrics")
    dashboards = next(r for r in runs if r.endpoint == "dashboards")
    print(
        f"\nAPI benchmark: {data.events:,} events ({data.sessions:,} sessions) of "
        f"{len(data.tenants)} tenants over {DAYS} days, {args.clients} clients for "
        f"{args.seconds:g} s per endpoint ({args.transport} HTTP client in its own process), "
        f"API pool {settings.api_pool_size}, "
        f"{os.cpu_count()} cores, {host.processor() or host.machine()}\n"
    )
    print("| measure | measured | target |")
    print("| --- | ---: | ---: |")
    for run in runs:
        print(
            f"| `/{run.endpoint}` at {args.clients} clients: p50 / p95 / p99 | "
            f"{run.p50_ms:,.0f} / {run.p95_ms:,.0f} / {run.p99_ms:,.0f} ms | "
            + (f"p99 < {TARGET_P99_MS:.0f} ms: {_met(run.p99_ms < TARGET_P99_MS)}"
               if run.endpoint == "metrics" else "—")
            + " |"
        )  # fmt: skip
        print(
            f"| `/{run.endpoint}` at {args.clients} clients: requests/s, errors | "
            f"{run.rps:,.1f}, {run.errors} of {run.requests:,} | errors 0: "
            f"{_met(run.errors == 0)} |"
        )
    api, plain = side["api"], side["plain"]
    print(
        f"| `/metrics`, one client: median / p95 ({api['runs']} runs) | "
        f"{api['median_ms']:,.0f} / {api['p95_ms']:,.0f} ms | — |"
    )
    print(
        f"| plain GROUP BY, one client: median / p95 | "
        f"{plain['median_ms']:,.0f} / {plain['p95_ms']:,.0f} ms | — |"
    )
    print(
        f"| plain / `/metrics` (medians) | {side['speedup_median']:.1f}x | "
        f"≥ {TARGET_SPEEDUP:.0f}x: {_met(side['speedup_median'] >= TARGET_SPEEDUP)} |"
    )
    print(
        "\n| endpoint | CPU cores used: load generator / API / PostgreSQL / other processes "
        "| mean response |"
    )
    print("| --- | ---: | ---: |")
    for run in runs:
        cores = " / ".join(f"{c:.2f}" for c in run.cpu_cores.values())
        print(f"| `/{run.endpoint}` | {cores} | {run.mean_response_kib:,.1f} KiB |")
    print(f"\nIssue #16 targets ({side['tenant']}, the largest tenant; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}):\n")  # fmt: skip
    print("| measure | measured | target |")
    print("| --- | ---: | ---: |")
    for name, case in cases.items():
        cold, warm = case["cold"], case["warm"]
        target = case["target_p50_ms"]
        print(
            f"| {name} ({case['buckets']:,} buckets), one client: p50 cold / cached | "
            f"{cold['median_ms']:.1f} / {warm['median_ms']:.1f} ms | ≤ {target:.0f} ms: "
            f"cold {_met(cold['median_ms'] <= target)}, "
            f"cached {_met(warm['median_ms'] <= target)} |"
        )
    print(
        f"| {args.clients} dashboards refreshing once a second: p99, answers/s | "
        f"{dashboards.p99_ms:.1f} ms, {dashboards.rps:,.0f}/s | p99 ≤ 50 ms: "
        f"{_met(dashboards.p99_ms <= 50)} |"
    )
    print(
        f"| {args.clients} clients back to back: answers/s, p99 | {metrics.rps:,.0f}/s, "
        f"{metrics.p99_ms:.1f} ms | ≥ 300/s and p99 ≤ 250 ms: "
        f"{_met(metrics.rps >= 300 and metrics.p99_ms <= 250)} |"
    )
    print(
        f"| distinct requests equal to the plain GROUP BY: loaded / after an erasure / after "
        f"late events | {checks['loaded']} / {checks['after_erasure']} / "
        f"{checks['after_late_events']} | ≥ 50 each: "
        f"{_met(min(checks.values()) >= 50)} |"
    )
    print("\n| structure | size |")
    print("| --- | ---: |")
    for name, value in sizes.items():
        unit = "" if name == "pieces" else " MiB"
        print(f"| {name} | {value:,.1f}{unit} |")
    print(f"\n`/metrics` of {side['tenant']} (30 days hourly), where the time goes:\n")
    print("| part | time |")
    print("| --- | ---: |")
    for step in explain:
        print(
            f"| PostgreSQL: {step['query']} ({step['rows']:,} rows) | "
            f"{step['execution_ms']:.1f} ms (planning {step['planning_ms']:.1f} ms, "
            f"JIT {step['jit_ms']:.1f} ms of it) |"
        )
    print(f"| Python: assemble {python['buckets']:,} buckets "
          f"({python['additive_rows']:,} rows) | "
          f"{python['assemble_ms']:.1f} ms |")  # fmt: skip
    print(f"| Python: serialize the response | {python['serialize_ms']:.1f} ms |")
    print(f"| response size | {side['response_kib']:,.0f} KiB |")
    summary = {
        "events": data.events,
        "sessions": data.sessions,
        "tenants": data.tenants,
        "load_seconds": data.seconds,
        "clients": args.clients,
        "transport": args.transport,
        "seconds_per_endpoint": args.seconds,
        "api_pool_size": settings.api_pool_size,
        "concurrent": [asdict(r) for r in runs],
        "single_client": side,
        "explain_metrics": explain,
        "python_metrics": python,
        "cases": cases,
        "same_answer_checks": checks,
        "sizes": sizes,
        "load_average": os.getloadavg(),
        "targets": {
            "metrics_p99_under_50ms_at_clients": metrics.p99_ms < TARGET_P99_MS,
            "metrics_20x_faster_than_plain": side["speedup_median"] >= TARGET_SPEEDUP,
        },
    }
    print(
        "\n" + orjson.dumps(summary, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode()
    )


def main() -> None:
    """Load, check, measure, report."""
    parser = argparse.ArgumentParser(prog="python -m tests.bench.bench_api", description=__doc__)
    parser.add_argument("--events", type=int, default=10_000_000, help="events to load")
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=30, help="measured seconds/endpoint")
    parser.add_argument("--warmup", type=float, default=5, help="warm-up seconds/endpoint")
    parser.add_argument("--runs", type=int, default=10, help="single-client runs of each")
    parser.add_argument(
        "--sample", type=int, default=60, help="distinct requests checked against GROUP BY"
    )
    parser.add_argument(
        "--transport", choices=("raw", "httpx"), default="raw", help="load generator's client"
    )
    args = parser.parse_args()
    with embedded_platform(apps=("api",), api_rate_limit_per_minute=10**9) as settings:
        base_url = f"http://{settings.api_host}:{settings.api_port}"
        data = load(settings, args.events)
        _log(f"loaded {data.events:,} events in {sum(data.seconds.values()):.0f} s")
        tokens = create_tokens(settings, data.tenants)
        largest = data.tenants[0]
        wait_for_api(base_url, tokens[largest], largest, data.anchor)
        sample = sample_requests(data.tenants, data.anchor, args.sample)
        checks = {"loaded": check_sample(settings, base_url, tokens, sample)}
        _log(f"same answer: {checks['loaded']} distinct requests equal the plain GROUP BY")
        side = single_client(settings, base_url, tokens[largest], largest, data.anchor, args.runs)
        _log(f"one client: {orjson.dumps(side).decode()}")
        cases = scenarios(base_url, tokens[largest], largest, data.anchor, args.runs)
        _log(f"cases: {orjson.dumps(cases).decode()}")
        supervised = {
            p.name: p.pid for p in supervisor.process_info(StatePaths.under(settings.state_dir))
        }
        pids = {"api": supervised["api"], "postgres": supervised["postgres"]}
        runs = []
        with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
            phases = (("metrics", 1.0), ("metrics", 0.0), ("events", 0.0))
            for seed, (endpoint, interval) in enumerate(phases):
                spec = DriveSpec(
                    base_url,
                    tokens,
                    endpoint,
                    args.clients,
                    args.seconds,
                    data.anchor,
                    seed,
                    args.transport,
                    interval,
                )
                runs.append(measure_endpoint(pool, spec, args.warmup, pids))
                _log(f"/{endpoint}: {runs[-1]}")
        memory = {
            "api_rss_mib": sum(
                p.memory_info().rss
                for p in [psutil.Process(pids["api"]), *psutil.Process(pids["api"]).children(True)]
            )
            / 2**20
        }
        # Exact after an erasure and after late events (the cache must have dropped answers).
        with connect(settings) as conn:
            top = conn.execute(
                "SELECT customer_customer_id FROM events WHERE tenant_id = %s AND "
                "event_time >= %s GROUP BY 1 ORDER BY count(*) DESC LIMIT 1",
                (largest, data.anchor - timedelta(days=3)),
            ).fetchone()
        assert top is not None
        erased, seconds = _timed(lambda: erase_customer(base_url, tokens[largest], largest, top[0]))
        _log(f"erased {top[0]}: {erased} rows in {seconds:.2f} s")
        checks["after_erasure"] = check_sample(settings, base_url, tokens, sample)
        late, seconds = _timed(lambda: add_late_events(settings, largest, data.anchor, 5_000))
        _log(f"late events: {late} in {seconds:.2f} s")
        time.sleep(0.5)  # the notification reaches the API's listener
        checks["after_late_events"] = check_sample(settings, base_url, tokens, sample)
        _log(f"same answer after erasure and late events: {checks}")
        start, end = data.anchor - WINDOW, data.anchor
        explain = asyncio.run(explain_metrics(settings, largest, start, end))
        python = asyncio.run(python_cost(settings, largest, start, end, args.runs))
        sizes = storage(settings)
    report(args, settings, data, runs, side, explain, python, cases, checks, sizes | memory)


if __name__ == "__main__":
    main()
