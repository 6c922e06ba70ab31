"""The streaming job: Pulsar -> validate -> Delta (bronze, silver, items, quarantine) and
PostgreSQL (minute aggregates, event keys, heartbeat), exactly once.

Run it (``make run`` supervises it)::

    spark-submit --master 'local[2]' jobs/stream/job.py

or ``python -m jobs.stream.job``. Settings come from ``LAKEHOUSE_*`` (see the README).
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming.query import StreamingQuery

from include.lake.storage import Location, as_location
from include.settings import Settings
from jobs.stream import metrics
from jobs.stream.landing import Claim, claim_for, settle_candidates, split_landed
from jobs.stream.planning_workers import stop_planning_workers
from jobs.stream.pulsar_source import Landing, landing_source
from jobs.stream.repair import repair_unfinished_batches
from jobs.stream.shaping import batch_figures
from jobs.stream.sink import PARTITIONS, BatchResult, LakeSink

log = logging.getLogger("jobs.stream")
_APP_ID_FILE = "lakehouse_app_id"


def app_id_for(checkpoint: Location | Path) -> str:
    """The id under which this checkpoint's batches are committed (new checkpoint, new id)."""
    marker = as_location(checkpoint) / _APP_ID_FILE
    if not marker.exists():
        marker.write_bytes(f"stream-{uuid.uuid4().hex[:12]}\n".encode())
    return marker.read_bytes().decode().strip()


def _use_s3_checkpoint(spark: SparkSession, settings: Settings) -> None:
    """Give Spark's Hadoop S3 client (hadoop-aws, not part of the pyspark wheel) the platform's
    S3 settings when the checkpoint is on ``s3a://``."""
    if not settings.checkpoint.startswith("s3a://"):
        return
    hadoop = spark.sparkContext._jsc.hadoopConfiguration()
    for key, value in settings.s3.hadoop_options().items():
        hadoop.set(key.removeprefix("spark.hadoop."), value)


def write_micro_batch(
    sink: LakeSink, frame: DataFrame, batch_id: int, phases: dict[str, float] | None = None
) -> tuple[pa.Table, BatchResult]:
    """One micro-batch of a landing source (``jobs.stream.landing``): its tasks read, validate,
    claim their keys for the batch and write the Delta files as the driver collects the summary
    rows and the files; the driver runs the PostgreSQL step, keeps silver's and event_items'
    chosen rows, and commits.

    ``phases``, when given, receives the seconds each step took (the batch's log line)."""
    phases = {} if phases is None else phases
    clock = time.monotonic()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.monotonic()
        phases[name] = round(now - clock, 3)
        clock = now

    with claim_for(frame.sparkSession.sparkContext, Claim(sink.app_id, batch_id)):
        landed = split_landed(frame.toArrow())
    summary = landed.summary
    lap("read")
    plan = sink.plan_batch(summary, batch_id, landed.sure)
    lap("postgres")
    files = settle_candidates(landed, plan.silver_messages, plan.pending, sink.lake, PARTITIONS)
    lap("files")
    result = sink.commit_batch(plan, files)
    lap("commit")
    return summary, result


def _record(
    table: pa.Table, result: Any, seconds: float, phases: dict[str, float] | None = None
) -> None:
    """Report a committed batch (its ``SUMMARY_SCHEMA`` rows): Prometheus metrics, one log line."""
    figures = batch_figures(table, datetime.now(UTC))
    for tenant, count in figures.input_by_tenant.items():
        metrics.INPUT_ROWS.labels(tenant or "unknown").inc(count)
    for (tenant, reason), count in figures.quarantined_by_reason.items():
        metrics.QUARANTINED.labels(tenant or "unknown", reason).inc(count)
    metrics.NEW_EVENTS.inc(result.new_events)
    metrics.BATCH_SECONDS.observe(seconds)
    metrics.ROWS_PER_SECOND.set(table.num_rows / max(seconds, 1e-6))
    metrics.LAST_BATCH.set(result.batch_id)
    metrics.LAST_BATCH_TIME.set_to_current_time()
    for tenant, seconds_behind in figures.lag_seconds.items():
        metrics.LAG_SECONDS.labels(tenant).set(seconds_behind)
    log.info(
        "batch committed",
        extra={
            "batch_id": result.batch_id,
            "input_rows": result.input_rows,
            "valid_rows": result.valid_rows,
            "new_events": result.new_events,
            "quarantined_rows": result.quarantined_rows,
            "quarantined_by_reason": {
                f"{t}/{r}": c for (t, r), c in figures.quarantined_by_reason.items()
            },
            "seconds": round(seconds, 3),
            "phases": phases or {},
            "rows_per_second": round(table.num_rows / max(seconds, 1e-6)),
            "lag_seconds": {t: round(s, 3) for t, s in figures.lag_seconds.items()},
            "replayed": result.skipped_postgres,
            "claimed_by_tasks": result.claimed_by_tasks,
            "skipped_tables": list(result.skipped_tables),
        },
    )


def start_stream(
    spark: SparkSession,
    settings: Settings,
    *,
    topics: list[str] | None = None,
    trigger_seconds: float | None = None,
) -> StreamingQuery:
    """Start the streaming query; it runs until stopped."""
    checkpoint = settings.checkpoint
    _use_s3_checkpoint(spark, settings)
    app_id = app_id_for(Location.of(checkpoint, settings.s3))
    sink = LakeSink(
        settings.lake, settings.pg_dsn, app_id, log_retention_days=settings.lake_log_retention_days
    )
    # A batch an earlier checkpoint left half-written would otherwise never reach Delta.
    repair_unfinished_batches(settings, sink.app_id)

    first_batch = True

    def write(frame: DataFrame, batch_id: int) -> None:
        nonlocal first_batch
        if first_batch:
            # The query is planned and no task runs yet: its planning processes are done.
            stop_planning_workers(frame.sparkSession.sparkContext)
            first_batch = False
        started = time.monotonic()
        phases: dict[str, float] = {}
        summary, result = write_micro_batch(sink, frame, batch_id, phases)
        _record(summary, result, time.monotonic() - started, phases)

    # The source validates and writes the files as it reads: one pass per message, and only
    # the summary and the files' descriptions cross into the JVM.
    spark.dataSource.register(landing_source(Landing(sink.lake, settings.pg_dsn)))
    reader = (
        spark.readStream.format("pulsar")
        .option("serviceUrl", settings.pulsar_url)
        .option("appId", sink.app_id)
        .option("topicTemplate", settings.topic_template)
        .option("maxPayloadBytes", str(settings.stream_max_payload_bytes))
    )
    if topics:
        reader = reader.option("topics", ",".join(topics))
    if settings.stream_max_records_per_batch:
        reader = reader.option("maxRecordsPerTrigger", str(settings.stream_max_records_per_batch))
    validated = reader.load()
    interval = trigger_seconds or settings.stream_trigger_seconds
    return (
        validated.writeStream.foreachBatch(write)
        .option("checkpointLocation", checkpoint)
        .trigger(processingTime=f"{interval} seconds")
        .queryName("lakehouse_stream")
        .start()
    )


def main() -> int:
    """Entry point of ``spark-submit jobs/stream/job.py``."""
    from include.log import configure_logging
    from include.settings import get_settings
    from jobs.stream.session import create_session

    settings = get_settings()
    configure_logging(settings.log_level)
    metrics.serve(settings.stream_metrics_addr)
    spark = create_session(
        settings.spark_master,
        "lakehouse-stream",
        settings.spark_driver_memory,
        settings.spark_cores_max,
        settings.spark_driver_java_options,
    )
    spark.sparkContext.setLogLevel("WARN")
    query = start_stream(spark, settings)
    log.info(
        "stream started",
        extra={"checkpoint": settings.checkpoint, "lake": settings.lake.uri},
    )
    query.awaitTermination()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
