"""The incremental load of the lake into PostgreSQL, against real Delta tables, Spark and
PostgreSQL (the lake is written by the real streaming job first)."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from deltalake import DeltaTable
from pyspark.sql import SparkSession

from include.db import connect
from include.settings import Settings
from include.tenants import topic_for
from include.warehouse.tables import EVENT_ITEMS, EVENTS
from jobs.load.loader import load_table, lock_table, plan_load, stage
from tests.integration.stream_fixtures import (
    Reference,
    publish_mix,
    register,
    run_stream_until_consumed,
)

# Each test streams its own tenants: topics outlive a test in the shared broker, and a new
# checkpoint would read another test's messages again.
TENANTS = ["load_alpha", "load_beta"]
CRASH_TENANTS = ["crash_alpha", "crash_beta"]


@pytest.fixture
def load_settings(platform: Settings, tmp_path: Path) -> Iterator[Settings]:
    """The shared services, with empty stream bookkeeping, analytics tables and a new lake."""
    with connect(platform, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE stream_event_keys, stream_batches, stream_minute_metrics, "
            "stream_slot_metrics, stream_heartbeat, events, event_items, load_watermarks, load_runs"
        )
    yield platform.model_copy(update={"state_dir": tmp_path, "stream_max_records_per_batch": 2_500})


def _lake_rows(settings: Settings) -> tuple[dict[tuple[str, str], tuple[object, ...]], int]:
    silver = DeltaTable(str(settings.lake_dir / "silver")).to_pyarrow_table()
    events: dict[tuple[str, str], tuple[object, ...]] = {
        (t, e): (a, c)
        for t, e, a, c in zip(
            silver.column("tenant_id").to_pylist(),
            silver.column("event_id").to_pylist(),
            silver.column("order_total_amount").to_pylist(),
            silver.column("marketing_campaign").to_pylist(),
            strict=True,
        )
    }
    items = DeltaTable(str(settings.lake_dir / "event_items")).to_pyarrow_table().num_rows
    return events, items


def _warehouse_rows(settings: Settings) -> tuple[dict[tuple[str, str], tuple[object, ...]], int]:
    with connect(settings) as conn:
        rows = conn.execute(
            "SELECT tenant_id, event_id::text, order_total_amount, marketing_campaign FROM events"
        ).fetchall()
        items = conn.execute("SELECT count(*) FROM event_items").fetchone()
    assert items is not None
    return {(t, e): (a, c) for t, e, a, c in rows}, int(items[0])


def _published(reference: Reference) -> tuple[dict[tuple[str, str], object], int]:
    """What the load must end with, from the events as published (not from the lake): each
    distinct valid event's order total (None without an order), and the number of item lines."""
    amounts: dict[tuple[str, str], object] = {}
    for tenant, events in reference.events.items():
        for body in events:
            order = body["order"]
            amount = None if order is None else Decimal(str(order["total_amount"]))
            amounts[(tenant, body["event_id"])] = amount
    return amounts, sum(reference.item_rows.values())


def _warehouse_amounts(settings: Settings) -> tuple[dict[tuple[str, str], object], int]:
    events, items = _warehouse_rows(settings)
    return {key: amount for key, (amount, _campaign) in events.items()}, items


def _stream(
    spark: SparkSession,
    settings: Settings,
    count: int,
    seed: int,
    ref: Reference,
    tenants: list[str] = TENANTS,
) -> None:
    merchants = register(settings, tenants)
    publish_mix(settings, merchants, count, seed=seed, reference=ref)
    topics = [topic_for(t, settings.topic_template) for t in tenants]
    run_stream_until_consumed(spark, settings, topics, ref)


def test_loads_move_exactly_the_new_rows_once(spark: SparkSession, load_settings: Settings) -> None:
    settings = load_settings
    reference = Reference()
    _stream(spark, settings, 3_000, seed=51, ref=reference)

    first = load_table(spark, settings, EVENTS)
    first_items = load_table(spark, settings, EVENT_ITEMS)
    lake_events, lake_items = _lake_rows(settings)
    assert first.inserted_rows == len(lake_events) == first.staged_rows
    assert first_items.inserted_rows == lake_items
    assert _warehouse_rows(settings) == (lake_events, lake_items)
    assert _warehouse_amounts(settings) == _published(reference)

    again = load_table(spark, settings, EVENTS)
    assert (again.files, again.inserted_rows) == (0, 0), "a second run moves nothing"

    _stream(spark, settings, 1_000, seed=52, ref=reference)
    later = load_table(spark, settings, EVENTS)
    load_table(spark, settings, EVENT_ITEMS)
    lake_events, lake_items = _lake_rows(settings)
    assert later.inserted_rows == len(lake_events) - first.inserted_rows > 0
    assert _warehouse_rows(settings) == (lake_events, lake_items)
    assert _warehouse_amounts(settings) == _published(reference)
    with connect(settings) as conn:
        partitions = conn.execute(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'events'::regclass"
        ).fetchone()
    assert partitions is not None and partitions[0] >= 1, "monthly partitions were created"


def test_a_load_interrupted_between_copy_and_commit_is_completed_by_the_next_run(
    spark: SparkSession, load_settings: Settings
) -> None:
    settings = load_settings
    reference = Reference()
    _stream(spark, settings, 2_000, seed=61, ref=reference, tenants=CRASH_TENANTS)
    load_table(spark, settings, EVENTS)
    _stream(spark, settings, 1_500, seed=62, ref=reference, tenants=CRASH_TENANTS)

    # The load dies after its executors COPied into staging, before the commit.
    with psycopg.connect(settings.pg_dsn) as conn:
        lock_table(conn, EVENTS)
        plan = plan_load(conn, settings.lake_dir, EVENTS)
        conn.commit()
        staged = stage(spark, settings, conn, plan)
    assert staged > 0
    with connect(settings) as conn:
        left = conn.execute("SELECT count(*) FROM load_staging_events").fetchone()
    assert left == (staged,), "the crash left staged rows behind"

    rerun = load_table(spark, settings, EVENTS)
    assert rerun.staged_rows == staged, "the rerun staged the same files again"
    lake_events, _ = _lake_rows(settings)
    assert _warehouse_rows(settings)[0] == lake_events
    assert _warehouse_amounts(settings)[0] == _published(reference)[0]
