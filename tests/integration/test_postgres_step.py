"""The PostgreSQL step's rows as PostgreSQL reads them: the minute-metric rows sent as Arrow CSV
hold what ``copy.write_row`` of the pre-columnar tuples held (``tests/columnar_reference.py``),
and the fresh keys read back by ``COPY ... TO STDOUT`` are the keys stored. Needs PostgreSQL
only (no Spark)."""

from __future__ import annotations

import random
import uuid

import pyarrow.compute as pc
import pytest

from include.settings import Settings
from include.warehouse.rollups import slot_of
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


# The counting statement before it joined the fresh keys once (one join per upsert): the
# oracle the faster statement is held to.
def _sums_per_join(table: str, column: str, bucket: str) -> str:
    return f"""
    INSERT INTO {table} AS m (tenant_id, {column}, event_type, events, amount, items)
    SELECT b.tenant_id, {bucket}, b.event_type, count(*),
           coalesce(sum(b.amount), 0), coalesce(sum(b.items), 0)
    FROM batch_events b JOIN fresh USING (tenant_id, event_id)
    GROUP BY 1, 2, 3
    ON CONFLICT (tenant_id, {column}, event_type) DO UPDATE SET
        events = m.events + excluded.events,
        amount = m.amount + excluded.amount,
        items = m.items + excluded.items,
        updated_at = now()
    RETURNING 1"""


_JOIN_PER_UPSERT_SQL = f"""
WITH fresh AS (
    INSERT INTO stream_event_keys (tenant_id, event_id, app_id, batch_id)
    SELECT tenant_id, event_id, %(app)s, %(batch)s FROM batch_events
    ON CONFLICT DO NOTHING
    RETURNING tenant_id, event_id
), added AS ({_sums_per_join("stream_minute_metrics", "minute", "b.minute")}
), slotted AS ({_sums_per_join("stream_slot_metrics", "slot", slot_of("b.minute"))}
)
SELECT (SELECT count(*) FROM fresh), (SELECT count(*) FROM added),
       (SELECT count(*) FROM slotted)
"""
_STATE_SQL = [
    "SELECT tenant_id, minute, event_type, events, amount, items FROM stream_minute_metrics "
    "ORDER BY 1, 2, 3",
    "SELECT tenant_id, slot, event_type, events, amount, items FROM stream_slot_metrics "
    "ORDER BY 1, 2, 3",
    "SELECT tenant_id, event_id, app_id, batch_id FROM stream_event_keys ORDER BY 1, 2",
]


@pytest.mark.parametrize("seed", [3, 11])
def test_counting_statement_gives_what_a_join_per_upsert_gave(
    platform: Settings, seed: int
) -> None:
    """Three overlapping batches (repeated keys within and across batches, null amounts and
    types, several minutes and slots) counted by each statement from the same state: the same
    returned counts after every batch, the same minute and slot sums and keys at the end."""
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
    app = f"count-test-{uuid.uuid4().hex[:8]}"
    outcomes = []
    with psycopg.connect(platform.pg_dsn) as conn:
        for statement in (_JOIN_PER_UPSERT_SQL, postgres_step.COUNT_NEW_EVENTS_SQL):
            counts: list[tuple[int, int, int]] = []
            with conn.transaction(force_rollback=True):
                for batch_id, rows in enumerate(batches):
                    postgres_step.copy_batch_events(conn, rows)
                    row = conn.execute(statement, {"app": app, "batch": batch_id}).fetchone()
                    assert row is not None
                    counts.append((row[0], row[1], row[2]))
                    conn.execute("DROP TABLE batch_events")
                state = [conn.execute(q).fetchall() for q in _STATE_SQL]
            outcomes.append((counts, state))
    (old_counts, old_state), (new_counts, new_state) = outcomes
    fresh = [c[0] for c in old_counts]
    assert fresh == [2 * third, valid.num_rows - 2 * third, 0]
    assert new_counts == old_counts
    assert old_state[0] and old_state[1]
    assert new_state == old_state
