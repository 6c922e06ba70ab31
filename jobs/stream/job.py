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
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.pandas.types import from_arrow_schema
from pyspark.sql.streaming.query import StreamingQuery

from include.lake.storage import Location, as_location
from include.settings import Settings
from jobs.stream import metrics
from jobs.stream.delta_files import FILES_SCHEMA
from jobs.stream.repair import repair_unfinished_batches
from jobs.stream.shaping import SUMMARY_SCHEMA, batch_figures, summarize
from jobs.stream.sink import BatchResult, LakeSink, batch_files
from jobs.stream.validate import OUTPUT_SCHEMA

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


def _summarizer(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        yield summarize(batch)


def _file_writer(lake: Location, tables: tuple[str, ...], silver_messages: Any) -> Any:
    """The executors' side of a batch: write the Delta files of one partition's rows.

    ``lake`` travels in the function (a standalone cluster's workers do not have the driver's
    environment, so no ``LAKEHOUSE_*`` settings); ``silver_messages`` is a broadcast."""

    def write(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import os
        import socket

        from include.log import configure_logging

        rows = pa.Table.from_batches(list(batches), schema=OUTPUT_SCHEMA)
        files = batch_files(rows, lake, tables, silver_messages.value)
        if files:
            if not logging.getLogger().handlers:
                configure_logging("INFO")
            log.info(
                "delta files written",
                extra={
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                    "rows": rows.num_rows,
                    "files": [f"{f['table']}/{f['path']}" for f in files],
                },
            )
        yield pa.RecordBatch.from_pylist(files, schema=FILES_SCHEMA)

    return write


def write_micro_batch(
    sink: LakeSink, frame: DataFrame, batch_id: int
) -> tuple[pa.Table, BatchResult]:
    """One micro-batch: executors summarize their rows, the driver runs the PostgreSQL step and
    chooses silver's rows, executors write the Delta files, the driver commits them.

    The frame is persisted for the two passes, so Pulsar is read once."""
    frame.persist()
    try:
        summary = frame.mapInArrow(_summarizer, from_arrow_schema(SUMMARY_SCHEMA)).toArrow()
        summary = summary.cast(SUMMARY_SCHEMA)
        plan = sink.plan_batch(summary, batch_id)
        files: list[dict[str, Any]] = []
        if plan.pending:
            chosen = frame.sparkSession.sparkContext.broadcast(plan.silver_messages)
            try:
                writer = _file_writer(sink.lake, plan.pending, chosen)
                files = (
                    frame.mapInArrow(writer, from_arrow_schema(FILES_SCHEMA)).toArrow().to_pylist()
                )
            finally:
                chosen.destroy()
        return summary, sink.commit_batch(plan, files)
    finally:
        frame.unpersist()


def _record(table: pa.Table, result: Any, seconds: float) -> None:
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
            "rows_per_second": round(table.num_rows / max(seconds, 1e-6)),
            "lag_seconds": {t: round(s, 3) for t, s in figures.lag_seconds.items()},
            "replayed": result.skipped_postgres,
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

    def write(frame: DataFrame, batch_id: int) -> None:
        started = time.monotonic()
        summary, result = write_micro_batch(sink, frame, batch_id)
        _record(summary, result, time.monotonic() - started)

    # The source validates as it reads: one Python worker type, one pass per message.
    reader = (
        spark.readStream.format("pulsar")
        .option("serviceUrl", settings.pulsar_url)
        .option("appId", sink.app_id)
        .option("validate", "true")
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
