"""Incremental loads of the lake into the PostgreSQL analytics tables, exactly once.

One load of one table runs in three steps, under a PostgreSQL advisory lock per table (loads
and replays of a table never overlap, because they share its staging table):

1. **plan**: the table's watermark (the last Delta version loaded) and the files its source
   table gained since (``include.lake.changes``);
2. **stage**: Spark reads those files and its executors ``COPY`` the rows into the unlogged
   staging table, which the step empties first;
3. **commit**: one transaction creates the monthly partitions the rows need, inserts the staged
   rows with ``ON CONFLICT DO NOTHING`` on the table's key (skipping erased customers' rows),
   refreshes the ``session_slots`` and ``activity_slots`` rollups, and moves the watermark.

A crash before step 3 commits leaves the watermark where it was: the next load stages the same
files again (into an emptied staging table). A crash after it leaves nothing to redo. Rows
already present (a replay loaded them, or a file holds a row twice) are not inserted twice.
"""

from __future__ import annotations

import io
import logging
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
from deltalake import DeltaTable
from psycopg import sql
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as sf

from include.lake.changes import added_since, current_version
from include.settings import Settings
from include.warehouse.erasure import ERASED_ROWS, FORGET_SKIPPED_EVENTS
from include.warehouse.partitions import Month, ensure_partitions
from include.warehouse.rollups import ACTIVITY_REFRESH, SESSION_SLOTS_UPSERT
from include.warehouse.tables import EVENTS, AnalyticsTable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadPlan:
    """What one load of ``table`` reads: Parquet ``files`` under ``base_dir`` (whose Hive-style
    folders carry the partition columns). A watermark load reads the files its source gained
    after ``from_version`` and moves the watermark to ``to_version``; a replay has no versions
    and leaves the watermark alone."""

    table: AnalyticsTable
    base_dir: Path
    from_version: int | None
    to_version: int | None
    files: list[Path] = field(default_factory=list)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def is_replay(self) -> bool:
        """Whether this load leaves the watermark alone."""
        return self.to_version is None


@dataclass(frozen=True)
class LoadResult:
    """What one load did."""

    table: str
    from_version: int | None
    to_version: int | None
    files: int
    staged_rows: int
    inserted_rows: int
    seconds: float


def _lock_key(table: AnalyticsTable) -> int:
    return zlib.crc32(f"lakehouse-load:{table.name}".encode())


def lock_table(conn: psycopg.Connection, table: AnalyticsTable) -> None:
    """Hold ``table``'s load lock for the rest of ``conn``'s session (waits for a running load)."""
    key = _lock_key(table)
    got = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
    if got is not None and got[0]:
        return
    log.info("waiting for a running load of the same table", extra={"table": table.name})
    conn.execute("SELECT pg_advisory_lock(%s)", (key,))


def plan_load(conn: psycopg.Connection, lake_dir: Path, table: AnalyticsTable) -> LoadPlan:
    """The files ``table``'s source gained after its watermark."""
    row = conn.execute(
        "SELECT delta_version FROM load_watermarks WHERE target = %s", (table.name,)
    ).fetchone()
    watermark = None if row is None else int(row[0])
    source = lake_dir / table.source
    latest = current_version(source)
    if latest is None:
        return LoadPlan(table, source, watermark, watermark)
    if watermark is not None and latest <= watermark:
        return LoadPlan(table, source, watermark, latest)
    files = [added.path for added in added_since(source, watermark, latest)]
    return LoadPlan(table, source, watermark, latest, files)


def _read(spark: SparkSession, plan: LoadPlan, schema_dir: Path) -> DataFrame:
    """The planned files as a frame with exactly the table's columns, in its order.

    The schema is the Delta table's at ``schema_dir`` (partition columns included), so Spark
    reads no file footers to infer one (thousands of small streaming files made that the
    slowest step); files written before a schema evolution read the new columns as null."""
    from pyspark.sql.pandas.types import from_arrow_schema

    arrow_schema = pa.schema(DeltaTable(str(schema_dir)).schema().to_arrow())
    frame = (
        spark.read.schema(from_arrow_schema(arrow_schema))
        .option("basePath", str(plan.base_dir))
        .parquet(*[str(path) for path in plan.files])
    )
    present = set(frame.columns)
    columns = []
    for name in plan.table.columns:
        if name not in present:
            # Older files predate a schema evolution: the column is null there.
            columns.append(sf.lit(None).cast("string").alias(name))
        elif name in plan.table.json_columns:
            columns.append(sf.to_json(sf.col(name)).alias(name))
        else:
            columns.append(sf.col(name))
    return frame.select(*columns)


def _copier(dsn: str, staging: str, columns: tuple[str, ...]) -> Callable[..., Any]:
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
        sql.Identifier(staging), sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    )

    def copy(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import psycopg
        import pyarrow.csv as csv

        rows = 0
        options = csv.WriteOptions(include_header=False)
        with psycopg.connect(dsn) as conn, conn.cursor().copy(statement) as copy:
            for batch in batches:
                if batch.num_rows == 0:
                    continue
                buffer = io.BytesIO()
                csv.write_csv(batch, buffer, write_options=options)
                copy.write(buffer.getvalue())
                rows += batch.num_rows
        yield pa.RecordBatch.from_pydict({"rows": [rows]})

    return copy


def stage(spark: SparkSession, settings: Settings, conn: psycopg.Connection, plan: LoadPlan) -> int:
    """Empty the staging table and COPY the planned files into it; return the rows staged."""
    staging = plan.table.staging
    conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(staging)))
    conn.commit()
    if not plan.files:
        return 0
    frame = _read(spark, plan, settings.lake_dir / plan.table.source)
    counts = frame.mapInArrow(
        _copier(settings.pg_dsn, staging, plan.table.columns), "rows long"
    ).collect()
    return sum(int(row["rows"]) for row in counts)


def commit(conn: psycopg.Connection, plan: LoadPlan, staged: int) -> int:
    """Insert the staged rows and move the watermark, in one transaction; return rows inserted."""
    table, staging = plan.table, plan.table.staging
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in table.columns)
    with conn.transaction():
        conn.execute("SET LOCAL TimeZone = 'UTC'")
        months = conn.execute(
            sql.SQL("SELECT DISTINCT date_trunc('month', {})::date FROM {}").format(
                sql.Identifier(table.partition_column), sql.Identifier(staging)
            )
        ).fetchall()
        ensure_partitions(conn, table.name, {Month.of(m) for (m,) in months})
        keep = sql.SQL("NOT " + ERASED_ROWS[table.name])
        inserted = conn.execute(
            sql.SQL(
                "INSERT INTO {} ({}) SELECT {} FROM {} s WHERE {} ON CONFLICT DO NOTHING"
            ).format(sql.Identifier(table.name), columns, columns, sql.Identifier(staging), keep)
        ).rowcount
        if table.name == EVENTS.name:
            # Idempotent (an OR of flags), so a rerun over rows already loaded changes nothing.
            conn.execute(sql.SQL(SESSION_SLOTS_UPSERT).format(keep=keep))
            conn.execute(sql.SQL(ACTIVITY_REFRESH).format(keep=keep))
            conn.execute(FORGET_SKIPPED_EVENTS)
        if not plan.is_replay:
            conn.execute(
                "INSERT INTO load_watermarks (target, source_table, delta_version, rows_loaded) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (target) DO UPDATE SET "
                "delta_version = excluded.delta_version, "
                "rows_loaded = load_watermarks.rows_loaded + excluded.rows_loaded, "
                "updated_at = now()",
                (table.name, table.source, plan.to_version, inserted),
            )
            conn.execute(
                "INSERT INTO load_runs (target, from_version, to_version, files, staged_rows, "
                "inserted_rows, started_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (
                    table.name,
                    plan.from_version,
                    plan.to_version,
                    len(plan.files),
                    staged,
                    inserted,
                    plan.started_at,
                ),
            )
        conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(staging)))
    return inserted


def load_table(spark: SparkSession, settings: Settings, table: AnalyticsTable) -> LoadResult:
    """Load what ``table``'s source gained since the last load, exactly once."""
    started = time.monotonic()
    with psycopg.connect(settings.pg_dsn) as conn:
        lock_table(conn, table)
        plan = plan_load(conn, settings.lake_dir, table)
        conn.commit()
        log.info(
            "load planned",
            extra={
                "table": table.name,
                "from_version": plan.from_version,
                "to_version": plan.to_version,
                "files": len(plan.files),
            },
        )
        staging_started = time.monotonic()
        staged = stage(spark, settings, conn, plan)
        commit_started = time.monotonic()
        inserted = (
            commit(conn, plan, staged) if plan.files or plan.to_version != plan.from_version else 0
        )
        log.info(
            "load timings",
            extra={
                "table": table.name,
                "stage_seconds": round(commit_started - staging_started, 3),
                "commit_seconds": round(time.monotonic() - commit_started, 3),
            },
        )
    result = LoadResult(
        table.name,
        plan.from_version,
        plan.to_version,
        len(plan.files),
        staged,
        inserted,
        time.monotonic() - started,
    )
    log.info("load committed", extra=result.__dict__)
    return result
