"""Landing a micro-batch where it is read: one pass over every message.

The source's partition task (one per topic) reads its messages, validates them and writes the
Parquet files of all four tables itself: bronze (every valid message), quarantine (every
invalid one), and silver and event_items for the partition's first occurrence of each event
key. Only the files' descriptions and the task's summary rows (``SUMMARY_SCHEMA``, no payloads;
packed as one Arrow IPC value) cross into the JVM and on to the driver, so no message is
converted to a JVM row, cached, or sent to Python a second time.

Silver and event_items need the batch's first occurrence of each event key that no earlier
batch counted. A valid row's tenant is its topic's tenant and one task reads one topic, so the
partition's first occurrences are the batch's. The task claims its first occurrences' keys for
the batch in ``stream_event_keys`` (``postgres_step.claim_keys``, one statement): a key the
batch now holds is counted by it, so its rows go to the *sure* files; a key some recorded batch
counted (an event sent again, or this very batch when it is replayed after PostgreSQL recorded
it) goes to the *maybe* files. The summary rows say which rows went where (``landed_sure``), and
the driver's PostgreSQL step adds up the sure rows once it has checked they are the batch's
claims. The driver then commits the sure files, and of the maybe files the rows it chose
(``settle_candidates``: usually none, so they are deleted; a replay rewrites them with its
chosen rows). If a sure row was not chosen after all (the claims did not match, and the
driver's own claim decided otherwise), the driver rewrites that file too.

The batch a task claims for comes from the job that runs it: the driver sets the Spark local
property ``CLAIM_PROPERTY`` before it collects the batch (``claim_for``). A task without it
(a read outside the stream's micro-batch) only looks its keys up and claims nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import posixpath
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from include.events.flatten import v2_only_columns
from include.lake.storage import Location
from jobs.stream.delta_files import write_files
from jobs.stream.landing_schema import FILE_PREFIX, FILES_SCHEMA, LANDED_SCHEMA, SUMMARY_COLUMN
from jobs.stream.postgres_step import claim_keys, counted_keys
from jobs.stream.shaping import (
    EVENT_KEY,
    MESSAGE_KEY,
    SUMMARY_SCHEMA,
    first_occurrences,
    no_rows,
    rows_of_keys,
    rows_of_messages,
    rows_where,
    summarize,
)
from jobs.stream.sink import ITEMS as _ITEMS
from jobs.stream.sink import PARTITIONS, batch_files
from jobs.stream.sink import SILVER as _SILVER
from jobs.stream.validate import OUTPUT_SCHEMA, VALID

if TYPE_CHECKING:
    from pyspark import SparkContext

log = logging.getLogger("jobs.stream")

_SURE = "landed_sure"
# The summary rows of a task, with whether each went to a sure file.
TASK_SUMMARY_SCHEMA = pa.schema([*SUMMARY_SCHEMA, pa.field(_SURE, pa.bool_())])
_GROUP = PARTITIONS[_SILVER]


# One PostgreSQL connection per Python worker process, like the Pulsar client.
_CONNECTIONS: dict[str, psycopg.Connection] = {}
# The Spark local property naming the batch a job's tasks claim keys for.
CLAIM_PROPERTY = "lakehouse.stream.claim"


@dataclass(frozen=True)
class Claim:
    """The micro-batch (of a checkpoint's app id) a task claims its keys for."""

    app_id: str
    batch_id: int

    def to_property(self) -> str:
        """As ``CLAIM_PROPERTY``'s value."""
        return f"{self.batch_id}:{self.app_id}"

    @classmethod
    def from_property(cls, value: str | None) -> Claim | None:
        """The claim a ``CLAIM_PROPERTY`` value names (None for none)."""
        if not value:
            return None
        batch, app = value.split(":", 1)
        return cls(app, int(batch))


@contextlib.contextmanager
def claim_for(spark: SparkContext, claim: Claim) -> Iterator[None]:
    """Driver side: the jobs this thread runs inside claim for ``claim``'s batch."""
    spark.setLocalProperty(CLAIM_PROPERTY, claim.to_property())
    try:
        yield
    finally:
        # None removes the property (SparkContext.setLocalProperty); PySpark types it str.
        spark.setLocalProperty(CLAIM_PROPERTY, None)  # type: ignore[arg-type]


def task_claim() -> Claim | None:
    """Executor side: the claim the running task's job carries, if any."""
    from pyspark import TaskContext

    context = TaskContext.get()
    return (
        None if context is None else Claim.from_property(context.getLocalProperty(CLAIM_PROPERTY))
    )


def owned_in(dsn: str, claim: Claim | None) -> Callable[[str, list[str]], set[str]]:
    """``land_partition``'s ``owned``, asking the database at ``dsn``: with a ``claim``, the
    keys the task claims; without, those no batch counted yet (claiming nothing)."""

    def owned(tenant: str, event_ids: list[str]) -> set[str]:
        conn = _CONNECTIONS.get(dsn)
        if conn is None or conn.closed:
            conn = _CONNECTIONS[dsn] = psycopg.connect(dsn, autocommit=True)
        try:
            if claim is not None:
                return claim_keys(conn, claim.app_id, claim.batch_id, tenant, event_ids)
            return set(event_ids) - counted_keys(conn, tenant, event_ids)
        except BaseException:
            # A failed connection is not kept for the next task.
            _CONNECTIONS.pop(dsn, None)
            conn.close()
            raise

    return owned


def _with_nulls(batch: pa.RecordBatch, names: list[str]) -> pa.RecordBatch:
    """``batch`` in ``LANDED_SCHEMA``: its own columns, nulls for the others."""
    columns = [
        batch.column(f.name) if f.name in names else pa.nulls(batch.num_rows, f.type)
        for f in LANDED_SCHEMA
    ]
    return pa.RecordBatch.from_arrays(columns, schema=LANDED_SCHEMA)


def land_partition(
    validated: Iterator[pa.RecordBatch],
    lake: Location,
    tables: tuple[str, ...],
    owned: Callable[[str, list[str]], set[str]],
) -> Iterator[pa.RecordBatch]:
    """Executor side: write ``tables``' files of one partition's validated rows
    (``OUTPUT_SCHEMA``) and yield its ``LANDED_SCHEMA`` batches.

    ``owned(tenant, event_ids)`` returns those of the tenant's event ids this batch counts."""
    rows = pa.Table.from_batches(list(validated), schema=OUTPUT_SCHEMA)
    is_valid = pc.equal(rows.column("status"), VALID)
    valid = rows_where(rows, is_valid)
    # Only what the key lookup and the sure/maybe split read: a take copies every column.
    firsts = valid.select([*EVENT_KEY, *MESSAGE_KEY]).take(first_occurrences(valid))
    sure = rows_of_keys(firsts, _owned_keys(firsts, owned)).select(MESSAGE_KEY)
    maybe = firsts.filter(
        pc.invert(pc.is_in(_message_text(firsts), value_set=_message_text(sure)))
    ).select(MESSAGE_KEY)
    files = [(True, f) for f in batch_files(rows, lake, tables, sure)]
    candidates = tuple(t for t in tables if t in (_SILVER, _ITEMS))
    if maybe.num_rows and candidates:
        files += [(False, f) for f in batch_files(valid, lake, candidates, maybe)]
    if files:
        if not logging.getLogger().handlers:
            from include.log import configure_logging

            configure_logging("INFO")
        log.info(
            "delta files written",
            extra={
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "rows": rows.num_rows,
                "files": [f"{f['table']}/{f['path']}" for _, f in files],
            },
        )
    sure_ids = _message_text(sure)
    summary = pa.Table.from_batches(
        [summarize(batch) for batch in rows.to_batches()], schema=SUMMARY_SCHEMA
    )
    flags = pc.is_in(_message_text(summary), value_set=sure_ids)
    summary = summary.append_column(_SURE, flags)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, TASK_SUMMARY_SCHEMA) as stream:
        stream.write_table(summary)
    described = pa.RecordBatch.from_pylist([f for _, f in files], schema=FILES_SCHEMA)
    described = described.rename_columns([FILE_PREFIX + n for n in FILES_SCHEMA.names])
    described = described.append_column(
        FILE_PREFIX + "sure", pa.array([kind for kind, _ in files], pa.bool_())
    )
    yield _with_nulls(described, described.schema.names)
    packed = pa.RecordBatch.from_arrays(
        [pa.array([sink.getvalue().to_pybytes()], pa.binary())], names=[SUMMARY_COLUMN]
    )
    yield _with_nulls(packed, [SUMMARY_COLUMN])


def _message_text(rows: pa.Table | pa.RecordBatch) -> pa.Array:
    """topic NUL message id: one string per message (neither holds a NUL)."""
    joined = pc.binary_join_element_wise(rows.column("topic"), rows.column("message_id"), "\x00")
    return joined.combine_chunks() if isinstance(joined, pa.ChunkedArray) else joined


def _owned_keys(firsts: pa.Table, owned: Callable[[str, list[str]], set[str]]) -> pa.Table:
    """The (tenant, event id) keys of ``firsts`` this batch counts."""
    tenants, events = [], []
    for tenant in pc.unique(firsts.column("tenant_id")).to_pylist():  # one per topic
        ids = firsts.filter(pc.equal(firsts.column("tenant_id"), tenant)).column("event_id")
        found = owned(tenant, ids.to_pylist())
        tenants += [tenant] * len(found)
        events += sorted(found)
    return pa.table(
        {"tenant_id": pa.array(tenants, pa.string()), "event_id": pa.array(events, pa.string())}
    )


@dataclass(frozen=True)
class Landed:
    """A landed batch: its summary rows (``SUMMARY_SCHEMA``, in batch order), which of them
    went to sure files, and its files (``FILES_SCHEMA`` rows, each with ``sure``)."""

    summary: pa.Table
    sure: pa.Array
    files: list[dict[str, Any]]


def split_landed(landed: pa.Table) -> Landed:
    """A collected ``LANDED_SCHEMA`` table as a ``Landed`` (the summaries in task order)."""
    is_file = pc.is_valid(landed.column(FILE_PREFIX + "path"))
    parts = [
        pa.ipc.open_stream(data).read_all()
        for data in landed.column(SUMMARY_COLUMN).drop_null().to_pylist()
    ]
    rows = pa.concat_tables(parts) if parts else no_rows(TASK_SUMMARY_SCHEMA)
    summary = rows.select(SUMMARY_SCHEMA.names)
    sure = rows.column(_SURE).combine_chunks()
    names = [*FILES_SCHEMA.names, "sure"]
    files = landed.filter(is_file).select([FILE_PREFIX + n for n in names])
    return Landed(summary, sure, files.rename_columns(names).to_pylist())


def _group_of(file: dict[str, Any]) -> tuple[Any, Any]:
    values = json.loads(file["partition_values"])
    return values.get("tenant_id"), values.get("event_date")


def _per_group(rows: pa.Table) -> dict[tuple[Any, Any], int]:
    """How many of ``rows`` (summary rows) each (tenant, event day) holds."""
    days = pc.strftime(pc.cast(rows.column("event_time"), pa.date32()), format="%Y-%m-%d")
    counts = (
        pa.table({"tenant_id": rows.column("tenant_id"), "event_date": days})
        .group_by(_GROUP, use_threads=False)
        .aggregate([([], "count_all")])
    )
    # Python over groups (tenants x days), not rows.
    return {(r["tenant_id"], r["event_date"]): r["count_all"] for r in counts.to_pylist()}


def _read_back(location: Location, file: dict[str, Any]) -> pa.Table:
    """A written file's rows with its partition columns, in the schema it was written from."""
    fs, root = location.filesystem()
    schema = pa.ipc.read_schema(pa.py_buffer(file["schema"]))
    with fs.open_input_file(posixpath.join(root, file["path"])) as handle:
        data = pq.read_table(handle)
    values = json.loads(file["partition_values"])
    columns = []
    for column in schema:
        if column.name in values:
            text = pa.array([values[column.name]] * data.num_rows, pa.string())
            columns.append(text.cast(column.type))
        else:
            columns.append(data.column(column.name))
    return pa.table(columns, schema=schema)


def _delete(lake: Location, files: list[dict[str, Any]]) -> None:
    """Delete files no commit will take (they would only wait for the vacuum)."""
    fs, root = lake.filesystem()
    for file in files:
        fs.delete_file(posixpath.join(root, file["table"], file["path"]))


def _without_unused_v2(silver: pa.Table) -> pa.Table:
    """Silver's rule (``shaping.silver_rows``): version-2 columns only with a v2 event."""
    if silver.num_rows and pc.any(pc.equal(silver.column("schema_version"), 2)).as_py():
        return silver
    return silver.drop_columns([n for n in v2_only_columns() if n in silver.column_names])


def settle_candidates(
    landed: Landed,
    chosen: pa.Table,
    pending: tuple[str, ...],
    lake: Location,
    partitions: dict[str, list[str]],
) -> list[dict[str, Any]]:
    """Driver side: the files to commit of a landed batch (``FILES_SCHEMA`` rows).

    ``chosen`` (topic, message id) are the messages silver and event_items get, ``pending`` the
    tables that still need the batch. Files of the other tables are deleted, and so are maybe
    files without a chosen row; a file holding some rows that are not chosen is rewritten with
    the chosen ones only."""
    summary = landed.summary
    valid = pc.equal(summary.column("status"), VALID)
    is_chosen = pc.is_in(_message_text(summary), value_set=_message_text(chosen))
    chosen_rows = summary.filter(pc.and_(valid, is_chosen))
    chosen_maybe = _per_group(summary.filter(pc.and_(is_chosen, pc.invert(landed.sure))))
    wrong_sure = _per_group(summary.filter(pc.and_(landed.sure, pc.invert(is_chosen))))
    maybe_rows: dict[tuple[Any, Any], int] = {}
    written: set[tuple[Any, Any, bool]] = set()
    for f in landed.files:
        if f["table"] != _SILVER:
            continue
        group = _group_of(f)
        if (*group, f["sure"]) in written:
            # event_items' rows are told apart by event key only, which holds within a task.
            raise RuntimeError(f"two tasks landed silver rows of {group}: one topic per task")
        written.add((*group, f["sure"]))
        if not f["sure"]:
            maybe_rows[group] = f["num_records"]
    keep, unused = [], []
    for f in landed.files:
        described = {k: v for k, v in f.items() if k != "sure"}
        if f["table"] not in pending:
            unused.append(described)
            continue
        if f["table"] not in (_SILVER, _ITEMS):
            keep.append(described)
            continue
        group = _group_of(f)
        if f["sure"]:
            exact = group not in wrong_sure
        else:
            chosen_here = chosen_maybe.get(group, 0)
            if chosen_here == 0:
                unused.append(described)
                continue
            exact = chosen_here == maybe_rows.get(group, 0)
        if exact:
            keep.append(described)
            continue
        unused.append(described)
        keep += _rewrite(described, lake, partitions, chosen, chosen_rows)
    _delete(lake, unused)
    return keep


def _rewrite(
    file: dict[str, Any],
    lake: Location,
    partitions: dict[str, list[str]],
    chosen: pa.Table,
    chosen_rows: pa.Table,
) -> list[dict[str, Any]]:
    """``file`` written again with its chosen rows only (a replay, or a key counted late)."""
    name = file["table"]
    rows = _read_back(lake / name, file)
    if name == _SILVER:
        rows = _without_unused_v2(rows_of_messages(rows, chosen))
    else:
        rows = rows_of_keys(rows, chosen_rows.select(EVENT_KEY))
    return write_files(name, rows, lake / name, partitions[name])
