"""A Spark 4.2 Python streaming data source for Pulsar, registered as ``pulsar``.

Offsets are, per topic, the position ``[ledger, entry, batch_index]`` of the last message
included; a topic missing from an offset is read from the earliest message. ``read()`` runs on
the executors and yields Arrow record batches (topic, message_id, publish_time, key, properties,
value); it drops redeliveries and retries stalls (``include.pulsar_read``) and never returns a
message past its end offset. Topics come from the tenant registry (one per active tenant) and
are refreshed every ``topicRefreshSeconds``. ``commit(end)`` acknowledges cumulatively on a
durable subscription, so the broker keeps every message not yet processed.

With ``validate`` set to ``true`` the read also validates and flattens (one Python pass per
message, in the same worker that read it): the source's schema is then the validated one
(``jobs.stream.validate.OUTPUT_SCHEMA``), and the registered tenants' currencies, read once per
micro-batch on the driver, travel to the executors inside each partition.

A source made by ``landing_source(landing)`` (implies ``validate``) also writes each
partition's Delta files, uncommitted, and yields only its summary and the files' descriptions
(``jobs.stream.landing``): the stream's one pass over every message. The landing (the lake, its
S3 connection, the PostgreSQL DSN) travels inside the registered, pickled source class and then
inside each partition, never in the options.

Options: ``serviceUrl``, ``topics`` (comma-separated; otherwise the tenant registry),
``maxRecordsPerTrigger``, ``subscription``, ``topicRefreshSeconds``, ``readTimeoutMs``,
``validate``, ``topicTemplate``, ``maxPayloadBytes`` (the last two with ``validate``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pyspark.sql.datasource import DataSource, DataSourceStreamReader, InputPartition
from pyspark.sql.streaming.datasource import ReadAllAvailable, ReadLimit, ReadMaxRows

if TYPE_CHECKING:
    import pyarrow as pa

    from include.lake.storage import Location
    from include.settings import Settings

log = logging.getLogger(__name__)

SOURCE_SCHEMA = (
    "topic string, message_id string, publish_time timestamp, key string, "
    "properties map<string,string>, value binary"
)
# ``jobs.stream.landing_schema.LANDED_SCHEMA`` in Spark's DDL (a unit test holds them equal):
# planning asks the source for its schema, and as Arrow that would import pyarrow there.
LANDED_DDL = (
    "file_table string, file_path string, file_size bigint, file_partition_values string, "
    "file_num_records bigint, file_stats string, file_schema binary, file_sure boolean, "
    "summary binary"
)
# Assumed when a sample read gets nothing in time: a full producer batch, so that a failed
# sample errs towards smaller micro-batches (the sample is taken again next time).
_DEFAULT_ROWS_PER_ENTRY = 1_000
# How many of the query's latest batches a topic's messages per entry are averaged over: one
# batch's entries vary with the producers' timing (a cut after one batch's average overshot the
# limit by 39 % in tests/integration/test_stream.py), a few smooth that out and still follow
# a change of the producers' batching within seconds.
_SIZED_FROM_BATCHES = 8

Offset = dict[str, dict[str, list[int]]]


@dataclass(frozen=True)
class Validation:
    """What validating a partition's messages needs, shipped inside the partition."""

    # Every registered tenant's currency, as of the micro-batch's planning.
    currencies: tuple[tuple[str, str], ...]
    topic_template: str
    max_payload_bytes: int

    @classmethod
    def from_registry(
        cls, settings: Settings, topic_template: str, max_payload_bytes: int
    ) -> Validation:
        """The context with the currencies the tenant registry holds now."""
        from include.db import connect

        with connect(settings) as conn:
            rows = conn.execute("SELECT tenant_id, currency FROM tenants").fetchall()
        currencies = tuple(sorted((str(t), str(c)) for t, c in rows))
        return cls(currencies, topic_template, max_payload_bytes)


@dataclass(frozen=True)
class Landing:
    """Where a partition task lands its rows: the lake, and the PostgreSQL database whose
    ``stream_event_keys`` it looks its keys up in. Travels inside the pickled partition."""

    lake: Location
    dsn: str = field(repr=False)


@dataclass(frozen=True)
class TopicRange(InputPartition):
    """Messages of ``topic`` after ``after`` (exclusive) up to ``until`` (inclusive)."""

    topic: str
    after: tuple[int, int, int] | None
    until: tuple[int, int, int]
    service_url: str
    read_timeout_ms: int
    # Travels to the executors inside the pickled partition, never in the source's options
    # (Spark shows those in plans and logs).
    auth_token: str | None = field(default=None, repr=False)
    # Set: the read yields validated rows (OUTPUT_SCHEMA) instead of raw messages.
    validation: Validation | None = None
    # Set (with validation): the read writes the Delta files and yields LANDED_SCHEMA.
    landing: Landing | None = field(default=None, repr=False)


def _position(value: list[int] | None) -> tuple[int, int, int] | None:
    return None if value is None else (value[0], value[1], value[2])


def _across_ledgers(after: tuple[int, int, int] | None, newest: tuple[int, int, int]) -> bool:
    """Whether the range spans a ledger change, where entry counts (so row counts) are unknown."""
    return after is not None and after[0] != newest[0]


class PulsarStreamReader(DataSourceStreamReader):
    """Driver side: discovers topics, plans ranges, moves the durable cursor on commit."""

    def __init__(self, options: dict[str, str], landing: Landing | None = None) -> None:
        from include.settings import Settings

        # Spark hands data sources their options with lower-cased keys.
        options = {k.lower(): v for k, v in options.items()}
        settings = Settings()
        self._service_url = options.get("serviceurl", settings.pulsar_url)
        self._fixed_topics = [t for t in options.get("topics", "").split(",") if t]
        self._max_records = int(options.get("maxrecordspertrigger", "0"))
        self._subscription = options.get("subscription", "lakehouse-stream")
        self._refresh_s = float(options.get("topicrefreshseconds", "5"))
        self._read_timeout_ms = int(options.get("readtimeoutms", "1000"))
        # The app id of the query's checkpoint: its own batches are not "earlier" ones.
        self._app_id = options.get("appid", "")
        self._landing = landing
        self._validate = options.get("validate", "false").lower() == "true" or landing is not None
        self._topic_template = options.get("topictemplate", settings.topic_template)
        self._max_payload_bytes = int(
            options.get("maxpayloadbytes", str(settings.stream_max_payload_bytes))
        )
        self._settings = settings
        self._client: Any = None
        self._db: Any = None  # psycopg.Connection, imported where it is first used
        self._cursors: dict[str, Any] = {}
        self._topics: list[str] = []
        self._topics_at = 0.0
        self._rows_per_entry: dict[str, float] = {}
        self._sized_from: dict[str, list[int]] | None = None  # the start last sized from

    # -- helpers -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _database(self) -> Iterator[Any]:
        """The reader's one PostgreSQL connection (autocommit: no snapshot is held between
        calls), opened on first use and again after it broke.

        The tenant list (every ``topicRefreshSeconds``) and the entry sizes (every committed
        batch) used to open a connection each time: a backend fork and a login per batch."""
        import psycopg

        from include.db import connect

        if self._db is None or self._db.closed:
            self._db = connect(self._settings, autocommit=True)
        try:
            yield self._db
        except psycopg.OperationalError:
            # PostgreSQL restarted or the connection broke: the next call opens a new one.
            self._db.close()
            self._db = None
            raise

    def _pulsar(self) -> Any:

        if self._client is None:
            from include.pulsar_client import pulsar_client

            self._client = pulsar_client(self._service_url, self._settings.pulsar_token)
        return self._client

    def _cursor(self, topic: str) -> Any:
        """A durable, non-prefetching consumer per topic: newest id, and commit's cursor."""
        import pulsar

        consumer = self._cursors.get(topic)
        if consumer is None:
            consumer = self._pulsar().subscribe(
                topic,
                self._subscription,
                consumer_type=pulsar.ConsumerType.Exclusive,
                initial_position=pulsar.InitialPosition.Earliest,
                receiver_queue_size=0,
            )
            self._cursors[topic] = consumer
        return consumer

    def topics(self) -> list[str]:
        """Current topics: fixed by option, or one per active tenant (refreshed periodically)."""
        if self._fixed_topics:
            return self._fixed_topics
        if time.monotonic() - self._topics_at >= self._refresh_s:
            from include.tenants import list_tenants, topic_for

            with self._database() as conn:
                tenants = list_tenants(conn)
            self._topics = [topic_for(t.tenant_id, self._settings.topic_template) for t in tenants]
            self._topics_at = time.monotonic()
        return self._topics

    def _newest(self, topic: str) -> tuple[int, int, int] | None:
        from include.pulsar_read import newest_position

        return newest_position(self._cursor(topic))

    # -- DataSourceStreamReader ----------------------------------------------------------------
    def initialOffset(self) -> Offset:
        """Where a query without checkpoint starts: after the last batch committed to
        PostgreSQL by an earlier checkpoint (so a lost checkpoint re-reads nothing), else at
        each topic's start.

        Spark asks again when it replays the checkpoint's batch 0, so the query's own batches
        (``appId``) are left out: otherwise a replay of a batch 0 that PostgreSQL committed
        would start at its own end and read nothing, and write nothing to the Delta tables
        that still lacked it."""
        with self._database() as conn:
            row = conn.execute(
                "SELECT end_offset FROM stream_batches WHERE app_id <> %s "
                "ORDER BY committed_at DESC LIMIT 1",
                (self._app_id,),
            ).fetchone()
        return {"topics": {} if row is None else dict(row[0])}

    def getDefaultReadLimit(self) -> ReadLimit:
        return ReadMaxRows(self._max_records) if self._max_records > 0 else ReadAllAvailable()

    def latestOffset(self, start: Offset, limit: ReadLimit) -> Offset:
        from include.pulsar_read import covers, messages_per_entry
        from jobs.stream.admission import allocate

        begun = start.get("topics", {})
        latest: dict[str, list[int]] = dict(begun)
        budget = limit.max_rows if isinstance(limit, ReadMaxRows) else None
        waiting: dict[str, tuple[tuple[int, int, int] | None, tuple[int, int, int]]] = {}
        for topic in self.topics():
            newest = self._newest(topic)
            after = _position(begun.get(topic))
            if covers(after, newest):
                continue
            assert newest is not None
            waiting[topic] = (after, newest)
        if budget is None:
            latest.update({topic: list(newest) for topic, (_, newest) in waiting.items()})
            return {"topics": latest}
        if begun != self._sized_from:
            self._learn_entry_sizes()
            self._sized_from = begun
        # By backlog: what idle topics do not use goes to the topics that have more to read.
        backlogs = {
            topic: self._backlog(topic, after, newest, messages_per_entry)
            for topic, (after, newest) in waiting.items()
        }
        admitted = allocate(budget, backlogs)
        for topic, (after, newest) in waiting.items():
            latest[topic] = list(self._cut(topic, after, newest, admitted[topic]))
        return {"topics": latest}

    @staticmethod
    def _first_entry(after: tuple[int, int, int] | None) -> int:
        """The first entry not wholly read after ``after``."""
        return 0 if after is None else after[1] + (1 if after[2] < 0 else 0)

    def _learn_entry_sizes(self) -> None:
        """Messages per entry of each topic as this query's last committed batch read them.

        The sample of a topic's first entries (``messages_per_entry``) sees the producers'
        small first batches: it estimated a third of the real size, and batches of 131,157
        messages were admitted for a limit of 50,000 (each task's memory grows with them). The
        driver records what each batch really read (``stream_batches.entry_sizes``), once per
        batch: the start offset changes only when one was committed."""
        if not self._app_id:
            return
        with self._database() as conn:
            rows = conn.execute(
                "SELECT topic, sum((size ->> 0)::bigint), sum((size ->> 1)::bigint) "
                "FROM (SELECT entry_sizes FROM stream_batches "
                "      WHERE app_id = %s AND entry_sizes IS NOT NULL "
                "      ORDER BY batch_id DESC LIMIT %s) AS recent, "
                "     jsonb_each(recent.entry_sizes) AS sizes(topic, size) "
                "GROUP BY topic",
                (self._app_id, _SIZED_FROM_BATCHES),
            ).fetchall()
        for topic, messages, entries in rows:
            if messages > 0 and entries > 0:
                self._rows_per_entry[topic] = int(messages) / int(entries)

    def _per_entry(
        self,
        topic: str,
        after: tuple[int, int, int] | None,
        newest: tuple[int, int, int],
        sample: Any,
    ) -> float:
        per_entry = self._rows_per_entry.get(topic)
        if per_entry is None or after is None:
            # No batch has read this topic yet: sample its entries where the range starts and
            # halfway to the newest. A producer's first entries are its smallest (the burst
            # benchmark's first batch was 118,507 messages for a limit of 50,000 when sized
            # from them alone), and the larger estimate errs towards a smaller batch.
            client = self._pulsar()
            per_entry = sample(client, topic, after)
            middle = (self._first_entry(after) + newest[1]) // 2
            if not _across_ledgers(after, newest) and middle > self._first_entry(after):
                per_entry = max(per_entry, sample(client, topic, (newest[0], middle - 1, -1)))
            if per_entry > 0:
                self._rows_per_entry[topic] = per_entry
        return per_entry or _DEFAULT_ROWS_PER_ENTRY

    def _backlog(
        self,
        topic: str,
        after: tuple[int, int, int] | None,
        newest: tuple[int, int, int],
        sample: Any,
    ) -> float:
        """About how many messages wait on ``topic`` (unbounded across a ledger change, where
        entry counts are unknown)."""
        if _across_ledgers(after, newest):
            return float("inf")
        entries = newest[1] - self._first_entry(after) + 1
        return max(1, entries) * self._per_entry(topic, after, newest, sample)

    def _cut(
        self,
        topic: str,
        after: tuple[int, int, int] | None,
        newest: tuple[int, int, int],
        rows: int,
    ) -> tuple[int, int, int]:
        """Cut the range after about ``rows`` messages, at an entry boundary."""
        if _across_ledgers(after, newest):
            return newest
        per_entry = self._rows_per_entry.get(topic) or _DEFAULT_ROWS_PER_ENTRY
        entries = max(1, int(rows // per_entry))
        last_entry = self._first_entry(after) + entries - 1
        if last_entry >= newest[1]:
            return newest
        return (newest[0], last_entry, -1)

    def _validation(self) -> Validation | None:
        """The partitions' validation context: the tenants' currencies, read once per batch."""
        if not self._validate:
            return None
        return Validation.from_registry(
            self._settings, self._topic_template, self._max_payload_bytes
        )

    def partitions(self, start: Offset, end: Offset) -> Sequence[InputPartition]:
        begun = start.get("topics", {})
        validation = self._validation()
        landing = self._landing
        ranges = []
        for topic, until in sorted(end.get("topics", {}).items()):
            after = _position(begun.get(topic))
            if after is not None and list(after) == until:
                continue
            ranges.append(
                TopicRange(
                    topic,
                    after,
                    (until[0], until[1], until[2]),
                    self._service_url,
                    self._read_timeout_ms,
                    self._settings.pulsar_token,
                    validation,
                    landing,
                )
            )
        return ranges

    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:
        from jobs.stream.partition_read import read_partition

        assert isinstance(partition, TopicRange)
        return read_partition(partition)

    def commit(self, end: Offset) -> None:
        from include.pulsar_read import message_id_at

        for topic, until in end.get("topics", {}).items():
            try:
                self._cursor(topic).acknowledge_cumulative(
                    message_id_at((until[0], until[1], until[2]))
                )
            except Exception as exc:  # the cursor only frees broker space: never fail on it
                log.warning("cursor not moved", extra={"topic": topic, "error": str(exc)})

    def stop(self) -> None:
        if self._db is not None:
            self._db.close()
        for consumer in self._cursors.values():
            consumer.close()
        if self._client is not None:
            self._client.close()


class PulsarDataSource(DataSource):
    """``spark.readStream.format("pulsar")``."""

    # Set on the class ``landing_source`` makes.
    landing: Landing | None = None

    @classmethod
    def name(cls) -> str:
        return "pulsar"

    def schema(self) -> Any:
        options = {k.lower(): v for k, v in self.options.items()}
        if self.landing is not None:
            return LANDED_DDL
        if options.get("validate", "false").lower() == "true":
            from pyspark.sql.pandas.types import from_arrow_schema

            from jobs.stream.validate import OUTPUT_SCHEMA

            return from_arrow_schema(OUTPUT_SCHEMA)
        return SOURCE_SCHEMA

    def streamReader(self, schema: Any) -> DataSourceStreamReader:
        return PulsarStreamReader(dict(self.options), self.landing)


def landing_source(landing: Landing) -> type[PulsarDataSource]:
    """The ``pulsar`` source whose reads land the batch at ``landing``: register it, then
    ``load()`` (Spark pickles the registered class, so its landing reaches the process that
    plans the micro-batches)."""
    return type("LandingPulsarDataSource", (PulsarDataSource,), {"landing": landing})
