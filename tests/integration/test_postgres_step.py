"""The PostgreSQL step's rows as PostgreSQL reads them: the minute-metric rows sent as Arrow CSV
hold what ``copy.write_row`` of the pre-columnar tuples held (``tests/columnar_reference.py``),
and the fresh keys read back by ``COPY ... TO STDOUT`` are the keys stored. Needs PostgreSQL
only (no Spark)."""

from __future__ import annotations

import random
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pyarrow.compute as pc
import pytest

from include.settings import Settings
from include.warehouse.rollups import SLOT_MINUTES
from jobs.stream import postgres_step
from jobs.stream.shaping import SUMMARY_SCHEMA, summarize
from tests import columnar_reference as ref
from tests.random_batches import TENANTS, random_batch

_ALL = "tenant_id, event_id, event_type, minute, amount, items"


def test_metric_rows_and_fresh_keys_survive_the_trip_through_postgres(platform: Settings) -> None:
    import psycopg
    import pyarrow as pa

    table = random_batch(random.Random(7), 3_000, distinct_events=1_200)
    summary = pa.Table.from_batches([summarize(b) for b in table.to_batches()], SUMMARY_SCHEMA)
    valid = ref.plan_valid(summary)
    assert valid.num_rows > 500 and pc.sum(pc.is_null(valid.column("event_type"))).as_py() > 0
    with psycopg.connect(platform.pg_dsn) as conn:
        # A session time zone that is not UTC: both paths must carry the instant, not the text.
        conn.execute("SET TimeZone = 'America/Sao_Paulo'")
        with conn.transaction():
            postgres_step.copy_batch_events(conn, valid)
            conn.execute("CREATE TEMP TABLE loop_events (LIKE batch_events) ON COMMIT DROP")
            with conn.cursor().copy("COPY loop_events FROM STDIN") as copy:
                for row in ref.metric_rows(valid):
                    copy.write_row(row)
            order = f"ORDER BY {_ALL}"
            arrow = conn.execute(f"SELECT {_ALL} FROM batch_events {order}").fetchall()
            loop = conn.execute(f"SELECT {_ALL} FROM loop_events {order}").fetchall()
            assert len(arrow) == valid.num_rows
            assert arrow == loop
            # Row for row in batch order too, and empty strings stay empty, NULLs NULL.
            same = conn.execute(
                "SELECT count(*) FROM (SELECT row_number() OVER () n, * FROM batch_events) a "
                "JOIN (SELECT row_number() OVER () n, * FROM loop_events) b USING (n) "
                "WHERE (a.*) IS NOT DISTINCT FROM (b.*)"
            ).fetchone()
            assert same == (valid.num_rows,)
            empties = conn.execute(
                "SELECT count(*) FILTER (WHERE event_type = ''), "
                "count(*) FILTER (WHERE event_type IS NULL) FROM batch_events"
            ).fetchone()
            assert empties is not None and empties[0] > 0 and empties[1] > 0

        app = f"columnar-test-{uuid.uuid4().hex[:8]}"
        keys = {(t or "t", str(uuid.uuid4())) for t in TENANTS for _ in range(300)}
        try:
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO stream_event_keys (tenant_id, event_id, app_id, batch_id) "
                    "VALUES (%s, %s, %s, 4)",
                    [(t, e, app) for t, e in keys],
                )
            conn.commit()
            read = postgres_step.new_keys(conn, app, 4)
            pairs = zip(
                *(read.column(n).to_pylist() for n in ("tenant_id", "event_id")), strict=True
            )
            assert set(pairs) == keys and read.num_rows == len(keys)
            assert postgres_step.new_keys(conn, app, 5).num_rows == 0
        finally:
            conn.execute("DELETE FROM stream_event_keys WHERE app_id = %s", (app,))
            conn.commit()


_MINUTES_SQL = (
    "SELECT tenant_id, minute, event_type, events, amount, items FROM stream_minute_metrics"
)
_SLOTS_SQL = "SELECT tenant_id, slot, event_type, events, amount, items FROM stream_slot_metrics"


def _sums(rows: list[tuple[Any, ...]]) -> Counter[tuple[Any, ...]]:
    """(tenant, bucket, type, measure) -> value of a metric table's rows."""
    sums: Counter[tuple[Any, ...]] = Counter()
    for tenant, bucket, kind, events, amount, items in rows:
        for measure, value in (("events", events), ("amount", amount), ("items", items)):
            sums[(tenant, bucket, kind, measure)] += value
    return sums


def _slot(minute: datetime) -> datetime:
    # 2000-01-01 (the slots' origin) is on the 15-minute grid of the epoch.
    seconds = SLOT_MINUTES * 60
    return datetime.fromtimestamp(int(minute.timestamp()) // seconds * seconds, UTC)


@pytest.mark.parametrize("seed", [3, 11])
def test_the_counting_statement_counts_each_key_once_into_minutes_and_slots(
    platform: Settings, seed: int
) -> None:
    """Three overlapping batches (keys repeated across batches, null amounts and item counts,
    empty event types, many minutes and slots): what the statement returns and adds to the
    minute and slot sums is what counting each (tenant, event id) at its first batch gives,
    computed here in Python from the rows."""
    import psycopg
    import pyarrow as pa

    table = random_batch(random.Random(seed), 4_000, distinct_events=1_500)
    summary = pa.Table.from_batches([summarize(b) for b in table.to_batches()], SUMMARY_SCHEMA)
    valid = ref.plan_valid(summary)
    for column in ("event_id", "tenant_id", "event_type", "event_time"):  # never null in valid
        valid = valid.filter(pc.is_valid(valid[column]))
    assert pc.sum(pc.is_null(valid.column("order_total_amount"))).as_py() > 0
    # Keys no other test counted: the batches overlap only where the slices do.
    ids = pa.array([str(uuid.uuid4()) for _ in range(valid.num_rows)], pa.string())
    valid = valid.set_column(valid.schema.get_field_index("event_id"), "event_id", ids)
    third = valid.num_rows // 3
    batches = [valid.slice(0, 2 * third), valid.slice(third), valid]

    seen: set[tuple[str, str]] = set()
    expected_fresh = []
    minutes: Counter[tuple[Any, ...]] = Counter()
    slots: Counter[tuple[Any, ...]] = Counter()
    for rows in batches:
        fresh = 0
        for row in rows.to_pylist():
            if (row["tenant_id"], row["event_id"]) in seen:
                continue
            seen.add((row["tenant_id"], row["event_id"]))
            fresh += 1
            minute = row["event_time"].replace(second=0, microsecond=0)
            amount, items = row["order_total_amount"] or 0, row["item_quantity"] or 0
            for bucket, sums in ((minute, minutes), (_slot(minute), slots)):
                key = (row["tenant_id"], bucket, row["event_type"])
                sums[(*key, "events")] += 1
                sums[(*key, "amount")] += amount
                sums[(*key, "items")] += items
        expected_fresh.append(fresh)
    assert expected_fresh == [2 * third, valid.num_rows - 2 * third, 0]

    app = f"count-test-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(platform.pg_dsn) as conn, conn.transaction(force_rollback=True):
        before = (
            _sums(conn.execute(_MINUTES_SQL).fetchall()),
            _sums(conn.execute(_SLOTS_SQL).fetchall()),
        )
        returned = []
        for batch_id, rows in enumerate(batches):
            postgres_step.copy_batch_events(conn, rows)
            row = conn.execute(
                postgres_step.COUNT_NEW_EVENTS_SQL, {"app": app, "batch": batch_id}
            ).fetchone()
            assert row is not None
            returned.append(row[0])
            conn.execute("DROP TABLE batch_events")
        after = (
            _sums(conn.execute(_MINUTES_SQL).fetchall()),
            _sums(conn.execute(_SLOTS_SQL).fetchall()),
        )
        keys = conn.execute(
            "SELECT batch_id, count(*) FROM stream_event_keys WHERE app_id = %s GROUP BY 1",
            (app,),
        ).fetchall()
    assert returned == expected_fresh
    assert sorted(keys) == [(0, expected_fresh[0]), (1, expected_fresh[1])]
    for (old, new), expected in zip(zip(before, after, strict=True), (minutes, slots), strict=True):
        added = {k: v - old.get(k, 0) for k, v in new.items()}
        assert {k: v for k, v in added.items() if v != 0} == {
            k: v for k, v in expected.items() if v != 0
        }
