"""The streaming job against real pulsar-lite, Spark, Delta tables and PostgreSQL."""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from pyspark.sql import SparkSession

from include.db import connect
from include.settings import Settings
from include.tenants import topic_for
from tests.integration.stream_fixtures import (
    Reference,
    assert_end_state,
    batch_sizes,
    publish_mix,
    register,
    run_stream_until_consumed,
)

TENANTS = ["stream_alpha", "stream_beta", "stream_gamma"]


@pytest.fixture
def stream_settings(platform: Settings, tmp_path: Path) -> Iterator[Settings]:
    """The shared services, with a lake and checkpoint of this test's own."""
    with connect(platform, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE stream_event_keys, stream_batches, stream_minute_metrics, "
            "stream_slot_metrics, stream_heartbeat"
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
    run_stream_until_consumed(spark, settings, topics, reference)
    assert_end_state(settings, reference, TENANTS)
    with connect(settings) as conn:
        batches = conn.execute("SELECT count(*), sum(new_events) FROM stream_batches").fetchone()
        heartbeat = conn.execute("SELECT batch_id, input_rows FROM stream_heartbeat").fetchone()
        # The tasks claimed every key before their batch's transaction: keys the driver's
        # statement claims carry that transaction's now(), the batch's committed_at.
        claims = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE k.first_seen_at < b.committed_at) "
            "FROM stream_event_keys k JOIN stream_batches b USING (app_id, batch_id)"
        ).fetchone()
    assert batches is not None and batches[0] >= 2, "admission control should split the backlog"
    assert batches[1] == sum(len(ids) for ids in reference.silver_ids.values())
    assert heartbeat is not None and heartbeat[0] == batches[0] - 1
    assert claims == (batches[1], batches[1])


def test_batches_after_the_first_keep_to_the_limit(
    spark: SparkSession, stream_settings: Settings
) -> None:
    # The newest message id of a topic counts entries, not messages: the source must learn how
    # many messages its entries hold, or a backlog is admitted in batches far over the limit
    # (131,157 messages for 50,000 in the benchmark), and each task's memory grows with them.
    settings = stream_settings
    limit = settings.stream_max_records_per_batch
    tenants = ["sized_alpha", "sized_beta"]
    merchants = register(settings, tenants)
    reference = Reference()
    publish_mix(settings, merchants, 6 * limit, seed=25, reference=reference)
    topics = [topic_for(t, settings.topic_template) for t in tenants]
    run_stream_until_consumed(spark, settings, topics, reference)
    assert_end_state(settings, reference, tenants)
    sizes = batch_sizes(settings)
    assert sum(sizes) == reference.published
    # The first batch is sized from a sample of each topic's first entries, every later one
    # from what the batches before it read. A range is cut after a whole number of entries of
    # the average size, and this producer's entries hold 83 to 722 messages: a range of a few
    # entries may hold a third more or less than the average, but not more on the whole
    # (before, the median batch was 1.74 times the limit).
    full = sizes[1:-1]  # the last batch takes what is left
    assert len(full) >= 4, sizes
    assert statistics.median(full) <= limit * 1.25, sizes
    assert max(full) <= limit * 2, sizes


def test_the_first_batch_keeps_to_the_limit_when_a_producer_starts_small(
    spark: SparkSession, stream_settings: Settings
) -> None:
    # A producer's first entries are its smallest; sized from them alone, the first batch of a
    # backlog took everything (the benchmark's was 118,507 messages for a limit of 50,000).
    import pulsar

    from include.pulsar_client import pulsar_client

    settings = stream_settings
    limit = settings.stream_max_records_per_batch
    tenants = ["small_start"]
    merchants = register(settings, tenants)
    topic = topic_for(tenants[0], settings.topic_template)
    reference = Reference()
    client = pulsar_client(settings.pulsar_url)
    try:
        producer = client.create_producer(
            topic, batching_enabled=True, batching_max_messages=1_000,
            batching_max_publish_delay_ms=60_000,
        )  # fmt: skip
        results: list[Any] = []
        for size in (1, 2, 4, 8, 16, 32, 64, 128):  # eight entries, growing (quarantined)
            for n in range(size):
                producer.send_async(b"not json %d" % n, lambda result, _id: results.append(result))
            producer.flush()
            reference.published += size
        assert results == [pulsar.Result.Ok] * reference.published
        producer.close()
    finally:
        client.close()
    publish_mix(settings, merchants, 6 * limit, seed=26, reference=reference)
    run_stream_until_consumed(spark, settings, [topic], reference)
    sizes = batch_sizes(settings)
    assert sum(sizes) == reference.published
    # Before, the first batch was the whole backlog (15,260 messages for a limit of 2,500). The
    # batch after it still sizes from what the first read (a few small entries) and overshoots:
    # learning from unrepresentative batches is not solved yet.
    assert len(sizes) >= 2 and sizes[0] <= limit * 2, sizes


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
    run_stream_until_consumed(spark, settings, topics, reference)
    shutil.rmtree(settings.checkpoint_dir)  # the checkpoint is lost
    publish_mix(settings, merchants, 1_000, seed=32, reference=reference)
    run_stream_until_consumed(spark, settings, topics, reference)
    assert_end_state(settings, reference, tenants)
    with connect(settings) as conn:
        apps = conn.execute("SELECT count(DISTINCT app_id) FROM stream_batches").fetchone()
    assert apps == (2,), "a new checkpoint commits under a new app id"


def test_a_batch_left_out_of_delta_with_a_lost_checkpoint_is_completed(
    spark: SparkSession, stream_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from jobs.stream.job import start_stream
    from jobs.stream.sink import BatchPlan, BatchResult, LakeSink

    settings = stream_settings
    tenants = ["half_alpha", "half_beta"]
    merchants = register(settings, tenants)
    reference = Reference()
    topics = [topic_for(t, settings.topic_template) for t in tenants]
    publish_mix(settings, merchants, 1_500, seed=41, reference=reference)
    run_stream_until_consumed(spark, settings, topics, reference)

    # The job dies right after a batch's PostgreSQL commit, before any Delta append...
    publish_mix(settings, merchants, 1_000, seed=42, reference=reference)

    commit_batch = LakeSink.commit_batch

    def crash(sink: LakeSink, plan: BatchPlan, files: list[dict[str, Any]]) -> BatchResult:
        if not plan.pending:
            # A replay of a finished batch (a stop can precede its commit log).
            return commit_batch(sink, plan, files)
        # The executors wrote this batch's files: they stay uncommitted, in no table version.
        raise RuntimeError("injected crash between the PostgreSQL and the Delta commits")

    with monkeypatch.context() as patch:
        patch.setattr(LakeSink, "commit_batch", crash)
        query = start_stream(spark, settings, topics=topics, trigger_seconds=1)
        with pytest.raises(Exception, match="injected crash"):
            query.awaitTermination(timeout=240)
    with connect(settings) as conn:
        row = conn.execute("SELECT coalesce(sum(input_rows), 0) FROM stream_batches").fetchone()
    assert row == (reference.published,), "PostgreSQL committed the batch the lake lacks"
    # ...and its checkpoint is lost too. The restarted job completes that batch in Delta.
    shutil.rmtree(settings.checkpoint_dir)
    run_stream_until_consumed(spark, settings, topics, reference)
    assert_end_state(settings, reference, tenants)


def test_a_replayed_batch_0_starts_where_it_first_started(stream_settings: Settings) -> None:
    # Spark asks the source for its initial offset again when it replays a checkpoint's batch
    # 0. If PostgreSQL committed that batch before the job died, the start must still be the
    # end of the earlier checkpoint's last batch, not the end of batch 0 itself.
    from jobs.stream.pulsar_source import PulsarStreamReader

    earlier = {"persistent://public/default/t.events": [3, 7, -1]}
    own = {"persistent://public/default/t.events": [5, 2, -1]}
    with connect(stream_settings, autocommit=True) as conn:
        for app_id, end in [("stream-earlier", earlier), ("stream-current", own)]:
            conn.execute(
                "INSERT INTO stream_batches (app_id, batch_id, input_rows, valid_rows, "
                "new_events, quarantined_rows, end_offset) VALUES (%s, 0, 1, 1, 1, 0, %s)",
                (app_id, orjson.dumps(end).decode()),
            )
    reader = PulsarStreamReader({"appId": "stream-current"})
    assert reader.initialOffset() == {"topics": earlier}
    # A new checkpoint (a new app id) starts after the last batch of all.
    assert PulsarStreamReader({"appId": "stream-new"}).initialOffset() == {"topics": own}


def test_the_reader_keeps_one_connection_and_opens_another_after_it_broke(
    stream_settings: Settings,
) -> None:
    from jobs.stream.pulsar_source import PulsarStreamReader

    reader = PulsarStreamReader({"appId": "stream-one-connection"})
    with connect(stream_settings, autocommit=True) as conn:

        def backends() -> list[int]:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'lakehouse' "
                "AND pid <> pg_backend_pid()"
            ).fetchall()
            return sorted(pid for (pid,) in rows)

        before = backends()
        for _ in range(3):
            reader.initialOffset()
            reader._learn_entry_sizes()
        reader._topics_at = 0.0  # due for a refresh of the tenant list
        reader.topics()
        opened = sorted(set(backends()) - set(before))
        assert len(opened) == 1, f"one connection for every call, not {opened}"
        # PostgreSQL restarting looks like this to the reader: that one call fails, the next
        # opens a new connection.
        conn.execute("SELECT pg_terminate_backend(%s)", (opened[0],))
        with pytest.raises(psycopg.OperationalError):
            reader._learn_entry_sizes()
        assert reader.initialOffset() == {"topics": {}}
        again = sorted(set(backends()) - set(before))
        assert len(again) == 1 and again != opened
        reader.stop()
        deadline = time.monotonic() + 10  # a backend exits just after its client closed
        while set(backends()) - set(before) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sorted(set(backends()) - set(before)) == []


def test_the_task_workers_never_import_pandas(
    spark: SparkSession, stream_settings: Settings
) -> None:
    # pyarrow imports pandas to ask whether a Python list is a pandas object (38 MiB in each
    # task worker); the workers' daemon answers that question before it forks them.
    settings = stream_settings
    tenants = ["pandas_free"]
    merchants = register(settings, tenants)
    reference = Reference()
    publish_mix(settings, merchants, 3_000, seed=27, reference=reference)
    run_stream_until_consumed(
        spark, settings, [topic_for(t, settings.topic_template) for t in tenants], reference
    )
    assert_end_state(settings, reference, tenants)
    # The daemon and the workers it forked (idle workers stay for a minute after their task).
    workers = _processes_running("-m jobs.stream.worker_daemon")
    assert len(workers) >= 2, [p.cmdline() for p in workers]
    for worker in workers:
        maps = Path(f"/proc/{worker.pid}/maps").read_text()
        assert "pyarrow/libarrow" in maps, worker.cmdline()  # the check sees the libraries
        assert "pandas/_libs" not in maps, f"pandas loaded in {worker.pid} {worker.cmdline()}"


def _processes_running(*commands: str) -> list[Any]:
    """This process's live descendants whose command line holds one of ``commands``."""
    import psutil

    found = []
    for process in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):  # exited, or a zombie of an earlier test
            command = " ".join(process.cmdline())
            if process.status() != psutil.STATUS_ZOMBIE and any(c in command for c in commands):
                found.append(process)
    return found


def _planning_processes() -> list[Any]:
    from jobs.stream.planning_workers import PLANNING_MODULES

    return _processes_running(*PLANNING_MODULES)


def test_the_planning_processes_end_once_the_query_runs_and_planning_again_works(
    spark: SparkSession, stream_settings: Settings
) -> None:
    # PySpark keeps each planning daemon for the application's life (and its idle workers for
    # a minute); the stream ends them at its first batch. A second query plans anew.
    settings = stream_settings
    tenants = ["planned_once"]
    merchants = register(settings, tenants)
    topics = [topic_for(t, settings.topic_template) for t in tenants]
    reference = Reference()
    publish_mix(settings, merchants, 2_000, seed=31, reference=reference)
    run_stream_until_consumed(spark, settings, topics, reference)
    assert_end_state(settings, reference, tenants)
    assert _planning_processes() == []
    publish_mix(settings, merchants, 1_000, seed=32, reference=reference)
    run_stream_until_consumed(spark, settings, topics, reference)
    assert_end_state(settings, reference, tenants)
    assert _planning_processes() == []
