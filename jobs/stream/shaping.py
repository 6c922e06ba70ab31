"""The Arrow shaping of a micro-batch: pure functions of Arrow tables, no I/O.

Every step that touches every row is an Arrow compute call (issue #14: "every step after the
read is Arrow compute, not Python loops over rows"); Python only loops over what is small (the
topics, the tenants, the groups). ``tests/columnar_reference.py`` keeps the row-loop versions
these replaced; ``tests/unit/test_shaping.py`` compares the two on random batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from include.events.flatten import v2_only_columns
from jobs.stream.validate import OUTPUT_SCHEMA, QUARANTINED

_META = ["topic", "message_id", "publish_time", "ingest_time"]
# What the driver needs of each row: the PostgreSQL transaction's keys, metrics and offsets,
# the choice of the rows silver and items get, the job's metrics. Not the payloads.
_SUMMARY_COLUMNS = [
    "status",
    "reason",
    "topic",
    "topic_tenant",
    "message_id",
    "publish_time",
    "ingest_time",
    "tenant_id",
    "event_id",
    "event_type",
    "event_time",
    "order_total_amount",
]
SUMMARY_SCHEMA = pa.schema(
    [OUTPUT_SCHEMA.field(n) for n in _SUMMARY_COLUMNS] + [pa.field("item_quantity", pa.int64())]
)
# The columns of one message's position, and of the keys silver's rows are chosen by.
MESSAGE_KEY = ["topic", "message_id"]
EVENT_KEY = ["tenant_id", "event_id"]
_ROW = "__row"
_SEP = "\x00"


def no_rows(schema: pa.Schema) -> pa.Table:
    """A table of ``schema`` without rows.

    ``Schema.empty_table()`` imports pandas (40 MiB of every process that calls it: the driver
    and each task worker, which otherwise never need it)."""
    return pa.Table.from_batches([], schema=schema)


def _row_numbers(count: int) -> pa.Array:
    """0, 1, ..., ``count`` - 1 as int64, built in Arrow."""
    ones = pc.fill_null(pa.nulls(count, pa.int64()), 1)
    return pc.subtract(pc.cumulative_sum(ones), 1)


def summarize(rows: pa.RecordBatch) -> pa.RecordBatch:
    """The ``SUMMARY_SCHEMA`` columns of validated rows (on an executor, or on the driver).

    ``item_quantity`` is the sum of a row's item quantities, 0 without items: a running total
    over the flattened lines, differenced at each row's end and start.
    """
    lines = rows.column("items")
    lengths = pc.fill_null(pc.list_value_length(lines), 0).cast(pa.int64())
    ends = pc.cumulative_sum_checked(lengths)
    starts = pc.subtract(ends, lengths)
    quantities = pc.struct_field(pc.list_flatten(lines), "quantity").cast(pa.int64())
    running = pa.concat_arrays([pa.array([0], pa.int64()), pc.cumulative_sum_checked(quantities)])
    totals = pc.subtract_checked(pc.take(running, ends), pc.take(running, starts))
    columns = [rows.column(n) for n in _SUMMARY_COLUMNS]
    return pa.RecordBatch.from_arrays([*columns, totals], schema=SUMMARY_SCHEMA)


def first_occurrences(table: pa.Table, keys: list[str] = EVENT_KEY) -> pa.Array:
    """Indexes (ascending) of the first row of each ``keys`` value in ``table``'s order.

    The first is the smallest row index of its group, whatever order the grouping visits rows
    in, so a replay of the same batch chooses the same rows. Nulls are a key value like any
    other (two rows with a null tenant and the same event id are one group).
    """
    indexed = table.select(keys).append_column(_ROW, _row_numbers(table.num_rows))
    firsts = indexed.group_by(keys, use_threads=False).aggregate([(_ROW, "min")])
    return firsts.column(f"{_ROW}_min").combine_chunks().sort()


def end_offsets(table: pa.Table, previous: dict[str, list[int]]) -> dict[str, list[int]]:
    """Cumulative per-topic position of the last entry read, after this batch.

    The source plans every range to end on a whole entry, so a batch has read the whole entry
    of its last message: the position is ``[ledger, entry, -1]``. Recording the message's own
    batch index instead would make a restart from this offset wait for the rest of an entry
    that has no more messages. Message ids ``ledger:entry:batch`` compare as numbers.
    """
    offsets = dict(previous)
    if table.num_rows == 0:
        return offsets
    ledger, entry = _entry_positions(table)
    topic = table.column("topic")
    newest_ledger = (
        pa.table({"topic": topic, "ledger": ledger})
        .group_by("topic", use_threads=False)
        .aggregate([("ledger", "max")])
    )
    # Each row's topic's newest ledger, then the newest entry in that ledger.
    of_topic = pc.index_in(topic, value_set=newest_ledger.column("topic").combine_chunks())
    in_newest = pc.equal(ledger, pc.take(newest_ledger.column("ledger_max"), of_topic))
    newest = (
        pa.table({"topic": topic, "ledger": ledger, "entry": entry})
        .filter(in_newest)
        .group_by(["topic", "ledger"], use_threads=False)
        .aggregate([("entry", "max")])
    )
    for row in newest.to_pylist():  # one per topic
        position = [row["ledger"], row["entry_max"], -1]
        name = row["topic"]
        if name not in offsets or position > offsets[name]:
            offsets[name] = position
    return offsets


def _entry_positions(table: pa.Table) -> tuple[pa.Array, pa.Array]:
    """Each row's ledger and entry, parsed from its ``ledger:entry:batch`` message id (the batch
    index is checked, not returned)."""
    parts = pc.split_pattern(table.column("message_id"), ":")
    if not pc.all(pc.equal(pc.list_value_length(parts), 3)).as_py():
        raise ValueError("a message id is not ledger:entry:batch")
    ledger, entry, _ = (pc.list_element(parts, i).cast(pa.int64()) for i in range(3))
    return ledger, entry


def entry_sizes(table: pa.Table) -> dict[str, list[int]]:
    """Per topic of a batch's rows: ``[messages, entries]``, the messages it read and the
    distinct Pulsar entries they came in (what the source sizes its next batch from)."""
    if table.num_rows == 0:
        return {}
    ledger, entry = _entry_positions(table)
    per_entry = (
        pa.table({"topic": table.column("topic"), "ledger": ledger, "entry": entry})
        .group_by(["topic", "ledger", "entry"], use_threads=False)
        .aggregate([([], "count_all")])
    )
    per_topic = per_entry.group_by("topic", use_threads=False).aggregate(
        [("count_all", "sum"), ([], "count_all")]
    )
    return {
        row["topic"]: [row["count_all_sum"], row["count_all"]]
        for row in per_topic.to_pylist()  # one per topic
    }


def _keys_table(keys: set[tuple[str, str]] | pa.Table) -> pa.Table:
    if isinstance(keys, pa.Table):
        return keys.select(EVENT_KEY)
    tenants, events = zip(*keys, strict=True) if keys else ((), ())
    return pa.table(
        {"tenant_id": pa.array(tenants, pa.string()), "event_id": pa.array(events, pa.string())}
    )


def keys_from_csv(data: bytes) -> pa.Table:
    """(tenant_id, event_id) string columns of headerless CSV as PostgreSQL's COPY writes it."""
    if not data:
        return pa.table(
            {"tenant_id": pa.array([], pa.string()), "event_id": pa.array([], pa.string())}
        )
    return pa_csv.read_csv(
        pa.py_buffer(data),
        read_options=pa_csv.ReadOptions(column_names=EVENT_KEY),
        parse_options=pa_csv.ParseOptions(newlines_in_values=True),
        convert_options=pa_csv.ConvertOptions(
            column_types={n: pa.string() for n in EVENT_KEY}, quoted_strings_can_be_null=False
        ),
    )


def _pair_key(table: pa.Table, first: str, second: str) -> pa.ChunkedArray | None:
    """``first`` NUL ``second`` per row: one string that is a different string for different
    pairs as long as no ``second`` holds a NUL (then the last NUL splits the pair); None when
    one does. A null in either column makes a null key (which matches nothing below)."""
    if pc.any(pc.match_substring(table.column(second), _SEP)).as_py():
        return None
    return pc.binary_join_element_wise(table.column(first), table.column(second), _SEP)


def rows_where(rows: pa.Table, mask: pa.Array | pa.ChunkedArray) -> pa.Table:
    """``rows`` where ``mask`` is true (a null drops the row, as ``filter`` does): ``rows``
    itself when that is every row. A filter copies every column, the payloads too, and a task's
    batch is usually all valid and all new (each copy was about 30 MB per 25,000 messages)."""
    if mask.null_count == 0 and pc.all(mask).as_py() is not False:
        return rows
    return rows.filter(mask)


def _in_pairs(rows: pa.Table, values: pa.Table, pair: list[str]) -> pa.Table:
    """``rows`` whose ``pair`` columns' values are a row of ``values``, in ``rows``' order."""
    keys, wanted = _pair_key(rows, *pair), _pair_key(values, *pair)
    if keys is not None and wanted is not None:
        return rows_where(rows, pc.is_in(keys, value_set=wanted.combine_chunks()))
    # A NUL in the data: a join on both columns (slower, same rows).
    indexed = rows.select(pair).append_column(_ROW, _row_numbers(rows.num_rows))
    kept = indexed.join(values.select(pair), pair, join_type="left semi")
    return rows.take(kept.column(_ROW).combine_chunks().sort())


def silver_messages(valid: pa.Table, fresh: set[tuple[str, str]] | pa.Table) -> pa.Table:
    """The messages (``MESSAGE_KEY`` columns) of ``valid``'s rows whose event key is in
    ``fresh`` (the events this batch counted first): the rows silver and event_items get.

    ``valid`` holds one row per event key, so each fresh key names one message.
    """
    chosen = _in_pairs(valid.select([*EVENT_KEY, *MESSAGE_KEY]), _keys_table(fresh), EVENT_KEY)
    return chosen.select(MESSAGE_KEY).combine_chunks()


def rows_of_messages(rows: pa.Table, messages: pa.Table) -> pa.Table:
    """``rows`` whose (topic, message id) is one of ``messages``, in ``rows``' order."""
    return _in_pairs(rows, messages, MESSAGE_KEY)


def rows_of_keys(rows: pa.Table, keys: pa.Table) -> pa.Table:
    """``rows`` whose event key (tenant, event id) is one of ``keys``, in ``rows``' order."""
    return _in_pairs(rows, keys, EVENT_KEY)


def metric_csv(valid: pa.Table) -> pa.Buffer:
    """The rows of ``batch_events`` (tenant, event id, type, minute, amount, items) of the
    batch's distinct valid events, as CSV for ``COPY ... (FORMAT csv)``.

    Arrow writes every string quoted (an empty one as ``""``) and a null as nothing, which is
    how PostgreSQL's CSV tells them apart; timestamps with a ``Z``; decimals at their scale.
    """
    table = pa.table(
        {
            "tenant_id": valid.column("tenant_id"),
            "event_id": valid.column("event_id"),
            "event_type": valid.column("event_type"),
            "minute": pc.floor_temporal(valid.column("event_time"), unit="minute"),
            "amount": valid.column("order_total_amount"),
            "items": valid.column("item_quantity"),
        }
    )
    sink = pa.BufferOutputStream()
    pa_csv.write_csv(table, sink, pa_csv.WriteOptions(include_header=False))
    return sink.getvalue()


def minute_sums(fresh: pa.Table) -> pa.Table:
    """Per (tenant, minute of event time, event type) of ``fresh`` (the batch's new events, one
    row each): events, the sum of order amounts and of item quantities (0 where none), as the
    counting statement's ``per_minute`` sums ``batch_events``."""
    rows = pa.table(
        {
            "tenant_id": fresh.column("tenant_id"),
            "minute": pc.floor_temporal(fresh.column("event_time"), unit="minute"),
            "event_type": fresh.column("event_type"),
            "amount": fresh.column("order_total_amount"),
            "items": fresh.column("item_quantity"),
        }
    )
    grouped = rows.group_by(["tenant_id", "minute", "event_type"], use_threads=False).aggregate(
        [([], "count_all"), ("amount", "sum"), ("items", "sum")]
    )
    return pa.table(
        {
            "tenant_id": grouped.column("tenant_id"),
            "minute": grouped.column("minute"),
            "event_type": grouped.column("event_type"),
            "events": grouped.column("count_all"),
            "amount": pc.fill_null(grouped.column("amount_sum"), 0),
            "items": pc.fill_null(grouped.column("items_sum"), 0),
        }
    )


def minute_sums_csv(fresh: pa.Table) -> pa.Buffer:
    """``minute_sums(fresh)`` as CSV for ``COPY ... (FORMAT csv)`` (as ``metric_csv`` writes)."""
    sink = pa.BufferOutputStream()
    pa_csv.write_csv(minute_sums(fresh), sink, pa_csv.WriteOptions(include_header=False))
    return sink.getvalue()


def quarantine_counts(quarantined: pa.Table) -> list[tuple[str, date, str, int]]:
    """(tenant, ingest day, reason, messages) of a batch's quarantined rows.

    A message on a topic that is no tenant's is counted under the tenant ``unknown``.
    """
    if quarantined.num_rows == 0:
        return []
    grouped = (
        pa.table(
            {
                "tenant_id": pc.fill_null(quarantined.column("topic_tenant"), "unknown"),
                "day": pc.cast(quarantined.column("ingest_time"), pa.date32()),
                "reason": quarantined.column("reason"),
            }
        )
        .group_by(["tenant_id", "day", "reason"])
        .aggregate([([], "count_all")])
    )
    return [
        (row["tenant_id"], row["day"], row["reason"], row["count_all"])
        for row in grouped.to_pylist()
    ]


@dataclass(frozen=True)
class BatchFigures:
    """What the job reports of a batch's rows: messages per topic tenant (``None`` for a topic
    that is no tenant's), quarantined messages per (topic tenant, reason), and per tenant
    (``unknown`` for none) the age of its oldest publish time. Dicts are in the order of each
    key's first row."""

    input_by_tenant: dict[str | None, int]
    quarantined_by_reason: dict[tuple[str | None, str | None], int]
    lag_seconds: dict[str, float]


def _groups(table: pa.Table, keys: list[str], aggregates: list[tuple[Any, ...]]) -> pa.Table:
    """``table`` grouped by ``keys``, the groups in the order of their first row (Arrow's own
    order of groups is not that when keys hold nulls)."""
    indexed = table.append_column(_ROW, _row_numbers(table.num_rows))
    grouped = indexed.group_by(keys, use_threads=False).aggregate([*aggregates, (_ROW, "min")])
    return grouped.sort_by(f"{_ROW}_min")


def batch_figures(table: pa.Table, now: datetime) -> BatchFigures:
    """The ``BatchFigures`` of a batch's ``SUMMARY_SCHEMA`` rows at ``now``.

    A tenant whose every publish time is more than a second after ``now`` has no lag figure
    (the loop this replaced started each tenant's maximum at -1 s).
    """
    tenant = table.column("topic_tenant")
    inputs = _groups(pa.table({"t": tenant}), ["t"], [([], "count_all")])
    bad = table.select(["topic_tenant", "reason"]).filter(
        pc.equal(table.column("status"), QUARANTINED)
    )
    reasons = _groups(bad, ["topic_tenant", "reason"], [([], "count_all")])
    # age > -1 s, exactly: publish time before now + 1 s (both in microseconds).
    horizon = pa.scalar(now + timedelta(seconds=1), table.schema.field("publish_time").type)
    recent = table.select(["topic_tenant", "publish_time"]).filter(
        pc.less(table.column("publish_time"), horizon)
    )
    oldest = _groups(
        pa.table(
            {
                "t": pc.fill_null(recent.column("topic_tenant"), "unknown"),
                "p": recent.column("publish_time"),
            }
        ),
        ["t"],
        [("p", "min")],
    )
    # Python from here on loops over groups (tenants, reasons), not rows.
    return BatchFigures(
        {r["t"]: r["count_all"] for r in inputs.to_pylist()},
        {(r["topic_tenant"], r["reason"]): r["count_all"] for r in reasons.to_pylist()},
        {r["t"]: (now - r["p_min"]).total_seconds() for r in oldest.to_pylist()},
    )


def lag_seconds(table: pa.Table, now: datetime | None = None) -> float | None:
    """Seconds from the batch's oldest publish time to ``now`` (default: the clock's now),
    None for an empty batch."""
    if table.num_rows == 0:
        return None
    oldest: datetime = pc.min(table.column("publish_time")).as_py()
    return ((now or datetime.now(UTC)) - oldest).total_seconds()


# -- the Delta tables' rows -----------------------------------------------------------------
def _event_date(table: pa.Table) -> pa.Array:
    return pc.cast(table.column("event_time"), pa.date32())


def _columns(table: pa.Table, names: dict[str, str]) -> pa.Table:
    """``table`` reduced to ``names`` (old name -> new name), in that order."""
    return table.select(list(names)).rename_columns(list(names.values()))


_BRONZE_COLUMNS = {
    name: name for name in ["tenant_id", "event_id", "schema_version", "event_type", *_META, "key"]
}
_QUARANTINE_COLUMNS = {
    name: name
    for name in [
        "topic",
        "topic_tenant",
        "message_id",
        "publish_time",
        "ingest_time",
        "reason",
        "detail",
    ]
}


def bronze_rows(valid: pa.Table) -> pa.Table:
    """Bronze's rows of valid rows: every message, its payload as read."""
    base = _columns(valid, {**_BRONZE_COLUMNS, "value": "payload"})
    return base.append_column("event_date", _event_date(valid))


def silver_rows(rows: pa.Table) -> pa.Table:
    """Silver's rows of the chosen valid rows: the flat event columns."""
    drop = {"status", "reason", "detail", "topic_tenant", "key", "value", "items"}
    v2_columns = v2_only_columns()
    # Version-2 columns join silver by schema evolution when the first v2 event arrives.
    has_v2 = rows.num_rows > 0 and pc.any(pc.equal(rows.column("schema_version"), 2)).as_py()
    if not has_v2:
        drop |= set(v2_columns)
    kept = rows.select([n for n in rows.column_names if n not in drop])
    kept = kept.append_column("item_count", pc.list_value_length(rows.column("items")))
    return kept.append_column("event_date", _event_date(rows))


def item_rows(rows: pa.Table) -> pa.Table:
    """event_items' rows of the chosen valid rows: one per item line."""
    lines = rows.column("items")
    parents = pc.list_parent_indices(lines)
    flat = pc.list_flatten(lines)
    keys = rows.select(["tenant_id", "event_id", "event_type"]).take(parents)
    table = keys
    for field in flat.type:
        table = table.append_column(field.name, pc.struct_field(flat, field.name))
    event_dates = _event_date(rows).take(parents)
    return table.append_column("event_date", event_dates)


def quarantine_rows(rows: pa.Table) -> pa.Table:
    """Quarantine's rows of quarantined rows."""
    base = _columns(rows, {**_QUARANTINE_COLUMNS, "value": "payload"})
    return base.append_column("ingest_date", pc.cast(rows.column("ingest_time"), pa.date32()))
