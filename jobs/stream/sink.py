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

This module orchestrates; the row shaping is ``jobs.stream.shaping`` (pure Arrow), the SQL is
``jobs.stream.postgres_step``, the Delta files and commits are ``jobs.stream.delta_files``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from include.lake import tables as lake_tables
from include.lake.storage import Location, as_location
from jobs.stream import postgres_step
from jobs.stream.delta_files import commit_files, write_files
from jobs.stream.postgres_step import COUNT_NEW_EVENTS_SQL
from jobs.stream.shaping import (
    MESSAGE_KEY,
    SUMMARY_SCHEMA,
    bronze_rows,
    end_offsets,
    entry_sizes,
    first_occurrences,
    item_rows,
    no_rows,
    quarantine_counts,
    quarantine_rows,
    rows_of_messages,
    rows_where,
    silver_messages,
    silver_rows,
    summarize,
)
from jobs.stream.validate import OUTPUT_SCHEMA, QUARANTINED, VALID

__all__ = [
    "BRONZE",
    "COUNT_NEW_EVENTS_SQL",
    "ITEMS",
    "PARTITIONS",
    "QUARANTINE",
    "SILVER",
    "SUMMARY_SCHEMA",
    "TABLES",
    "BatchPlan",
    "BatchResult",
    "LakeSink",
    "batch_files",
    "end_offsets",
    "lake_caught_up",
    "quarantine_counts",
    "summarize",
]

log = logging.getLogger(__name__)

BRONZE = lake_tables.BRONZE.name
SILVER = lake_tables.SILVER.name
ITEMS = lake_tables.EVENT_ITEMS.name
QUARANTINE = lake_tables.QUARANTINE.name
TABLES = tuple(t.name for t in lake_tables.LAKE_TABLES)
PARTITIONS = {t.name: list(t.partition_by) for t in lake_tables.LAKE_TABLES}
_BUILD = {BRONZE: bronze_rows, SILVER: silver_rows, ITEMS: item_rows, QUARANTINE: quarantine_rows}
NO_MESSAGES = no_rows(pa.schema([OUTPUT_SCHEMA.field(n) for n in MESSAGE_KEY]))


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
    # Whether the new events were the keys the batch's tasks claimed (else the driver's
    # transaction claimed them, or PostgreSQL had recorded the batch already).
    claimed_by_tasks: bool = False


@dataclass(frozen=True)
class BatchPlan:
    """A micro-batch after its PostgreSQL step: the Delta tables that still need it (the others
    are ``result.skipped_tables``), and the messages (a table of topic, message id) whose rows
    go to silver and event_items."""

    result: BatchResult
    pending: tuple[str, ...]
    silver_messages: pa.Table


def batch_files(
    rows: pa.Table,
    lake: Location,
    tables: tuple[str, ...],
    silver_messages: pa.Table,
) -> list[dict[str, Any]]:
    """Write the Delta files of validated ``rows`` (all of a batch, or one partition of it) for
    ``tables``; return them as ``jobs.stream.landing_schema.FILES_SCHEMA`` rows, uncommitted."""
    status = rows.column("status")
    valid = rows_where(rows, pc.equal(status, VALID))
    files = []
    if BRONZE in tables:
        files += write_files(BRONZE, bronze_rows(valid), lake / BRONZE, PARTITIONS[BRONZE])
    if SILVER in tables or ITEMS in tables:
        new_rows = rows_of_messages(valid, silver_messages)
        if SILVER in tables:
            files += write_files(SILVER, silver_rows(new_rows), lake / SILVER, PARTITIONS[SILVER])
        if ITEMS in tables:
            files += write_files(ITEMS, item_rows(new_rows), lake / ITEMS, PARTITIONS[ITEMS])
    if QUARANTINE in tables:
        bad = rows.filter(pc.equal(status, QUARANTINED))
        files += write_files(
            QUARANTINE, quarantine_rows(bad), lake / QUARANTINE, PARTITIONS[QUARANTINE]
        )
    return files


def _empty_schema(name: str) -> pa.Schema:
    """Table ``name``'s schema as a batch without rows (and without v2 events) writes it."""
    return _BUILD[name](no_rows(OUTPUT_SCHEMA)).schema


class LakeSink:
    """Writes micro-batches of validated rows (``jobs.stream.validate.OUTPUT_SCHEMA``)."""

    def __init__(
        self,
        lake: Location | Path,
        dsn: str,
        app_id: str,
        job: str = "stream",
        log_retention_days: int | None = None,
    ) -> None:
        self.lake = as_location(lake)
        self.dsn = dsn
        self.app_id = app_id
        self.job = job
        # Of the tables this sink creates (None: delta-rs's default, 30 days).
        self.log_retention_days = log_retention_days
        self._offsets: dict[str, list[int]] | None = None
        # Open Delta tables, brought up to date (only the new log entries) before every use:
        # opening one replays its whole log since the last checkpoint, several times a batch.
        self._tables: dict[str, DeltaTable] = {}
        # One connection for the stream's life (autocommit: each step opens its own
        # transaction); dropped after any error, so the next batch connects anew.
        self._conn: psycopg.Connection | None = None

    def table(self, name: str) -> Location:
        """Where Delta table ``name`` lives."""
        return self.lake / name

    def _delta_table(self, name: str) -> DeltaTable | None:
        """Table ``name`` at its latest version, or None before it exists."""
        table = self._tables.get(name)
        if table is not None:
            table.update_incremental()
            return table
        location = self.table(name)
        if not location.is_delta_table():
            return None
        table = self._tables[name] = location.delta_table()
        return table

    def committed_version(self, name: str) -> int | None:
        """The last batch id committed to table ``name`` by this app, or None."""
        table = self._delta_table(name)
        return None if table is None else table.transaction_version(self.app_id)

    # -- PostgreSQL --------------------------------------------------------------------------
    def _connection(self) -> psycopg.Connection:
        conn = self._conn
        if conn is None or conn.closed:
            conn = self._conn = psycopg.connect(self.dsn, autocommit=True)
        return conn

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _last_offsets(self, conn: psycopg.Connection) -> dict[str, list[int]]:
        if self._offsets is None:
            self._offsets = postgres_step.last_offsets(conn)
        return self._offsets

    def _write_postgres(
        self,
        valid: pa.Table,
        batch_id: int,
        table: pa.Table,
        quarantined: pa.Table,
        started: float,
        claimed: pa.Table | None = None,
    ) -> tuple[bool, int, bool]:
        """Count the batch's new events once; return (already committed, new event count,
        whether they are the tasks' ``claimed`` rows)."""
        conn = self._connection()
        try:
            done = postgres_step.committed_new_events(conn, self.app_id, batch_id)
            if done is not None:
                return True, done, False
            offsets = end_offsets(table, self._last_offsets(conn))
            new_events, by_tasks = postgres_step.count_batch(
                conn,
                app_id=self.app_id,
                job=self.job,
                batch_id=batch_id,
                valid=valid,
                table=table,
                quarantined=quarantined,
                offsets=offsets,
                entry_sizes=entry_sizes(table),
                started=started,
                claimed=claimed,
            )
        except BaseException:
            self._drop_connection()
            raise
        self._offsets = offsets
        return False, new_events, by_tasks

    def _new_keys(self, batch_id: int) -> set[tuple[str, str]] | pa.Table:
        try:
            return postgres_step.new_keys(self._connection(), self.app_id, batch_id)
        except BaseException:
            self._drop_connection()
            raise

    # -- the batch -------------------------------------------------------------------------
    def plan_batch(
        self, summary: pa.Table, batch_id: int, claimed: pa.Array | None = None
    ) -> BatchPlan:
        """Run the PostgreSQL step of a batch (``summary``: its ``SUMMARY_SCHEMA`` rows in batch
        order) and choose what its Delta files hold. ``claimed`` marks the rows whose keys the
        batch's tasks claimed (``jobs.stream.landing``), None when no task claimed."""
        started = time.monotonic()
        status = summary.column("status")
        valid_all = summary.filter(pc.equal(status, VALID))
        quarantined = summary.filter(pc.equal(status, QUARANTINED))
        valid = valid_all.take(first_occurrences(valid_all))
        claimed_rows = None if claimed is None else summary.filter(claimed)
        skipped_pg, new_events, by_tasks = self._write_postgres(
            valid, batch_id, summary, quarantined, started, claimed_rows
        )
        pending = tuple(
            name
            for name in TABLES
            if (done := self.committed_version(name)) is None or done < batch_id
        )
        chosen = NO_MESSAGES
        if SILVER in pending or ITEMS in pending:
            if by_tasks and claimed_rows is not None:
                # PostgreSQL holds exactly these claims for the batch: they are its new keys.
                chosen = claimed_rows.select(MESSAGE_KEY).combine_chunks()
            elif not skipped_pg and new_events == valid.num_rows:
                # This very transaction found every one of the batch's distinct keys new: they
                # are the keys it recorded, so reading them back would return all of them.
                chosen = valid.select(MESSAGE_KEY).combine_chunks()
            else:
                chosen = silver_messages(valid, self._new_keys(batch_id))
        result = BatchResult(
            batch_id,
            summary.num_rows,
            valid_all.num_rows,
            new_events,
            quarantined.num_rows,
            skipped_pg,
            tuple(name for name in TABLES if name not in pending),
            by_tasks,
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
                PARTITIONS[name],
                self.app_id,
                plan.result.batch_id,
                self.log_retention_days,
                self._tables.get(name),
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
