"""The PostgreSQL step's rows as PostgreSQL reads them: the minute-metric rows sent as Arrow CSV
hold what ``copy.write_row`` of the pre-columnar tuples held (``tests/columnar_reference.py``),
and the fresh keys read back by ``COPY ... TO STDOUT`` are the keys stored. Needs PostgreSQL
only (no Spark)."""

from __future__ import annotations

import random
import uuid

import pyarrow.compute as pc

from include.settings import Settings
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
            read = postgres_step.new_keys(platform.pg_dsn, app, 4)
            pairs = zip(
                *(read.column(n).to_pylist() for n in ("tenant_id", "event_id")), strict=True
            )
            assert set(pairs) == keys and read.num_rows == len(keys)
            assert postgres_step.new_keys(platform.pg_dsn, app, 5).num_rows == 0
        finally:
            conn.execute("DELETE FROM stream_event_keys WHERE app_id = %s", (app,))
            conn.commit()
