"""The PostgreSQL step of a micro-batch: one transaction that counts the batch's new events
into the speed layer's aggregates and records the batch, its offsets, its quarantine counts and
the heartbeat; or nothing, when the batch id is already recorded (a replay).

The rows come shaped by ``jobs.stream.shaping``; this module owns the SQL.
"""

from __future__ import annotations

import time

import orjson
import psycopg
import pyarrow as pa
from psycopg import sql

from include.warehouse.rollups import slot_of
from jobs.stream.shaping import keys_from_csv, lag_seconds, metric_csv, quarantine_counts

Offsets = dict[str, list[int]]


def _add_sums(table: str, column: str, bucket: str) -> str:
    """An upsert adding ``per_minute``'s counts and sums per (tenant, ``bucket``, type)."""
    return f"""
    INSERT INTO {table} AS m (tenant_id, {column}, event_type, events, amount, items)
    SELECT tenant_id, {bucket}, event_type, sum(events), sum(amount), sum(items)
    FROM per_minute
    GROUP BY 1, 2, 3
    ON CONFLICT (tenant_id, {column}, event_type) DO UPDATE SET
        events = m.events + excluded.events,
        amount = m.amount + excluded.amount,
        items = m.items + excluded.items,
        updated_at = now()
    RETURNING 1"""


# Counts a batch's events once (first sight of (tenant, event id)) into the minute and slot
# aggregates of the speed layer; returns (new events, minute rows, slot rows). The fresh keys are
# joined to the batch once, into per-minute sums; the slots add those up (sums are additive),
# where a join per upsert sorted the batch twice more (0.25 s each per 60,000 events).
COUNT_NEW_EVENTS_SQL = f"""
WITH fresh AS (
    INSERT INTO stream_event_keys (tenant_id, event_id, app_id, batch_id)
    SELECT tenant_id, event_id, %(app)s, %(batch)s FROM batch_events
    ON CONFLICT DO NOTHING
    RETURNING tenant_id, event_id
), per_minute AS MATERIALIZED (
    SELECT b.tenant_id, b.minute, b.event_type, count(*) AS events,
           coalesce(sum(b.amount), 0) AS amount, coalesce(sum(b.items), 0) AS items
    FROM batch_events b JOIN fresh USING (tenant_id, event_id)
    GROUP BY 1, 2, 3
), added AS ({_add_sums("stream_minute_metrics", "minute", "minute")}
), slotted AS ({_add_sums("stream_slot_metrics", "slot", slot_of("minute"))}
)
SELECT (SELECT count(*) FROM fresh), (SELECT count(*) FROM added),
       (SELECT count(*) FROM slotted)
"""
CREATE_BATCH_EVENTS_SQL = (
    "CREATE TEMP TABLE batch_events (tenant_id text, event_id uuid, "
    "event_type text, minute timestamptz, amount numeric(20,2), items bigint) "
    "ON COMMIT DROP"
)
# CSV as ``shaping.metric_csv`` writes it: an unquoted empty field is NULL, "" an empty string.
COPY_BATCH_EVENTS_SQL = "COPY batch_events FROM STDIN (FORMAT csv, ENCODING 'UTF8')"


def committed_new_events(conn: psycopg.Connection, app_id: str, batch_id: int) -> int | None:
    """The new events batch ``batch_id`` of ``app_id`` counted, or None if it is not recorded."""
    done = conn.execute(
        "SELECT new_events FROM stream_batches WHERE app_id = %s AND batch_id = %s",
        (app_id, batch_id),
    ).fetchone()
    return None if done is None else int(done[0])


def last_offsets(conn: psycopg.Connection) -> Offsets:
    """The end offsets of the batch committed last (by any app id), or none."""
    row = conn.execute(
        "SELECT end_offset FROM stream_batches ORDER BY committed_at DESC LIMIT 1"
    ).fetchone()
    return {} if row is None else dict(row[0])


def copy_batch_events(conn: psycopg.Connection, valid: pa.Table) -> None:
    """Fill the transaction's ``batch_events`` with the distinct valid events' metric rows."""
    conn.execute(CREATE_BATCH_EVENTS_SQL)
    data = metric_csv(valid)
    with conn.cursor().copy(COPY_BATCH_EVENTS_SQL) as copy:
        if data.size:
            copy.write(memoryview(data))


def count_batch(
    conn: psycopg.Connection,
    *,
    app_id: str,
    job: str,
    batch_id: int,
    valid: pa.Table,
    table: pa.Table,
    quarantined: pa.Table,
    offsets: Offsets,
    entry_sizes: dict[str, list[int]],
    started: float,
) -> int:
    """In one transaction: count ``valid``'s new events (its rows distinct by event key), record
    the batch with its end ``offsets``, add its quarantine counts, beat the heartbeat; return
    the new event count. ``entry_sizes`` (per topic, messages and entries read) goes with the
    batch's record for the source to size its next batch by."""
    with conn.transaction():
        copy_batch_events(conn, valid)
        new_events = conn.execute(
            COUNT_NEW_EVENTS_SQL,
            {"app": app_id, "batch": batch_id},
        ).fetchone()
        assert new_events is not None
        conn.execute(
            "INSERT INTO stream_batches (app_id, batch_id, input_rows, valid_rows, "
            "new_events, quarantined_rows, end_offset, entry_sizes) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (
                app_id,
                batch_id,
                table.num_rows,
                valid.num_rows,
                new_events[0],
                quarantined.num_rows,
                orjson.dumps(offsets).decode(),
                orjson.dumps(entry_sizes).decode(),
            ),
        )
        conn.cursor().executemany(
            "INSERT INTO stream_quarantine_counts AS q (tenant_id, day, reason, messages) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (tenant_id, day, reason) DO UPDATE SET "
            "messages = q.messages + excluded.messages, updated_at = now()",
            quarantine_counts(quarantined),
        )
        elapsed = max(time.monotonic() - started, 1e-6)
        conn.execute(
            "INSERT INTO stream_heartbeat (job, app_id, batch_id, updated_at, input_rows, "
            "rows_per_second, lag_seconds) VALUES (%s, %s, %s, now(), %s, %s, %s) "
            "ON CONFLICT (job) DO UPDATE SET app_id = excluded.app_id, "
            "batch_id = excluded.batch_id, updated_at = excluded.updated_at, "
            "input_rows = excluded.input_rows, rows_per_second = excluded.rows_per_second, "
            "lag_seconds = excluded.lag_seconds",
            (
                job,
                app_id,
                batch_id,
                table.num_rows,
                table.num_rows / elapsed,
                lag_seconds(table),
            ),
        )
    return int(new_events[0])


# Of a tenant's event ids (as the events spell them), those some batch already counted.
COUNTED_KEYS_SQL = (
    "SELECT k FROM unnest(%(ids)s::text[]) AS k WHERE EXISTS (SELECT 1 FROM stream_event_keys "
    "WHERE tenant_id = %(tenant)s AND event_id = k::uuid)"
)


def counted_keys(conn: psycopg.Connection, tenant: str, event_ids: list[str]) -> set[str]:
    """Those of ``tenant``'s ``event_ids`` that ``stream_event_keys`` holds."""
    if not event_ids:
        return set()
    rows = conn.execute(COUNTED_KEYS_SQL, {"ids": event_ids, "tenant": tenant}).fetchall()
    return {str(r[0]) for r in rows}


def new_keys(conn: psycopg.Connection, app_id: str, batch_id: int) -> pa.Table:
    """The (tenant, event id) keys batch ``batch_id`` of ``app_id`` counted first, as a table
    of two string columns (``COPY ... TO STDOUT`` read by Arrow's CSV reader, no Python row)."""
    query = (
        "COPY (SELECT tenant_id, event_id::text FROM stream_event_keys "
        "WHERE app_id = {} AND batch_id = {}) TO STDOUT (FORMAT csv, ENCODING 'UTF8')"
    )
    data = bytearray()
    statement = sql.SQL(query).format(sql.Literal(app_id), sql.Literal(batch_id))
    with conn.cursor().copy(statement) as copy:
        for chunk in copy:
            data += chunk
    return keys_from_csv(bytes(data))
