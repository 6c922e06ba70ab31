"""Completing micro-batches that PostgreSQL committed but the Delta tables did not, when the
Spark checkpoint that would have replayed them is gone.

With its checkpoint, the job replays an unfinished batch itself. Without it, the new query runs
under a new ``app_id`` and starts after the last batch PostgreSQL committed, so that batch's Delta
appends would never happen. The sink finishes one batch before the next begins, so only the
last batch of each earlier ``app_id`` can be unfinished. Its messages are the range between the
end offsets of the batch committed before it and its own; they are read from Pulsar again (the
durable subscription keeps them: its cursor moves only after a batch completed), validated
the same way, and written through the same sink under the old ``app_id`` and batch id, which
skips the PostgreSQL side and every Delta table that already holds the batch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pyarrow as pa

from include.db import connect
from include.settings import Settings
from jobs.stream.partition_read import read_partition
from jobs.stream.pulsar_source import TopicRange, Validation
from jobs.stream.sink import TABLES, LakeSink
from jobs.stream.validate import OUTPUT_SCHEMA

log = logging.getLogger(__name__)


class RepairError(RuntimeError):
    """An unfinished batch cannot be read again as it was."""


Offsets = dict[str, list[int]]


@dataclass(frozen=True)
class CommittedBatch:
    """A batch PostgreSQL committed: its id, and the offsets it started after and ended at."""

    app_id: str
    batch_id: int
    input_rows: int
    start: Offsets
    end: Offsets

    def ranges(self, settings: Settings, validation: Validation | None = None) -> list[TopicRange]:
        """The topic ranges this batch read (validated on reading with ``validation``)."""
        out = []
        for topic, until in sorted(self.end.items()):
            after = self.start.get(topic)
            if after == until:
                continue
            out.append(
                TopicRange(
                    topic,
                    None if after is None else (after[0], after[1], after[2]),
                    (until[0], until[1], until[2]),
                    settings.pulsar_url,
                    read_timeout_ms=1_000,
                    auth_token=settings.pulsar_token,
                    validation=validation,
                )
            )
        return out


def last_batches_of_other_apps(settings: Settings, current_app_id: str) -> list[CommittedBatch]:
    """The last batch PostgreSQL committed for every ``app_id`` but the current one."""
    with connect(settings) as conn:
        rows = conn.execute(
            "SELECT DISTINCT ON (app_id) app_id, batch_id, input_rows, end_offset, committed_at "
            "FROM stream_batches WHERE app_id <> %s ORDER BY app_id, batch_id DESC",
            (current_app_id,),
        ).fetchall()
        batches = []
        for app_id, batch_id, input_rows, end, committed_at in rows:
            previous = conn.execute(
                "SELECT end_offset FROM stream_batches WHERE committed_at < %s "
                "ORDER BY committed_at DESC LIMIT 1",
                (committed_at,),
            ).fetchone()
            start = {} if previous is None else dict(previous[0])
            batches.append(
                CommittedBatch(str(app_id), int(batch_id), int(input_rows), start, dict(end))
            )
    return batches


def _unfinished_tables(sink: LakeSink, batch_id: int) -> list[str]:
    return [
        name
        for name in TABLES
        if (version := sink.committed_version(name)) is None or version < batch_id
    ]


def read_and_validate(settings: Settings, batch: CommittedBatch) -> pa.Table:
    """The batch's messages read again from Pulsar and validated as the stream does: by the
    same partition read."""
    validation = Validation.from_registry(
        settings, settings.topic_template, settings.stream_max_payload_bytes
    )
    validated = [
        rows_read
        for part in batch.ranges(settings, validation)
        for rows_read in read_partition(part)
    ]
    return pa.Table.from_batches(validated, schema=OUTPUT_SCHEMA)


def repair_unfinished_batches(settings: Settings, current_app_id: str) -> list[CommittedBatch]:
    """Write the Delta side of every earlier app's unfinished last batch; return those batches."""
    repaired = []
    for batch in last_batches_of_other_apps(settings, current_app_id):
        sink = LakeSink(
            settings.lake,
            settings.pg_dsn,
            batch.app_id,
            log_retention_days=settings.lake_log_retention_days,
        )
        missing = _unfinished_tables(sink, batch.batch_id)
        if not missing:
            continue
        log.warning(
            "completing a batch committed to PostgreSQL but not to Delta",
            extra={"app_id": batch.app_id, "batch_id": batch.batch_id, "tables": missing},
        )
        table = read_and_validate(settings, batch)
        if table.num_rows != batch.input_rows:
            raise RepairError(
                f"batch {batch.batch_id} of {batch.app_id} read {batch.input_rows} messages, "
                f"but its range now holds {table.num_rows}: its Delta rows ({', '.join(missing)}) "
                "cannot be rewritten from Pulsar"
            )
        result = sink.write_batch(table, batch.batch_id)
        log.info(
            "batch completed",
            extra={
                "app_id": batch.app_id,
                "batch_id": batch.batch_id,
                "input_rows": result.input_rows,
                "skipped_tables": list(result.skipped_tables),
            },
        )
        repaired.append(batch)
    return repaired
