"""Executor side of the ``pulsar`` source: what a partition task runs. It reads its range's
messages into Arrow record batches (``ARROW_SCHEMA``) and, as the partition says, validates and
lands them (``jobs.stream.landing``).

Apart from ``jobs.stream.pulsar_source`` so that the source's planning processes never import
pyarrow: Spark unpickles the registered source class in ``create_data_source``, which otherwise
needs only PySpark (about 45 MiB more per process with pyarrow and numpy, while the query's
first batches run).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    from jobs.stream.pulsar_source import TopicRange, Validation

log = logging.getLogger("jobs.stream.pulsar_source")

ARROW_SCHEMA = pa.schema(
    [
        ("topic", pa.string()),
        ("message_id", pa.string()),
        ("publish_time", pa.timestamp("us", tz="UTC")),
        ("key", pa.string()),
        ("properties", pa.map_(pa.string(), pa.string())),
        ("value", pa.binary()),
    ]
)
# Messages per record batch of a read: each is validated as a whole, and validation holds its
# rows' Python objects until the batch is Arrow. 10,000 made each task worker peak 20-40 MiB
# higher than 2,500 or 1,000 in `make bench-stream` (the stream's peak 1.48-1.56 GiB against
# 1.39-1.43), at the same rate.
_ARROW_BATCH_ROWS = 2_500


def read_partition(part: TopicRange) -> Iterator[pa.RecordBatch]:
    """Executor side: the range's messages as Arrow record batches, each message once; validated
    and flattened when the partition carries a ``Validation``."""
    raw = read_raw(part)
    if part.validation is None:
        return raw
    validated = _validated(raw, part.validation)
    if part.landing is None:
        return validated
    from jobs.stream.landing import land_partition, owned_in, task_claim
    from jobs.stream.sink import TABLES
    from jobs.stream.worker_gc import returning_freed_memory

    return returning_freed_memory(
        land_partition(
            validated, part.landing.lake, TABLES, owned_in(part.landing.dsn, task_claim())
        )
    )


def _validated(raw: Iterator[pa.RecordBatch], validation: Validation) -> Iterator[pa.RecordBatch]:
    from jobs.stream.validate import validate_batch
    from jobs.stream.worker_gc import freeze_survivors

    freeze_survivors()

    currencies = dict(validation.currencies)
    ingest_time = datetime.now(UTC)
    for batch in raw:
        yield validate_batch(
            batch,
            currencies,
            validation.topic_template,
            validation.max_payload_bytes,
            ingest_time,
        )


# One Pulsar client per Python worker process (Spark reuses its Python workers across tasks):
# a client costs a connection and its threads, and every task of every batch used to make one.
_CLIENTS: dict[tuple[str, str | None], Any] = {}


def _worker_client(service_url: str, auth_token: str | None) -> Any:
    key = (service_url, auth_token)
    client = _CLIENTS.get(key)
    if client is None:
        from include.pulsar_client import pulsar_client

        client = _CLIENTS[key] = pulsar_client(service_url, auth_token)
    return client


def _drop_worker_client(service_url: str, auth_token: str | None) -> None:
    client = _CLIENTS.pop((service_url, auth_token), None)
    if client is not None:
        try:
            client.close()
        except Exception as exc:  # closing a broken client must not hide the read's error
            log.warning("pulsar client not closed", extra={"error": str(exc)})


def read_raw(part: TopicRange) -> Iterator[pa.RecordBatch]:
    """The range's raw messages (``ARROW_SCHEMA``), each message once."""
    from include.pulsar_read import read_range

    client = _worker_client(part.service_url, part.auth_token)
    columns: dict[str, list[Any]] = {name: [] for name in ARROW_SCHEMA.names}
    published: list[int] = []
    try:
        for message in read_range(
            client, part.topic, part.after, part.until, read_timeout_ms=part.read_timeout_ms
        ):
            msg_id = message.message_id()
            columns["message_id"].append(
                f"{msg_id.ledger_id()}:{msg_id.entry_id()}:{msg_id.batch_index()}"
            )
            published.append(message.publish_timestamp())
            columns["key"].append(message.partition_key() or None)
            columns["properties"].append(list(message.properties().items()))
            columns["value"].append(message.data())
            if len(published) >= _ARROW_BATCH_ROWS:
                yield _raw_batch(part.topic, columns, published)
                columns = {name: [] for name in ARROW_SCHEMA.names}
                published = []
    except BaseException:
        # A client that failed a read may hold a broken connection: the next task makes anew.
        _drop_worker_client(part.service_url, part.auth_token)
        raise
    if published:
        yield _raw_batch(part.topic, columns, published)


def _raw_batch(
    topic: str, columns: dict[str, list[Any]], published_ms: list[int]
) -> pa.RecordBatch:
    # Publish times stay integers until here: one cast instead of a datetime per message.
    millis = pa.array(published_ms, pa.int64())
    publish_time = pc.multiply(millis, 1_000).cast(pa.timestamp("us", tz="UTC"))
    return pa.RecordBatch.from_arrays(
        [
            pa.array([topic] * len(published_ms), pa.string()),
            pa.array(columns["message_id"], pa.string()),
            publish_time,
            pa.array(columns["key"], pa.string()),
            pa.array(columns["properties"], ARROW_SCHEMA.field("properties").type),
            pa.array(columns["value"], pa.binary()),
        ],
        schema=ARROW_SCHEMA,
    )
