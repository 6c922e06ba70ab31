"""Replay: reload one tenant's date range into PostgreSQL from the lake or from the archive.

The disaster-recovery path ("PostgreSQL lost: rebuild it from the lake"). It reads every file
of the tenant's partitions in the range (``source="delta"``: the current files of the Delta
table; ``source="archive"``: the Parquet archive written by ``archive_lake``), and loads them
through the same staging and ``ON CONFLICT DO NOTHING`` commit as the incremental load, under
the same per-table lock, without touching the watermark. Replaying twice inserts nothing the
second time.
"""

from __future__ import annotations

import logging
import time
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import unquote

import psycopg
import pyarrow as pa

from include.lake.archive import ARCHIVE_FILE
from include.lake.storage import Location, as_location, partition_values
from include.settings import Settings
from include.tenants import validate_tenant_id
from include.warehouse.tables import ANALYTICS_TABLES, AnalyticsTable
from jobs.load.loader import LoadPlan, LoadResult, commit, lock_table, stage

if TYPE_CHECKING:
    from jobs.load.loader import Spark

log = logging.getLogger(__name__)

Source = Literal["delta", "archive"]


def _in_range(value: str, start: date, end: date) -> bool:
    return start <= date.fromisoformat(value) <= end


def delta_files(table: Location | Path, tenant: str, start: date, end: date) -> list[str]:
    """The current data files (relative to ``table``) of ``tenant``'s partitions dated
    ``start``..``end``."""
    location = as_location(table)
    if not location.is_delta_table():
        return []
    actions = pa.table(location.delta_table().get_add_actions(flatten=True))
    rows = actions.select(["path", "partition.tenant_id", "partition.event_date"]).to_pylist()
    return [
        unquote(row["path"])
        for row in rows
        if row["partition.tenant_id"] == tenant
        and _in_range(str(row["partition.event_date"]), start, end)
    ]


def archive_files(table: Location | Path, tenant: str, start: date, end: date) -> list[str]:
    """The archived files (relative to ``table``) of ``tenant``'s partitions dated
    ``start``..``end``."""
    folder = f"tenant_id={tenant}"
    found = []
    for relative, _size in (as_location(table) / folder).files(ARCHIVE_FILE):
        day = partition_values(relative).get("event_date")
        if day is not None and _in_range(day, start, end):
            found.append(f"{folder}/{relative}")
    return found


def replay_table(
    spark: Spark,
    settings: Settings,
    table: AnalyticsTable,
    tenant: str,
    start: date,
    end: date,
    source: Source,
) -> LoadResult:
    """Reload ``table`` for ``tenant`` and ``start``..``end`` from ``source``."""
    started = time.monotonic()
    root = settings.lake if source == "delta" else settings.archive
    base = root / table.source
    find = delta_files if source == "delta" else archive_files
    files = find(base, tenant, start, end)
    plan = LoadPlan(table, base, None, None, files)
    with psycopg.connect(settings.pg_dsn) as conn:
        lock_table(conn, table)
        conn.commit()
        staged = stage(spark, settings, conn, plan)
        inserted = commit(conn, plan, staged) if files else 0
    result = LoadResult(
        table.name, None, None, len(files), staged, inserted, time.monotonic() - started
    )
    log.info(
        "replay committed",
        extra={"tenant_id": tenant, "source": source, "start": str(start), "end": str(end),
               **result.__dict__},
    )  # fmt: skip
    return result


def replay_range(
    spark: Spark, settings: Settings, tenant: str, start: date, end: date, source: Source
) -> list[LoadResult]:
    """Reload every analytics table for ``tenant`` and ``start``..``end`` from ``source``."""
    validate_tenant_id(tenant)
    if end < start:
        raise ValueError(f"the range ends ({end}) before it starts ({start})")
    return [
        replay_table(spark, settings, table, tenant, start, end, source)
        for table in ANALYTICS_TABLES
    ]
