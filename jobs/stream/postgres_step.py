"""The PostgreSQL step of a micro-batch: one transaction that counts the batch's new events
into the speed layer's aggregates and records the batch, its offsets, its quarantine counts and
the heartbeat; or nothing, when the batch id is already recorded (a replay).

An event is new to the batch that holds its key's claim in ``stream_event_keys`` when the
batch is recorded. The stream's tasks claim their partition's keys as they land it
(``claim_keys``, in parallel, each in its own short transaction), so the driver's transaction
only checks that the claims are the ones the tasks reported and adds up their sums. A claim
whose batch PostgreSQL never recorded is free to take: the batch failed after its tasks
claimed, and runs again under its own id (same rows) or, after a lost checkpoint, under a new
app id. Without the tasks' claims (a batch written on the driver, or claims that do not match),
the transaction claims the batch's keys itself, as one statement over the batch's rows.

The rows come shaped by ``jobs.stream.shaping``; this module owns the SQL.
"""

from __future__ import annotations

import time

import orjson
import psycopg
import pyarrow as pa
from psycopg import sql

from include.warehouse.rollups import slot_of
from jobs.stream.shaping import (
    keys_from_csv,
    lag_seconds,
    metric_csv,
    minute_sums_csv,
    quarantine_counts,
)

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


# A key claimed by a batch PostgreSQL never recorded may be taken (see the module docstring);
# a key some recorded batch counted stays that batch's. Taking it again under the same batch id
# (a task run again) returns it again.
_TAKE_UNRECORDED = """ON CONFLICT (tenant_id, event_id) DO UPDATE SET
        app_id = excluded.app_id, batch_id = excluded.batch_id, first_seen_at = now()
    WHERE NOT EXISTS (SELECT 1 FROM stream_batches s
                      WHERE s.app_id = k.app_id AND s.batch_id = k.batch_id)"""

# A task's claim of its tenant's first occurrences; returns the ids the batch now holds. The
# ids are the events' canonical UUID text (validation refuses any other spelling), so the
# returned text is the text sent.
CLAIM_KEYS_SQL = f"""
INSERT INTO stream_event_keys AS k (tenant_id, event_id, app_id, batch_id)
SELECT %(tenant)s, id::uuid, %(app)s, %(batch)s FROM unnest(%(ids)s::text[]) AS id
{_TAKE_UNRECORDED}
RETURNING event_id::text
"""

# Counts a batch's events once (the keys it claims) into the minute and slot aggregates of the
# speed layer; returns (new events, minute rows, slot rows). The fresh keys are joined to the
# batch once, into per-minute sums; the slots add those up (sums are additive), where a join per
# upsert sorted the batch twice more (0.25 s each per 60,000 events).
COUNT_NEW_EVENTS_SQL = f"""
WITH fresh AS (
    INSERT INTO stream_event_keys AS k (tenant_id, event_id, app_id, batch_id)
    SELECT tenant_id, event_id, %(app)s, %(batch)s FROM batch_events
    {_TAKE_UNRECORDED}
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
# Claims of this (unrecorded) batch on keys it no longer holds: an earlier run of it validated
# its messages differently (the tenants' currencies changed in between).
RELEASE_STRAY_CLAIMS_SQL = """
DELETE FROM stream_event_keys k WHERE k.app_id = %(app)s AND k.batch_id = %(batch)s
AND NOT EXISTS (SELECT 1 FROM batch_events b
                WHERE b.tenant_id = k.tenant_id AND b.event_id = k.event_id)
"""
CLAIMS_SQL = (
    "SELECT count(*) FROM stream_event_keys WHERE app_id = %(app)s AND batch_id = %(batch)s"
)
# The tasks' claimed events, summed per (tenant, minute, type) in Arrow
# (``shaping.minute_sums_csv``), added to the minute and slot aggregates.
CREATE_PER_MINUTE_SQL = (
    "CREATE TEMP TABLE per_minute (tenant_id text, minute timestamptz, event_type text, "
    "events bigint, amount numeric(38,2), items bigint) ON COMMIT DROP"
)
COPY_PER_MINUTE_SQL = "COPY per_minute FROM STDIN (FORMAT csv, ENCODING 'UTF8')"
ADD_CLAIMED_SUMS_SQL = f"""
WITH added AS ({_add_sums("stream_minute_metrics", "minute", "minute")}
), slotted AS ({_add_sums("stream_slot_metrics", "slot", slot_of("minute"))}
)
SELECT (SELECT count(*) FROM added), (SELECT count(*) FROM slotted)
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


def _count_claimed(
    conn: psycopg.Connection, app_id: str, batch_id: int, claimed: pa.Table | None
) -> int | None:
    """Add the tasks' ``claimed`` rows to the aggregates, if they are exactly the keys the batch
    holds in ``stream_event_keys``; return their count, or None (nothing done) if not."""
    if claimed is None:
        return None
    held = conn.execute(CLAIMS_SQL, {"app": app_id, "batch": batch_id}).fetchone()
    if held is None or int(held[0]) != claimed.num_rows:
        # Not the tasks' claims (another run of the batch left some, or a task did not
        # claim): the batch claims its keys itself.
        return None
    if claimed.num_rows:
        conn.execute(CREATE_PER_MINUTE_SQL)
        with conn.cursor().copy(COPY_PER_MINUTE_SQL) as copy:
            copy.write(memoryview(minute_sums_csv(claimed)))
        conn.execute(ADD_CLAIMED_SUMS_SQL)
    return int(claimed.num_rows)


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
    claimed: pa.Table | None = None,
) -> tuple[int, bool]:
    """In one transaction: count ``valid``'s new events (its rows distinct by event key), record
    the batch with its end ``offsets``, add its quarantine counts, beat the heartbeat; return
    the new event count and whether it is the tasks' ``claimed`` rows (those of ``valid`` the
    batch's tasks claimed with ``claim_keys``; None when they did not). ``entry_sizes`` (per
    topic, messages and entries read) goes with the batch's record for the source to size its
    next batch by."""
    with conn.transaction():
        by_tasks = _count_claimed(conn, app_id, batch_id, claimed)
        if by_tasks is None:
            copy_batch_events(conn, valid)
            params = {"app": app_id, "batch": batch_id}
            conn.execute(RELEASE_STRAY_CLAIMS_SQL, params)
            counted = conn.execute(COUNT_NEW_EVENTS_SQL, params).fetchone()
            assert counted is not None
            new_events = int(counted[0])
        else:
            new_events = by_tasks
        conn.execute(
            "INSERT INTO stream_batches (app_id, batch_id, input_rows, valid_rows, "
            "new_events, quarantined_rows, end_offset, entry_sizes) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (
                app_id,
                batch_id,
                table.num_rows,
                valid.num_rows,
                new_events,
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
    return new_events, by_tasks is not None


def claim_keys(
    conn: psycopg.Connection, app_id: str, batch_id: int, tenant: str, event_ids: list[str]
) -> set[str]:
    """Claim ``tenant``'s ``event_ids`` for batch ``batch_id`` of ``app_id`` (autocommit: the
    claim holds from here); return those the batch holds, the others some recorded batch
    counted."""
    if not event_ids:
        return set()
    params = {"tenant": tenant, "ids": event_ids, "app": app_id, "batch": batch_id}
    return {str(r[0]) for r in conn.execute(CLAIM_KEYS_SQL, params).fetchall()}


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
