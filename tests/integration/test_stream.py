"""The streaming job against real pulsar-lite, Spark, Delta tables and PostgreSQL."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from deltalake import DeltaTable
from pyspark.sql import SparkSession
from pyspark.sql.streaming.query import StreamingQuery

from include.db import connect
from include.settings import Settings
from include.tenants import topic_for
from jobs.stream.job import start_stream
from tests.integration.stream_fixtures import Reference, publish_mix, register

TENANTS = ["stream_alpha", "stream_beta", "stream_gamma"]


def wait_until_consumed(
    settings: Settings,
    expected_rows: int,
    query: StreamingQuery | None = None,
    timeout_s: float = 240,
) -> None:
    """Block until the stream's committed batches account for every published message."""
    deadline = time.monotonic() + timeout_s
    seen = 0
    while time.monotonic() < deadline:
        if query is not None and not query.isActive:
            raise AssertionError(f"the stream stopped: {query.exception()}")
        with connect(settings) as conn:
            row = conn.execute("SELECT coalesce(sum(input_rows), 0) FROM stream_batches").fetchone()
        seen = int(row[0]) if row else 0
        if seen >= expected_rows:
            return
        time.sleep(1)
    raise AssertionError(f"the stream consumed {seen} of {expected_rows} messages")


def assert_end_state(settings: Settings, reference: Reference, tenants: list[str]) -> None:
    """Silver, items, bronze, quarantine and the minute aggregates equal the reference."""
    lake = settings.lake_dir
    silver = DeltaTable(str(lake / "silver")).to_pyarrow_table()
    silver_ids: dict[str, list[str]] = {}
    for tenant, event_id in zip(
        silver.column("tenant_id").to_pylist(), silver.column("event_id").to_pylist(), strict=True
    ):
        silver_ids.setdefault(tenant, []).append(event_id)
    for tenant in tenants:
        assert len(silver_ids[tenant]) == len(set(silver_ids[tenant])), "duplicates in silver"
        assert set(silver_ids[tenant]) == reference.silver_ids[tenant]
    assert "marketing_campaign" in silver.column_names  # added by schema evolution
    items = DeltaTable(str(lake / "event_items")).to_pyarrow_table()
    assert Counter(items.column("tenant_id").to_pylist()) == {
        t: reference.item_rows[t] for t in tenants if reference.item_rows[t]
    }
    bronze = DeltaTable(str(lake / "bronze")).to_pyarrow_table()
    assert Counter(bronze.column("tenant_id").to_pylist()) == {
        t: reference.bronze_rows[t] for t in tenants
    }
    quarantine = DeltaTable(str(lake / "quarantine")).to_pyarrow_table()
    assert (
        Counter(
            zip(
                quarantine.column("topic_tenant").to_pylist(),
                quarantine.column("reason").to_pylist(),
                strict=True,
            )
        )
        == reference.quarantine
    )
    detail = dict(
        zip(
            quarantine.column("reason").to_pylist(),
            quarantine.column("detail").to_pylist(),
            strict=True,
        )
    )
    assert detail["schema_violation"].startswith(("customer.customer_id", "<root>"))
    with connect(settings) as conn:
        rows = conn.execute(
            "SELECT tenant_id, minute, event_type, events, amount, items "
            "FROM stream_minute_metrics WHERE tenant_id = ANY(%s)",
            (tenants,),
        ).fetchall()
    actual = {(t, m, e): [n, a, i] for t, m, e, n, a, i in rows}
    expected = {
        k: [v[0], Decimal(v[1]).quantize(Decimal("0.01")), v[2]]
        for k, v in reference.minutes.items()
    }
    assert actual == expected


@pytest.fixture
def stream_settings(platform: Settings, tmp_path: Path) -> Iterator[Settings]:
    """The shared services, with a lake and checkpoint of this test's own."""
    with connect(platform, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE stream_event_keys, stream_batches, stream_minute_metrics, stream_heartbeat"
        )
    yield platform.model_copy(update={"state_dir": tmp_path, "stream_max_records_per_batch": 2_500})


def test_stream_writes_exactly_the_distinct_valid_events(
    spark: SparkSession, stream_settings: Settings
) -> None:
    settings = stream_settings
    merchants = register(settings, TENANTS)
    reference = Reference()
    publish_mix(settings, merchants, 6_000, seed=21, reference=reference)
    topics = [topic_for(t, settings.topic_template) for t in TENANTS]
    query = start_stream(spark, settings, topics=topics, trigger_seconds=1)
    try:
        wait_until_consumed(settings, reference.published, query)
        # A replay of the same messages (published again as duplicates) changes nothing.
    finally:
        query.stop()
    assert_end_state(settings, reference, TENANTS)
    with connect(settings) as conn:
        batches = conn.execute("SELECT count(*), sum(new_events) FROM stream_batches").fetchone()
        heartbeat = conn.execute("SELECT batch_id, input_rows FROM stream_heartbeat").fetchone()
    assert batches is not None and batches[0] >= 2, "admission control should split the backlog"
    assert batches[1] == sum(len(ids) for ids in reference.silver_ids.values())
    assert heartbeat is not None and heartbeat[0] == batches[0] - 1


def test_a_lost_checkpoint_reads_nothing_twice(
    spark: SparkSession, stream_settings: Settings
) -> None:
    import shutil

    settings = stream_settings
    tenants = ["lost_alpha", "lost_beta"]
    merchants = register(settings, tenants)
    reference = Reference()
    topics = [topic_for(t, settings.topic_template) for t in tenants]
    publish_mix(settings, merchants, 2_000, seed=31, reference=reference)
    query = start_stream(spark, settings, topics=topics, trigger_seconds=1)
    try:
        wait_until_consumed(settings, reference.published, query)
    finally:
        query.stop()
    shutil.rmtree(settings.checkpoint_dir)  # the checkpoint is lost
    publish_mix(settings, merchants, 1_000, seed=32, reference=reference)
    query = start_stream(spark, settings, topics=topics, trigger_seconds=1)
    try:
        wait_until_consumed(settings, reference.published, query)
    finally:
        query.stop()
    assert_end_state(settings, reference, tenants)
    with connect(settings) as conn:
        apps = conn.execute("SELECT count(DISTINCT app_id) FROM stream_batches").fetchone()
    assert apps == (2,), "a new checkpoint commits under a new app id"
