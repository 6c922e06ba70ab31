"""The lake and the archive on an S3-compatible store: moto's S3 server, started by this module.

The real streaming job (pulsar-lite, Spark, PostgreSQL) writes the Delta tables into a bucket;
the load job, the archive, replay from the archive, erasure and the usage figures then work on
that bucket; concurrent commits to one table lose nothing. Every expected number is computed from
what was published or from a listing of the bucket, never written down.

The Spark checkpoint stays local: this Spark has no hadoop-aws (docs/deployment.md).
"""

from __future__ import annotations

import re
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from deltalake import CommitProperties, Transaction, write_deltalake
from pydantic import SecretStr
from pyspark.sql import SparkSession

from include.db import connect
from include.lake.archive import PARTITIONING, archive_old_partitions, read_manifest, verify
from include.lake.erasure import erase_customer_from_lake
from include.lake.storage import Location
from include.lake.usage import stored_bytes
from include.settings import Settings
from include.tenants import topic_for
from include.warehouse.tables import EVENT_ITEMS, EVENTS
from jobs.load.loader import load_table
from jobs.load.replay import replay_range
from jobs.stream.repair import last_batches_of_other_apps, read_and_validate
from jobs.stream.sink import TABLES, LakeSink
from tests.clock import days_ago
from tests.integration.stream_fixtures import (
    Reference,
    assert_end_state,
    publish_mix,
    register,
    run_stream_until_consumed,
)
from tests.s3_server import S3Server, s3_server

BUCKET = "lakehouse"
TENANTS = ["s3_alpha", "s3_beta"]
# Relative to today: the stream accepts event times up to ten years before their publication.
OLD_DAY = days_ago(90)  # archived by the archive test
ARCHIVE_BEFORE = days_ago(60).date()
REPLAY_FROM = days_ago(365).date()
RECENT_DAY = days_ago(10)  # stays in the lake


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto's S3 server with the bucket ``lakehouse``, for the whole test session."""
    with s3_server(tmp_path_factory.mktemp("moto")) as server:
        _client(server).create_bucket(Bucket=BUCKET)
        yield server


def _client(server: S3Server) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=server.endpoint_url,
        aws_access_key_id=server.access_key_id,
        aws_secret_access_key=server.secret_access_key,
        region_name="us-east-1",
    )


def _on_s3(platform: Settings, server: S3Server, state_dir: Path, prefix: str) -> Settings:
    return platform.model_copy(
        update={
            "state_dir": state_dir,
            "lake_uri": f"s3://{BUCKET}/{prefix}/lake",
            "archive_uri": f"s3://{BUCKET}/{prefix}/archive",
            "s3_endpoint_url": server.endpoint_url,
            "s3_access_key_id": server.access_key_id,
            "s3_secret_access_key": SecretStr(server.secret_access_key),
            "stream_max_records_per_batch": 2_500,
        }
    )


@dataclass(frozen=True)
class Streamed:
    """The settings of a lake the streaming job filled on S3, and what was published."""

    settings: Settings
    reference: Reference
    prefix: str


@pytest.fixture(scope="module")
def streamed(
    platform: Settings, spark: SparkSession, s3: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Streamed:
    """The streaming job run once over old and recent events of two tenants, lake on S3."""
    with connect(platform, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE stream_event_keys, stream_batches, stream_minute_metrics, "
            "stream_slot_metrics, stream_heartbeat"
        )
    prefix = f"run-{uuid.uuid4().hex[:8]}"
    settings = _on_s3(platform, s3, tmp_path_factory.mktemp("s3-state"), prefix)
    merchants = register(settings, TENANTS)
    reference = Reference()
    publish_mix(settings, merchants, 1_500, seed=71, reference=reference, start=OLD_DAY)
    publish_mix(settings, merchants, 1_500, seed=72, reference=reference, start=RECENT_DAY)
    topics = [topic_for(t, settings.topic_template) for t in TENANTS]
    run_stream_until_consumed(spark, settings, topics, reference)
    return Streamed(settings, reference, prefix)


def _objects(server: S3Server, prefix: str) -> dict[str, int]:
    """Key -> size of every object under ``prefix``, listed with boto3."""
    pages = _client(server).get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return {o["Key"]: int(o["Size"]) for page in pages for o in page.get("Contents", [])}


def _versions(settings: Settings) -> dict[str, int]:
    return {name: (settings.lake / name).delta_table().version() for name in TABLES}


def test_the_stream_writes_every_table_on_s3_exactly_once(streamed: Streamed, s3: S3Server) -> None:
    settings, reference = streamed.settings, streamed.reference
    assert_end_state(settings, reference, TENANTS)
    keys = _objects(s3, f"{streamed.prefix}/lake/")
    for name in TABLES:
        assert f"{streamed.prefix}/lake/{name}/_delta_log/00000000000000000000.json" in keys
    assert not any(Path(key).name.startswith(".") for key in keys), "no temporary objects left"

    # Spark replays a batch with the same id after a crash: the sink must add nothing.
    (batch,) = last_batches_of_other_apps(settings, current_app_id="")
    table = read_and_validate(settings, batch)
    assert table.num_rows == batch.input_rows
    before = _versions(settings)
    result = LakeSink(settings.lake, settings.pg_dsn, batch.app_id).write_batch(
        table, batch.batch_id
    )
    assert result.skipped_postgres and sorted(result.skipped_tables) == sorted(TABLES)
    assert _versions(settings) == before
    assert_end_state(settings, reference, TENANTS)


def _lake_events(settings: Settings) -> dict[tuple[str, str], tuple[object, ...]]:
    silver = (settings.lake / "silver").delta_table().to_pyarrow_table()
    scores = silver.column("ml_context_model_scores").to_pylist()
    return {
        (t, e): (a, c, None if s is None else dict(s))
        for t, e, a, c, s in zip(
            silver.column("tenant_id").to_pylist(),
            silver.column("event_id").to_pylist(),
            silver.column("order_total_amount").to_pylist(),
            silver.column("marketing_campaign").to_pylist(),
            scores,
            strict=True,
        )
    }


def _warehouse_events(settings: Settings) -> dict[tuple[str, str], tuple[object, ...]]:
    with connect(settings) as conn:
        rows = conn.execute(
            "SELECT tenant_id, event_id::text, order_total_amount, marketing_campaign, "
            "ml_context_model_scores FROM events WHERE tenant_id = ANY(%s)",
            (TENANTS,),
        ).fetchall()
    return {(t, e): (a, c, s) for t, e, a, c, s in rows}


def _warehouse_items(settings: Settings) -> Counter[str]:
    with connect(settings) as conn:
        rows = conn.execute(
            "SELECT tenant_id, count(*) FROM event_items WHERE tenant_id = ANY(%s) GROUP BY 1",
            (TENANTS,),
        ).fetchall()
    return Counter({t: int(n) for t, n in rows})


def _truncate_analytics(settings: Settings) -> None:
    with connect(settings, autocommit=True) as conn:
        conn.execute("TRUNCATE events, event_items, load_watermarks, load_runs")


def test_the_load_moves_the_s3_lake_into_postgres_exactly_once(
    streamed: Streamed, spark: SparkSession
) -> None:
    settings = streamed.settings
    _truncate_analytics(settings)
    events = load_table(spark, settings, EVENTS)
    items = load_table(spark, settings, EVENT_ITEMS)
    lake_events = _lake_events(settings)
    lake_items = (settings.lake / "event_items").delta_table().to_pyarrow_table()
    assert events.inserted_rows == events.staged_rows == len(lake_events)
    assert items.inserted_rows == lake_items.num_rows
    assert _warehouse_events(settings) == lake_events
    assert _warehouse_items(settings) == Counter(lake_items.column("tenant_id").to_pylist())
    assert len(lake_events) == sum(len(ids) for ids in streamed.reference.silver_ids.values())
    again = load_table(spark, settings, EVENTS)
    assert (again.files, again.inserted_rows) == (0, 0), "a second load moves nothing"


def _silver_rows(settings: Settings, tenant: str) -> pa.Table:
    silver = (
        (settings.lake / "silver")
        .delta_table()
        .to_pyarrow_table(columns=["tenant_id", "event_id", "event_date", "customer_customer_id"])
    )
    return silver.filter(pc.equal(silver["tenant_id"], tenant))


def _tenant_bytes(objects: dict[str, int], root: str, table: str, tenant: str) -> int:
    """Bytes of the Parquet objects of ``tenant``'s partitions of ``table`` under ``root``."""
    column = PARTITIONING[table][0]
    pattern = re.compile(rf"^{re.escape(root)}/{table}/{column}={tenant}/.*\.parquet$")
    return sum(size for key, size in objects.items() if pattern.match(key))


def test_archive_replay_erasure_and_usage_work_on_s3(
    streamed: Streamed, spark: SparkSession, s3: S3Server
) -> None:
    settings, prefix = streamed.settings, streamed.prefix
    tenant = TENANTS[0]
    lake_root, archive_root = f"{prefix}/lake", f"{prefix}/archive"

    # Usage before archiving: the stream only appended, so every object is a live file.
    usage = stored_bytes(settings.lake, settings.archive)
    objects = _objects(s3, prefix)
    for name in PARTITIONING:
        expected = _tenant_bytes(objects, lake_root, name, tenant)
        assert usage[tenant].get(f"lake/{name}", 0) == expected

    silver = _silver_rows(settings, tenant)
    old = silver.filter(pc.less(silver["event_date"], pa.scalar(ARCHIVE_BEFORE)))
    recent = silver.filter(pc.greater_equal(silver["event_date"], pa.scalar(ARCHIVE_BEFORE)))
    assert old.num_rows > 0 and recent.num_rows > 0

    # Archive every partition dated before ARCHIVE_BEFORE, in all four tables.
    moved = {name: archive_old_partitions(settings.lake, name, settings.archive, ARCHIVE_BEFORE)
             for name in PARTITIONING}  # fmt: skip
    archived_silver = sum(e.rows for e in moved["silver"] if e.partition["tenant_id"] == tenant)
    assert archived_silver == old.num_rows
    assert _silver_rows(settings, tenant).num_rows == recent.num_rows, "old partitions left"
    for entries in moved.values():
        for entry in entries:
            verify(entry, settings.archive)
    usage = stored_bytes(settings.lake, settings.archive)
    objects = _objects(s3, prefix)
    for name in PARTITIONING:
        expected = _tenant_bytes(objects, archive_root, name, tenant)
        assert usage[tenant].get(f"archive/{name}", 0) == expected
    assert usage[tenant]["archive/silver"] > 0

    # Replay from the archive into empty analytics tables: exactly the archived rows, once.
    _truncate_analytics(settings)
    results = replay_range(spark, settings, tenant, REPLAY_FROM, ARCHIVE_BEFORE, "archive")
    archived_items = sum(e.rows for e in moved["event_items"] if e.partition["tenant_id"] == tenant)
    assert [r.inserted_rows for r in results] == [old.num_rows, archived_items]
    assert set(_warehouse_events(settings)) == {
        (tenant, e) for e in old.column("event_id").to_pylist()
    }
    again = replay_range(spark, settings, tenant, REPLAY_FROM, ARCHIVE_BEFORE, "archive")
    assert [r.inserted_rows for r in again] == [0, 0]

    # Erase a customer who has events in the archive and in the lake.
    both = set(old.column("customer_customer_id").to_pylist()) & set(
        recent.column("customer_customer_id").to_pylist()
    )
    customer = sorted(c for c in both if c is not None)[0]
    in_lake = recent.filter(pc.equal(recent["customer_customer_id"], customer)).num_rows
    in_archive = old.filter(pc.equal(old["customer_customer_id"], customer)).num_rows
    erased = erase_customer_from_lake(settings.lake, settings.archive, tenant, customer)
    assert erased.silver_rows == in_lake
    assert erased.archive_rows >= in_archive > 0
    assert len(erased.event_ids) == in_lake + in_archive
    after = _silver_rows(settings, tenant)
    assert after.num_rows == recent.num_rows - in_lake
    assert customer not in after.column("customer_customer_id").to_pylist()
    archive = settings.archive
    for key in _objects(s3, f"{archive_root}/silver/_manifest/"):
        entry = read_manifest(archive / key.removeprefix(f"{archive_root}/"))
        verify(entry, archive)  # the rewritten files match their updated manifests
    again_erased = erase_customer_from_lake(settings.lake, settings.archive, tenant, customer)
    assert again_erased.lake_rows == again_erased.archive_rows == 0


def test_concurrent_commits_to_one_table_on_s3_lose_nothing(s3: S3Server) -> None:
    """Writers racing for the same versions: delta-rs commits with ``If-None-Match: *``, the
    loser of a race gets 412 from the store and commits again on the next version."""
    table = Location.of(
        f"s3://{BUCKET}/concurrency-{uuid.uuid4().hex[:8]}/commits",
        Settings(
            s3_endpoint_url=s3.endpoint_url,
            s3_access_key_id=s3.access_key_id,
            s3_secret_access_key=SecretStr(s3.secret_access_key),
        ).s3,
    )
    options = table.storage_options
    assert options is not None and options["aws_conditional_put"] == "etag"
    assert not any("UNSAFE" in key.upper() for key in options)
    write_deltalake(table.uri, pa.table({"writer": ["init"], "n": [0]}), storage_options=options)
    writers, commits = 4, 6
    conflicts_before = _commit_conflicts(s3)
    failures: list[BaseException] = []

    def write(name: str, start: threading.Barrier) -> None:
        try:
            start.wait()
            for n in range(commits):
                write_deltalake(
                    table.uri,
                    pa.table({"writer": [name], "n": [n]}),
                    mode="append",
                    storage_options=options,
                    # Each retry means another writer's commit won that version, so a
                    # writer can lose at most (writers - 1) * commits races; delta-rs's
                    # default of 15 retries is fewer than the 18 this race allows.
                    commit_properties=CommitProperties(
                        app_transactions=[Transaction(name, n)],
                        max_commit_retries=writers * commits,
                    ),
                )
        except BaseException as error:
            failures.append(error)

    rounds = 0
    with s3.recording() as requests:
        # Repeat until the store refused at least one commit (the race really happened).
        while rounds < 5 and (rounds == 0 or _commit_conflicts(s3) == conflicts_before):
            start = threading.Barrier(writers)
            threads = [
                threading.Thread(target=write, args=(f"r{rounds}w{i}", start))
                for i in range(writers)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            rounds += 1
    assert not failures, failures
    delta = table.delta_table()
    rows = delta.to_pyarrow_table()
    expected = Counter({f"r{r}w{i}": commits for r in range(rounds) for i in range(writers)})
    assert Counter(rows.column("writer").to_pylist()) == expected + Counter({"init": 1})
    assert delta.version() == rounds * writers * commits, "one version per commit, none lost"
    for r in range(rounds):
        for i in range(writers):
            assert delta.transaction_version(f"r{r}w{i}") == commits - 1
    commit_puts = [
        request
        for request in requests
        if request["method"] == "PUT" and re.search(r"/_delta_log/\d{20}\.json$", request["url"])
    ]
    assert len(commit_puts) >= rounds * writers * commits
    assert all(request["headers"].get("If-None-Match") == "*" for request in commit_puts)
    assert _commit_conflicts(s3) > conflicts_before, "no commit ever raced: nothing was proven"


def _commit_conflicts(server: S3Server) -> int:
    """Commit puts the store refused with 412 Precondition Failed, as its log shows them."""
    refused = re.compile(r'"PUT \S+/_delta_log/\d{20}\.json HTTP/[0-9.]+"? 412')
    return sum(
        1 for line in server.log_lines() if refused.search(re.sub(r"\x1b\[[0-9;]*m", "", line))
    )
