"""Exactly-once writes of one micro-batch: PostgreSQL (keys, aggregates, batch record) first,
then the Delta tables, each step skipped when it is already committed.

Why this order holds under a crash at any point: Spark replays an uncommitted micro-batch with
the same ``batch_id`` and the same offsets, so the same rows. The PostgreSQL transaction records
the batch id together with the event keys it counted; a replay finds the batch id and skips it,
and reads back from ``stream_event_keys`` exactly which events that batch made new. Each Delta
table records ``(app_id, batch_id)`` as an app transaction in the same commit as the rows; a
replay skips every table whose ``transaction_version(app_id)`` has reached the batch, and
writes no file for it.

The steps are split so the Delta files can be written where the rows are: ``plan_batch`` (the
PostgreSQL step, from the batch's ``SUMMARY_SCHEMA`` columns), ``batch_files`` (Parquet files of
any part of the batch, on an executor or here) and ``commit_batch`` (one commit per table).
``write_batch`` runs the three on one Arrow table; the stream runs the middle one on its
executors (``jobs.stream.job.write_micro_batch``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pyarrow as pa
import pyarrow.compute as pc

from include.events.flatten import v2_only_columns
from include.lake.storage import Location, as_location
from include.warehouse.rollups import slot_of
from jobs.stream.delta_files import commit_files, write_files
from jobs.stream.validate import OUTPUT_SCHEMA, QUARANTINED, VALID

log = logging.getLogger(__name__)

BRONZE = "bronze"
SILVER = "silver"
ITEMS = "event_items"
QUARANTINE = "quarantine"
TABLES = (BRONZE, SILVER, ITEMS, QUARANTINE)
_META = ["topic", "message_id", "publish_time", "ingest_time"]
_PARTITIONS = {
    BRONZE: ["tenant_id", "event_date"],
    SILVER: ["tenant_id", "event_date"],
    ITEMS: ["tenant_id", "event_date"],
    QUARANTINE: ["topic_tenant", "ingest_date"],
}
# What the driver needs of each row: the PostgreSQL transaction's keys, metrics and offsets,
# the choice of the rows silver and items get, the job's metrics. Not the payloads.
_SUMMARY_COLUMNS = [
    "status",
    "reason",
    "topic",
    "topic_tenant",
    "message_id",
    "publish_time",
    "ingest_time",
    "tenant_id",
    "event_id",
    "event_type",
    "event_time",
    "order_total_amount",
]
SUMMARY_SCHEMA = pa.schema(
    [OUTPUT_SCHEMA.field(n) for n in _SUMMARY_COLUMNS] + [pa.field("item_quantity", pa.int64())]
)


def _add_sums(table: str, column: str, bucket: str) -> str:
    """An upsert adding the fresh events' counts and sums per (tenant, ``bucket``, type)."""
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


# Counts a batch's events once (first sight of (tenant, event id)) into the minute and slot
# aggregates of the speed layer; returns (new events, minute rows, slot rows).
COUNT_NEW_EVENTS_SQL = f"""
WITH fresh AS (
    INSERT INTO stream_event_keys (tenant_id, event_id, app_id, batch_id)
    SELECT tenant_id, event_id, %(app)s, %(batch)s FROM batch_events
    ON CONFLICT DO NOTHING
    RETURNING tenant_id, event_id
), added AS ({_add_sums("stream_minute_metrics", "minute", "b.minute")}
), slotted AS ({_add_sums("stream_slot_metrics", "slot", slot_of("b.minute"))}
)
SELECT (SELECT count(*) FROM fresh), (SELECT count(*) FROM added),
       (SELECT count(*) FROM slotted)
"""


@dataclass(frozen=True)
class BatchResult:
    """What one micro-batch did."""

    batch_id: int
    input_rows: int
    valid_rows: int
    new_events: int
    quarantined_rows: int
    skipped_postgres: bool
    skipped_tables: tuple[str, ...]


@dataclass(frozen=True)
class BatchPlan:
    """A micro-batch after its PostgreSQL step: the Delta tables that still need it (the others
    are ``result.skipped_tables``), and the messages (topic, message id) whose rows go to
    silver and event_items."""

    result: BatchResult
    pending: tuple[str, ...]
    silver_messages: frozenset[tuple[str, str]]


def summarize(rows: pa.RecordBatch) -> pa.RecordBatch:
    """The ``SUMMARY_SCHEMA`` columns of validated rows (on an executor, or on the driver)."""
    quantities = [
        sum(line["quantity"] for line in lines or []) for lines in rows.column("items").to_pylist()
    ]
    columns = [rows.column(n) for n in _SUMMARY_COLUMNS]
    return pa.RecordBatch.from_arrays(
        [*columns, pa.array(quantities, type=pa.int64())], schema=SUMMARY_SCHEMA
    )


def batch_files(
    rows: pa.Table,
    lake: Location,
    tables: tuple[str, ...],
    silver_messages: frozenset[tuple[str, str]],
) -> list[dict[str, Any]]:
    """Write the Delta files of validated ``rows`` (all of a batch, or one partition of it) for
    ``tables``; return them as ``jobs.stream.delta_files.FILES_SCHEMA`` rows, uncommitted."""
    status = rows.column("status")
    valid = rows.filter(pc.equal(status, VALID))
    files = []
    if BRONZE in tables:
        files += write_files(BRONZE, _bronze(valid), lake / BRONZE, _PARTITIONS[BRONZE])
    if SILVER in tables or ITEMS in tables:
        mask = [
            key in silver_messages
            for key in zip(
                valid.column("topic").to_pylist(),
                valid.column("message_id").to_pylist(),
                strict=True,
            )
        ]
        new_rows = valid.filter(pa.array(mask, type=pa.bool_()))
        if SILVER in tables:
            files += write_files(SILVER, _silver(new_rows), lake / SILVER, _PARTITIONS[SILVER])
        if ITEMS in tables:
            files += write_files(ITEMS, _items(new_rows), lake / ITEMS, _PARTITIONS[ITEMS])
    if QUARANTINE in tables:
        bad = rows.filter(pc.equal(status, QUARANTINED))
        files += write_files(
            QUARANTINE, _quarantine(bad), lake / QUARANTINE, _PARTITIONS[QUARANTINE]
        )
    return files


def _empty_schema(name: str) -> pa.Schema:
    """Table ``name``'s schema as a batch without rows (and without v2 events) writes it."""
    empty = OUTPUT_SCHEMA.empty_table()
    build = {BRONZE: _bronze, SILVER: _silver, ITEMS: _items, QUARANTINE: _quarantine}[name]
    return build(empty).schema


def _first_occurrences(tenants: list[str], events: list[str]) -> list[int]:
    """Indexes of the first row of each (tenant_id, event_id) in batch order."""
    seen: set[tuple[str, str]] = set()
    keep = []
    for i, key in enumerate(zip(tenants, events, strict=True)):
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return keep


def end_offsets(table: pa.Table, previous: dict[str, list[int]]) -> dict[str, list[int]]:
    """Cumulative per-topic position of the last entry read, after this batch.

    The source plans every range to end on a whole entry, so a batch has read the whole entry
    of its last message: the position is ``[ledger, entry, -1]``. Recording the message's own
    batch index instead would make a restart from this offset wait for the rest of an entry
    that has no more messages.
    """
    offsets = dict(previous)
    for topic, message_id in zip(
        table.column("topic").to_pylist(), table.column("message_id").to_pylist(), strict=True
    ):
        ledger, entry, _batch = (int(p) for p in message_id.split(":"))
        position = [ledger, entry, -1]
        if topic not in offsets or position > offsets[topic]:
            offsets[topic] = position
    return offsets


class LakeSink:
    """Writes micro-batches of validated rows (``jobs.stream.validate.OUTPUT_SCHEMA``)."""

    def __init__(self, lake: Location | Path, dsn: str, app_id: str, job: str = "stream") -> None:
        self.lake = as_location(lake)
        self.dsn = dsn
        self.app_id = app_id
        self.job = job
        self._offsets: dict[str, list[int]] | None = None

    def table(self, name: str) -> Location:
        """Where Delta table ``name`` lives."""
        return self.lake / name

    def committed_version(self, name: str) -> int | None:
        """The last batch id committed to table ``name`` by this app, or None."""
        location = self.table(name)
        if not location.is_delta_table():
            return None
        return location.delta_table().transaction_version(self.app_id)

    # -- PostgreSQL --------------------------------------------------------------------------
    def _last_offsets(self, conn: psycopg.Connection) -> dict[str, list[int]]:
        if self._offsets is None:
            row = conn.execute(
                "SELECT end_offset FROM stream_batches ORDER BY committed_at DESC LIMIT 1"
            ).fetchone()
            self._offsets = {} if row is None else dict(row[0])
        return self._offsets

    def _write_postgres(
        self,
        valid: pa.Table,
        batch_id: int,
        table: pa.Table,
        quarantined: pa.Table,
        started: float,
    ) -> tuple[bool, int]:
        """Count the batch's new events once; return (already committed, new event count)."""
        with psycopg.connect(self.dsn) as conn:
            done = conn.execute(
                "SELECT new_events FROM stream_batches WHERE app_id = %s AND batch_id = %s",
                (self.app_id, batch_id),
            ).fetchone()
            if done is not None:
                return True, int(done[0])
            offsets = end_offsets(table, self._last_offsets(conn))
            with conn.transaction():
                conn.execute(
                    "CREATE TEMP TABLE batch_events (tenant_id text, event_id uuid, "
                    "event_type text, minute timestamptz, amount numeric(20,2), items bigint) "
                    "ON COMMIT DROP"
                )
                with conn.cursor().copy("COPY batch_events FROM STDIN") as copy:
                    for row in _metric_rows(valid):
                        copy.write_row(row)
                new_events = conn.execute(
                    COUNT_NEW_EVENTS_SQL,
                    {"app": self.app_id, "batch": batch_id},
                ).fetchone()
                assert new_events is not None
                conn.execute(
                    "INSERT INTO stream_batches (app_id, batch_id, input_rows, valid_rows, "
                    "new_events, quarantined_rows, end_offset) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    (
                        self.app_id,
                        batch_id,
                        table.num_rows,
                        valid.num_rows,
                        new_events[0],
                        quarantined.num_rows,
                        orjson.dumps(offsets).decode(),
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
                        self.job,
                        self.app_id,
                        batch_id,
                        table.num_rows,
                        table.num_rows / elapsed,
                        _lag_seconds(table),
                    ),
                )
            self._offsets = offsets
            return False, int(new_events[0])

    def _new_keys(self, batch_id: int) -> set[tuple[str, str]]:
        with psycopg.connect(self.dsn) as conn:
            rows = conn.execute(
                "SELECT tenant_id, event_id::text FROM stream_event_keys "
                "WHERE app_id = %s AND batch_id = %s",
                (self.app_id, batch_id),
            ).fetchall()
        return {(r[0], r[1]) for r in rows}

    # -- the batch -------------------------------------------------------------------------
    def plan_batch(self, summary: pa.Table, batch_id: int) -> BatchPlan:
        """Run the PostgreSQL step of a batch (``summary``: its ``SUMMARY_SCHEMA`` rows in batch
        order) and choose what its Delta files hold."""
        started = time.monotonic()
        status = summary.column("status")
        valid_all = summary.filter(pc.equal(status, VALID))
        quarantined = summary.filter(pc.equal(status, QUARANTINED))
        keep = _first_occurrences(
            valid_all.column("tenant_id").to_pylist(), valid_all.column("event_id").to_pylist()
        )
        valid = valid_all.take(pa.array(keep, type=pa.int64()))
        skipped_pg, new_events = self._write_postgres(
            valid, batch_id, summary, quarantined, started
        )
        pending = tuple(
            name
            for name in TABLES
            if (done := self.committed_version(name)) is None or done < batch_id
        )
        chosen: frozenset[tuple[str, str]] = frozenset()
        if SILVER in pending or ITEMS in pending:
            fresh = self._new_keys(batch_id)
            chosen = frozenset(
                (topic, message_id)
                for tenant, event, topic, message_id in zip(
                    valid.column("tenant_id").to_pylist(),
                    valid.column("event_id").to_pylist(),
                    valid.column("topic").to_pylist(),
                    valid.column("message_id").to_pylist(),
                    strict=True,
                )
                if (tenant, event) in fresh
            )
        result = BatchResult(
            batch_id,
            summary.num_rows,
            valid_all.num_rows,
            new_events,
            quarantined.num_rows,
            skipped_pg,
            tuple(name for name in TABLES if name not in pending),
        )
        return BatchPlan(result, pending, chosen)

    def commit_batch(self, plan: BatchPlan, files: list[dict[str, Any]]) -> BatchResult:
        """Commit the batch's files (``FILES_SCHEMA`` rows), each pending table once."""
        skipped = set(plan.result.skipped_tables)
        for name in plan.pending:
            if not commit_files(
                self.table(name),
                [f for f in files if f["table"] == name],
                _empty_schema(name),
                _PARTITIONS[name],
                self.app_id,
                plan.result.batch_id,
            ):
                skipped.add(name)
        return replace(plan.result, skipped_tables=tuple(n for n in TABLES if n in skipped))

    def write_batch(self, table: pa.Table, batch_id: int) -> BatchResult:
        """Write one micro-batch everywhere, exactly once, its files written here."""
        summary = pa.Table.from_batches(
            [summarize(batch) for batch in table.to_batches()], schema=SUMMARY_SCHEMA
        )
        plan = self.plan_batch(summary, batch_id)
        files = batch_files(table, self.lake, plan.pending, plan.silver_messages)
        return self.commit_batch(plan, files)


def lake_caught_up(lake: Location | Path, dsn: str) -> bool:
    """Whether every Delta table holds the last batch PostgreSQL committed (PostgreSQL commits
    a batch first, so a reader that wants both sides waits for this)."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT app_id, batch_id FROM stream_batches ORDER BY committed_at DESC LIMIT 1"
        ).fetchone()
    if row is None:
        return False
    app_id, batch_id = row
    for name in TABLES:
        location = as_location(lake) / name
        if not location.is_delta_table():
            return False
        done = location.delta_table().transaction_version(app_id)
        if done is None or done < batch_id:
            return False
    return True


def _metric_rows(valid: pa.Table) -> list[tuple[Any, ...]]:
    tenants = valid.column("tenant_id").to_pylist()
    events = valid.column("event_id").to_pylist()
    types = valid.column("event_type").to_pylist()
    minutes = pc.floor_temporal(valid.column("event_time"), unit="minute").to_pylist()
    amounts = valid.column("order_total_amount").to_pylist()
    items = valid.column("item_quantity").to_pylist()
    return list(zip(tenants, events, types, minutes, amounts, items, strict=True))


def quarantine_counts(quarantined: pa.Table) -> list[tuple[str, date, str, int]]:
    """(tenant, ingest day, reason, messages) of a batch's quarantined rows.

    A message on a topic that is no tenant's is counted under the tenant ``unknown``.
    """
    if quarantined.num_rows == 0:
        return []
    grouped = (
        pa.table(
            {
                "tenant_id": pc.fill_null(quarantined.column("topic_tenant"), "unknown"),
                "day": pc.cast(quarantined.column("ingest_time"), pa.date32()),
                "reason": quarantined.column("reason"),
            }
        )
        .group_by(["tenant_id", "day", "reason"])
        .aggregate([([], "count_all")])
    )
    return [
        (row["tenant_id"], row["day"], row["reason"], row["count_all"])
        for row in grouped.to_pylist()
    ]


def _event_date(table: pa.Table) -> pa.Array:
    return pc.cast(table.column("event_time"), pa.date32())


def _columns(table: pa.Table, names: dict[str, str]) -> pa.Table:
    """``table`` reduced to ``names`` (old name -> new name), in that order."""
    return table.select(list(names)).rename_columns(list(names.values()))


_BRONZE_COLUMNS = {
    name: name for name in ["tenant_id", "event_id", "schema_version", "event_type", *_META, "key"]
}
_QUARANTINE_COLUMNS = {
    name: name
    for name in [
        "topic",
        "topic_tenant",
        "message_id",
        "publish_time",
        "ingest_time",
        "reason",
        "detail",
    ]
}


def _bronze(valid: pa.Table) -> pa.Table:
    base = _columns(valid, {**_BRONZE_COLUMNS, "value": "payload"})
    return base.append_column("event_date", _event_date(valid))


def _silver(rows: pa.Table) -> pa.Table:
    drop = {"status", "reason", "detail", "topic_tenant", "key", "value", "items"}
    v2_columns = v2_only_columns()
    # Version-2 columns join silver by schema evolution when the first v2 event arrives.
    has_v2 = rows.num_rows > 0 and pc.any(pc.equal(rows.column("schema_version"), 2)).as_py()
    if not has_v2:
        drop |= set(v2_columns)
    kept = rows.select([n for n in rows.column_names if n not in drop])
    kept = kept.append_column("item_count", pc.list_value_length(rows.column("items")))
    return kept.append_column("event_date", _event_date(rows))


def _items(rows: pa.Table) -> pa.Table:
    lines = rows.column("items")
    parents = pc.list_parent_indices(lines)
    flat = pc.list_flatten(lines)
    keys = rows.select(["tenant_id", "event_id", "event_type"]).take(parents)
    table = keys
    for field in flat.type:
        table = table.append_column(field.name, pc.struct_field(flat, field.name))
    event_dates = _event_date(rows).take(parents)
    return table.append_column("event_date", event_dates)


def _quarantine(rows: pa.Table) -> pa.Table:
    base = _columns(rows, {**_QUARANTINE_COLUMNS, "value": "payload"})
    return base.append_column("ingest_date", pc.cast(rows.column("ingest_time"), pa.date32()))


def _lag_seconds(table: pa.Table) -> float | None:
    if table.num_rows == 0:
        return None
    oldest: datetime = pc.min(table.column("publish_time")).as_py()
    return (datetime.now(UTC) - oldest).total_seconds()
