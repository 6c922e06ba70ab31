"""Incremental loads of the lake into the PostgreSQL analytics tables, exactly once.

One load of one table runs in three steps, under a PostgreSQL advisory lock per table (loads
and replays of a table never overlap, because they share its staging table):

1. **plan**: the table's watermark (the last Delta version loaded) and the files its source
   table gained since (``include.lake.changes``);
2. **stage**: Spark spreads those files over its executors, which read them with pyarrow
   (local folder or S3, through ``include.lake.storage``) and ``COPY`` the rows into the
   unlogged staging table, which the step empties first;
3. **commit**: one transaction creates the monthly partitions the rows need, inserts the staged
   rows with ``ON CONFLICT DO NOTHING`` on the table's key (skipping erased customers' rows),
   adds the new events to the distinct-count bitmaps, and moves the watermark.

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
from typing import TYPE_CHECKING, Any

import psycopg
import pyarrow as pa
from psycopg import sql

from include.lake.changes import added_since, current_version
from include.lake.storage import Location, as_location, partition_values
from include.settings import Settings
from include.warehouse import distinct
from include.warehouse.erasure import ERASED_ROWS, FORGET_SKIPPED_EVENTS
from include.warehouse.partitions import Month, ensure_partitions
from include.warehouse.tables import EVENTS, AnalyticsTable

if TYPE_CHECKING:
    import pyarrow.fs as pafs
    from pyspark.sql import SparkSession
    from pyspark.sql.connect.session import SparkSession as RemoteSession

    # A classic session (spark-submit, the tests) or a Spark Connect client's.
    Session = SparkSession | RemoteSession
    # A session, or what starts one when a load first needs it (jobs.load.job).
    Spark = Session | Callable[[], Session]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadPlan:
    """What one load of ``table`` reads: Parquet ``files`` (paths relative to ``base``, whose
    Hive-style folders carry the partition columns). A watermark load reads the files its source
    gained after ``from_version`` and moves the watermark to ``to_version``; a replay has no
    versions and leaves the watermark alone."""

    table: AnalyticsTable
    base: Location
    from_version: int | None
    to_version: int | None
    files: list[str] = field(default_factory=list)
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


def plan_load(conn: psycopg.Connection, lake: Location | Path, table: AnalyticsTable) -> LoadPlan:
    """The files ``table``'s source gained after its watermark."""
    row = conn.execute(
        "SELECT delta_version FROM load_watermarks WHERE target = %s", (table.name,)
    ).fetchone()
    watermark = None if row is None else int(row[0])
    source = as_location(lake) / table.source
    latest = current_version(source)
    if latest is None:
        return LoadPlan(table, source, watermark, watermark)
    if watermark is not None and latest <= watermark:
        return LoadPlan(table, source, watermark, latest)
    files = [added.path for added in added_since(source, watermark, latest)]
    return LoadPlan(table, source, watermark, latest, files)


def _file_rows(
    fs: pafs.FileSystem, root: str, relative: str, schema: pa.Schema, table: AnalyticsTable
) -> Iterator[pa.RecordBatch]:
    """One planned file's rows with exactly ``table``'s columns, in its order.

    ``schema`` is the Delta table's (partition columns included): partition values come from
    the Hive-style folders; columns a file predates (written before a schema evolution) are
    null; map columns become JSON text for their ``jsonb`` columns."""
    import orjson
    import pyarrow.parquet as pq

    partitions = partition_values(relative)
    with fs.open_input_file(f"{root}/{relative}") as handle:
        parquet = pq.ParquetFile(handle)
        present = set(parquet.schema_arrow.names)
        wanted = [c for c in table.columns if c in present and c not in partitions]
        for batch in parquet.iter_batches(batch_size=65_536, columns=wanted):
            columns: list[pa.Array] = []
            for name in table.columns:
                kind = schema.field(name).type if name in schema.names else pa.string()
                if name in partitions:
                    value = pa.scalar(partitions[name]).cast(kind)
                    columns.append(pa.repeat(value, batch.num_rows))
                elif name not in present:
                    columns.append(pa.nulls(batch.num_rows, type=pa.string()))
                elif name in table.json_columns:
                    maps = batch.column(name).to_pylist()
                    text = [None if m is None else orjson.dumps(dict(m)).decode() for m in maps]
                    columns.append(pa.array(text, type=pa.string()))
                else:
                    columns.append(batch.column(name).cast(kind))
            yield pa.RecordBatch.from_arrays(columns, names=list(table.columns))


def _copier(
    dsn: str, staging: str, table: AnalyticsTable, base: Location, schema: pa.Schema
) -> Callable[..., Any]:
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
        sql.Identifier(staging), sql.SQL(", ").join(sql.Identifier(c) for c in table.columns)
    )

    def copy(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import psycopg
        import pyarrow.csv as csv

        rows = 0
        options = csv.WriteOptions(include_header=False)
        fs, root = base.filesystem()  # one per task: an S3 client is not free to create
        with psycopg.connect(dsn) as conn, conn.cursor().copy(statement) as copy:
            for files in batches:
                for relative in files.column("file").to_pylist():
                    for batch in _file_rows(fs, root, relative, schema, table):
                        if batch.num_rows == 0:
                            continue
                        buffer = io.BytesIO()
                        csv.write_csv(batch, buffer, write_options=options)
                        copy.write(buffer.getvalue())
                        rows += batch.num_rows
        yield pa.RecordBatch.from_pydict({"rows": [rows]})

    return copy


def stage(spark: Spark, settings: Settings, conn: psycopg.Connection, plan: LoadPlan) -> int:
    """Empty the staging table and COPY the planned files into it; return the rows staged.

    The files are spread over the executors; each reads its share straight from the lake's
    store (no Hadoop filesystem involved, so an S3 lake needs no hadoop-aws) and streams it
    into PostgreSQL over one ``COPY``. The schema is the Delta table's, so no file footer is
    read to infer one."""
    staging = plan.table.staging
    conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(staging)))
    conn.commit()
    if not plan.files:
        return 0
    schema = pa.schema((settings.lake / plan.table.source).delta_table().schema().to_arrow())
    session = spark() if callable(spark) else spark
    # A local relation is spread over min(files, default parallelism) tasks.
    files = session.createDataFrame([(f,) for f in plan.files], "file string")
    counts = files.mapInArrow(
        _copier(settings.pg_dsn, staging, plan.table, plan.base, schema), "rows long"
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
        if table.name == EVENTS.name:
            conn.execute(FORGET_SKIPPED_EVENTS)  # what is left in staging is kept
            keep: sql.Composable = sql.SQL("TRUE")
        else:
            keep = sql.SQL("NOT " + ERASED_ROWS[table.name])
        # In key order the unique index is descended along one path instead of at random:
        # 17-27 % less time on 1M events (docs/performance.md, issue #15).
        key = sql.SQL(", ").join(sql.Identifier(c) for c in table.key)
        inserted = conn.execute(
            sql.SQL(
                "INSERT INTO {} ({}) SELECT {} FROM {} s WHERE {} ORDER BY {} "
                "ON CONFLICT DO NOTHING"
            ).format(
                sql.Identifier(table.name), columns, columns, sql.Identifier(staging), keep, key
            )
        ).rowcount
        if table.name == EVENTS.name:
            distinct.apply_load(conn, keep)  # issue #16: distinct-count bitmaps
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


def load_table(spark: Spark, settings: Settings, table: AnalyticsTable) -> LoadResult:
    """Load what ``table``'s source gained since the last load, exactly once."""
    started = time.monotonic()
    with psycopg.connect(settings.pg_dsn) as conn:
        lock_table(conn, table)
        plan = plan_load(conn, settings.lake, table)
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
