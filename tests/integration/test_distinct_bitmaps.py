"""The distinct-count bitmaps (issue #16) in PostgreSQL, exact against plain ``count(DISTINCT)``
over the raw events: loads in the loader's way (staging table, the loader's keep condition),
late events and a replay, an erasure through the API's own function, a sweep-style repair;
after each step every stored piece equals the piece rebuilt from ``events`` alone, and
``/metrics``' query function gives per bucket and in total what a plain GROUP BY gives, over
many granularities, zones and alignments. Needs PostgreSQL only (no Spark)."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

from api.analytics import metrics_for
from api.db import Database
from api.models import Granularity
from api.routes.erasure import erase_in_postgres
from include.settings import Settings
from include.tenants import register_tenant
from include.warehouse import distinct
from include.warehouse.erasure import ERASED_ROWS
from include.warehouse.partitions import Month, ensure_partitions

ALPHA, BETA = "bitmap_alpha", "bitmap_beta"
BASE = datetime.now(UTC).replace(second=0, microsecond=0, minute=0) - timedelta(days=4)
KEEP = sql.SQL("NOT " + ERASED_ROWS["events"])
ZONES = ("UTC", "Europe/Paris", "Asia/Kolkata", "Asia/Kathmandu", "America/New_York")


def _events(rng: random.Random, tenant: str, n: int, hours: float) -> list[dict[str, Any]]:
    """``n`` events of ``tenant`` within ``hours`` of BASE: sessions of a few events, most with a
    customer, some anonymous, a few without a session."""
    out = []
    for _ in range(n):
        session = rng.randrange(400)
        customer = None if session % 5 == 0 else f"c{session % 90}"
        out.append(
            {
                "tenant_id": tenant,
                "event_id": uuid.uuid4(),
                "event_time": BASE + timedelta(seconds=rng.uniform(0, hours * 3600)),
                "schema_version": 1,
                "event_type": rng.choice(["page_view", "product_view", "purchase", "add_to_cart"]),
                "session_id": None if rng.random() < 0.03 else f"{tenant}-s{session}",
                "customer_customer_id": customer,
            }
        )
    return out


def _load(conn: psycopg.Connection[Any], rows: list[dict[str, Any]]) -> None:
    """What the loader's commit does for the events: stage, insert what is new, bitmaps."""
    columns = list(rows[0])
    conn.execute("TRUNCATE load_staging_events")
    with conn.cursor().copy(
        sql.SQL("COPY load_staging_events ({}) FROM STDIN").format(
            sql.SQL(", ").join(map(sql.Identifier, columns))
        )
    ) as copy:
        for row in rows:
            copy.write_row([row[c] for c in columns])
    with conn.transaction():
        ensure_partitions(conn, "events", {Month.of(r["event_time"].date()) for r in rows})
        conn.execute(
            sql.SQL(
                "INSERT INTO events ({c}) SELECT {c} FROM load_staging_events s WHERE {keep} "
                "ON CONFLICT DO NOTHING"
            ).format(c=sql.SQL(", ").join(map(sql.Identifier, columns)), keep=KEEP)
        )
        distinct.apply_load(conn, KEEP)
    conn.execute("TRUNCATE load_staging_events")


def _assert_pieces_rebuild(conn: psycopg.Connection[Any]) -> None:
    for tenant in (ALPHA, BETA):
        stored = distinct.stored_pieces(conn, tenant)
        assert stored, tenant
        assert stored == distinct.rebuild_pieces(conn, tenant), tenant


PLAIN = """
SELECT date_trunc(%(unit)s, event_time) AS b,
       count(DISTINCT session_id),
       count(DISTINCT session_id) FILTER (WHERE event_type = 'purchase'),
       count(DISTINCT customer_customer_id)
FROM events WHERE tenant_id = %(t)s AND event_time >= %(a)s AND event_time < %(b)s
GROUP BY GROUPING SETS ((1), ())
"""


def _plain(
    conn: psycopg.Connection[Any], tenant: str, a: datetime, b: datetime, unit: str, zone: str
) -> tuple[dict[datetime, tuple[int, int, int]], tuple[int, int, int]]:
    conn.execute("SELECT set_config('TimeZone', %s, false)", (zone,))
    rows = conn.execute(PLAIN, {"unit": unit, "t": tenant, "a": a, "b": b}).fetchall()
    per = {r[0]: (r[1], r[2], r[3]) for r in rows if r[0] is not None}
    total = next(((r[1], r[2], r[3]) for r in rows if r[0] is None), (0, 0, 0))
    return per, total


def _requests(rng: random.Random, count: int) -> list[tuple[str, datetime, datetime, str]]:
    out = []
    for i in range(count):
        unit = ("minute", "hour", "day")[i % 3]
        zone = ZONES[i % len(ZONES)]
        offset = timedelta(minutes=rng.choice([0, 7, 15, 30, 45, 61, rng.randrange(1, 2000)]))
        span = {
            "minute": timedelta(minutes=rng.randrange(30, 1_400)),
            "hour": timedelta(hours=rng.randrange(2, 90), minutes=rng.choice([0, 13])),
            "day": timedelta(days=rng.randrange(1, 6), minutes=rng.choice([0, 45])),
        }[unit]
        start = BASE - timedelta(hours=2) + offset
        out.append((unit, start, start + span, zone))
    return out


async def _api_answers(
    settings: Settings, tenant: str, requests: list[tuple[str, datetime, datetime, str]]
) -> list[tuple[list[dict[str, Any]], dict[str, Any]]]:
    db = Database(settings)
    await db.connect_forever()
    try:
        out = []
        for unit, start, end, zone in requests:
            async with db.tenant(tenant, timezone=zone) as conn:
                out.append(await metrics_for(conn, tenant, start, end, Granularity(unit)))
        return out
    finally:
        await db.close()


def _assert_api_equals_plain(settings: Settings, conn: psycopg.Connection[Any], seed: int) -> int:
    rng = random.Random(seed)
    requests = _requests(rng, 60)
    checked = 0
    for tenant in (ALPHA, BETA):
        answers = asyncio.run(_api_answers(settings, tenant, requests))
        for (unit, start, end, zone), (series, totals) in zip(requests, answers, strict=True):
            per, total = _plain(conn, tenant, start, end, unit, zone)
            starts = [datetime.fromisoformat(p["bucket_start"]) for p in series]
            for point, bucket in zip(series, starts, strict=True):
                want = per.get(bucket, (0, 0, 0))
                got = (point["sessions"], point["purchasing_sessions"], point["unique_customers"])
                assert got == want, (tenant, unit, zone, start, end, bucket)
            assert sum(1 for b in starts if b in per) == len(per)
            got_total = (totals["sessions"], totals["purchasing_sessions"],
                         totals["unique_customers"])  # fmt: skip
            assert got_total == total, (tenant, unit, zone, start, end)
            checked += 1
    conn.execute("SET TimeZone = 'UTC'")
    return checked


@pytest.fixture(scope="module")
def loaded(platform: Settings) -> Settings:
    with psycopg.connect(platform.pg_dsn, autocommit=True) as conn:
        for tenant in (ALPHA, BETA):
            register_tenant(conn, tenant, tenant, "EUR")
            for table in ("events", "distinct_pieces", "distinct_ids", "distinct_id_next"):
                conn.execute(f"DELETE FROM {table} WHERE tenant_id = %s", (tenant,))
    return platform


def test_bitmaps_stay_exact_through_loads_late_events_replays_and_erasure(
    loaded: Settings,
) -> None:
    rng = random.Random(16)
    with psycopg.connect(loaded.pg_dsn, autocommit=True) as conn:
        first = _events(rng, ALPHA, 3_000, 48) + _events(rng, BETA, 1_500, 48)
        _load(conn, first)
        _assert_pieces_rebuild(conn)
        # Late events (before everything loaded so far, and inside it) with a replay of the
        # first batch's rows.
        late = [
            {**e, "event_time": e["event_time"] - timedelta(hours=30)}
            for e in _events(rng, ALPHA, 800, 60)
        ] + _events(rng, BETA, 500, 70)
        _load(conn, late + rng.sample(first, 1_000))
        _assert_pieces_rebuild(conn)
        ids = conn.execute(
            "SELECT tenant_id, kind, count(*), count(DISTINCT id), max(id) FROM distinct_ids "
            "WHERE tenant_id IN (%s, %s) GROUP BY 1, 2",
            (ALPHA, BETA),
        ).fetchall()
        for _, _, n, unique, top in ids:
            assert n == unique == top + 1  # dense ids, one per key
        assert _assert_api_equals_plain(loaded, conn, seed=1) >= 100

        # Erasure through the API's function, as the API role in the tenant's context.
        customer = conn.execute(
            "SELECT customer_customer_id FROM events WHERE tenant_id = %s "
            "AND customer_customer_id IS NOT NULL GROUP BY 1 ORDER BY count(*) DESC LIMIT 1",
            (ALPHA,),
        ).fetchone()
        assert customer is not None

        async def erase() -> int:
            db = Database(loaded)
            await db.connect_forever()
            try:
                async with db.tenant(ALPHA) as api_conn:
                    return await erase_in_postgres(api_conn, ALPHA, customer[0])
            finally:
                await db.close()

        assert asyncio.run(erase()) > 0
        _assert_pieces_rebuild(conn)
        assert conn.execute(
            "SELECT count(*) FROM distinct_ids WHERE tenant_id = %s AND key = %s",
            (ALPHA, customer[0]),
        ).fetchone() == (0,)
        # A sweep-style repair: events deleted behind the pieces' back, then repaired.
        with conn.transaction():
            gone = conn.execute(
                f"DELETE FROM events WHERE tenant_id = %s AND customer_customer_id = 'c7' "
                f"RETURNING {distinct.minute_expr('event_time')}, session_id",
                (BETA,),
            ).fetchall()
            assert gone
            distinct.repair_sync(
                conn, BETA, sorted({s for _, s in gone if s}), ["c7"], [m for m, _ in gone]
            )
        _assert_pieces_rebuild(conn)
        assert _assert_api_equals_plain(loaded, conn, seed=2) >= 100
        # Loading the erased customer's events again (a replay of old rows) brings none back:
        # the API recorded the customer's hash, which the loader's condition skips.
        _load(conn, [e for e in first if e["tenant_id"] == ALPHA])
        _assert_pieces_rebuild(conn)


def test_a_tenant_context_reads_no_other_tenants_pieces(loaded: Settings) -> None:
    async def read() -> tuple[int, int]:
        db = Database(loaded)
        await db.connect_forever()
        try:
            async with db.tenant(ALPHA) as conn:
                seen = await conn.fetchval(
                    "SELECT count(*) FROM distinct_pieces WHERE tenant_id = $1", BETA
                )
                _, totals = await metrics_for(
                    conn, BETA, BASE - timedelta(days=1), BASE + timedelta(days=5),
                    Granularity.DAY,
                )  # fmt: skip
                return int(seen), int(totals["sessions"])
        finally:
            await db.close()

    with psycopg.connect(loaded.pg_dsn, autocommit=True) as conn:
        if not conn.execute(
            "SELECT 1 FROM distinct_pieces WHERE tenant_id = %s LIMIT 1", (BETA,)
        ).fetchone():
            _load(conn, _events(random.Random(2), BETA, 300, 24))
    assert asyncio.run(read()) == (0, 0)


HOURS_FROM_SLOTS = """
SELECT tenant_id, date_bin('1 hour', slot, timestamptz '2000-01-01 00:00:00+00') AS hour,
       event_type, sum(events), sum(amount), sum(items)
FROM stream_slot_metrics GROUP BY 1, 2, 3 HAVING sum(events) <> 0
EXCEPT
SELECT tenant_id, hour, event_type, events, amount, items FROM stream_hour_metrics
"""


ANSWERS_FROM_HOURS = """
SELECT (SELECT count(*) FROM (SELECT * FROM stream_hour_answers_derived
                              EXCEPT SELECT * FROM stream_hour_answers) a),
       (SELECT count(*) FROM (SELECT * FROM stream_hour_answers
                              EXCEPT SELECT * FROM stream_hour_answers_derived) b)
"""


def test_hour_sums_follow_the_streams_own_statement(platform: Settings) -> None:
    """The stream's batch statement (inserts, then upserts that update) keeps
    stream_hour_metrics equal to its slots summed per UTC hour, with no change to the stream."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from jobs.stream import postgres_step
    from jobs.stream.shaping import SUMMARY_SCHEMA, summarize
    from tests import columnar_reference as ref
    from tests.random_batches import random_batch

    table = random_batch(random.Random(9), 4_000, distinct_events=2_000)
    summary = pa.Table.from_batches([summarize(b) for b in table.to_batches()], SUMMARY_SCHEMA)
    valid = ref.plan_valid(summary)
    for column in ("event_id", "tenant_id", "event_type", "event_time"):  # never counted
        valid = valid.filter(pc.is_valid(valid[column]))
    app = f"hour-test-{uuid.uuid4().hex[:8]}"
    half = valid.num_rows // 2
    with psycopg.connect(platform.pg_dsn) as conn:
        for batch, rows in enumerate((valid.slice(0, half), valid.slice(half), valid)):
            with conn.transaction():
                postgres_step.copy_batch_events(conn, rows)
                conn.execute(postgres_step.COUNT_NEW_EVENTS_SQL, {"app": app, "batch": batch})
                conn.execute("DROP TABLE batch_events")
                # Recorded, as count_batch records it: a later batch may not take its keys.
                conn.execute(
                    "INSERT INTO stream_batches (app_id, batch_id, input_rows, valid_rows, "
                    "new_events, quarantined_rows, end_offset) VALUES (%s, %s, 0, 0, 0, 0, '{}')",
                    (app, batch),
                )
        assert conn.execute("SELECT count(*) FROM stream_hour_metrics").fetchone() != (0,)
        assert conn.execute(HOURS_FROM_SLOTS).fetchall() == []
        reverse = conn.execute(
            "SELECT tenant_id, hour, event_type FROM stream_hour_metrics EXCEPT "
            "SELECT tenant_id, date_bin('1 hour', slot, timestamptz '2000-01-01 00:00:00+00'), "
            "event_type FROM stream_slot_metrics"
        ).fetchall()
        assert reverse == []
        assert conn.execute(ANSWERS_FROM_HOURS).fetchone() == (0, 0)
        conn.execute("DELETE FROM stream_event_keys WHERE app_id = %s", (app,))
        conn.execute("DELETE FROM stream_batches WHERE app_id = %s", (app,))
        conn.commit()


def test_emptying_events_empties_the_pieces(loaded: Settings) -> None:
    with psycopg.connect(loaded.pg_dsn, autocommit=True) as conn:
        _load(conn, _events(random.Random(4), ALPHA, 200, 5))
        assert conn.execute("SELECT count(*) FROM distinct_pieces").fetchone() != (0,)
        conn.execute("TRUNCATE events")
        for table in ("distinct_pieces", "distinct_ids", "distinct_id_next"):
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,), table
