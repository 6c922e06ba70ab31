"""Delta data files written in one place and committed in another.

The stream's executors write the Parquet files of a micro-batch where its rows are and return
what a commit needs of each file (``jobs.stream.landing_schema.FILES_SCHEMA``: path, size,
partition values, statistics, Arrow schema); the driver commits each table's files once, with
the batch's app transaction (``DeltaTable.create_write_transaction``, the delta-rs API for files
written outside it). Repair and the tests write the files on the driver through the same two
functions.

A file written by an attempt that never committed (the job died between the two steps, or the
table already held the batch when a replay's commit came) belongs to no version of the table:
readers never see it, and the lake maintenance's full vacuum (``include.lake.archive.maintain``)
deletes it once it is older than the retention.
"""

from __future__ import annotations

import json
import posixpath
import time
import uuid
from typing import Any
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.transaction import AddAction, RemoveAction

from include.lake.storage import Location
from jobs.stream.shaping import no_rows, rows_where

_NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"
# Longer strings get no min/max (Delta truncates them; a truncated max is no upper bound).
_MAX_STAT_STRING = 32


def _stat_value(array: pa.ChunkedArray, which: str) -> Any:
    """The min or max of a column for the Delta statistics, or None when it has none."""
    kind = array.type
    if not (pa.types.is_integer(kind) or pa.types.is_date(kind) or pa.types.is_string(kind)):
        return None
    value = pc.min_max(array)[which].as_py()
    if value is None:
        return None
    if pa.types.is_date(kind):
        return value.isoformat()
    if isinstance(value, str) and len(value) > _MAX_STAT_STRING:
        return None
    return value


def file_stats(data: pa.Table) -> str:
    """Delta ``stats`` JSON of a data file: record count, null counts of the top-level
    primitive columns, min and max where they are exact (integers, dates, short strings)."""
    flat = [f.name for f in data.schema if not pa.types.is_nested(f.type)]
    mins = {n: v for n in flat if (v := _stat_value(data.column(n), "min")) is not None}
    maxs = {n: v for n in flat if (v := _stat_value(data.column(n), "max")) is not None}
    nulls = {n: data.column(n).null_count for n in flat}
    return json.dumps(
        {"numRecords": data.num_rows, "minValues": mins, "maxValues": maxs, "nullCount": nulls}
    )


def _partition_text(value: Any) -> str | None:
    if value is None:
        return None
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def write_files(
    name: str, data: pa.Table, location: Location, partition_by: list[str]
) -> list[dict[str, Any]]:
    """Write ``data`` as Parquet files of the Delta table at ``location``, one per partition;
    return each file's ``FILES_SCHEMA`` row (``name`` is the table's name). Nothing is
    committed."""
    if data.num_rows == 0:
        return []
    fs, root = location.filesystem()
    keys = data.select(partition_by).group_by(partition_by).aggregate([]).to_pylist()
    out = []
    for key in keys:
        mask = None
        for column in partition_by:
            value = key[column]
            test = (
                pc.is_null(data.column(column))
                if value is None
                else pc.fill_null(pc.equal(data.column(column), value), False)
            )
            mask = test if mask is None else pc.and_(mask, test)
        assert mask is not None
        part = rows_where(data, mask).drop_columns(partition_by)
        values = {c: _partition_text(key[c]) for c in partition_by}
        folder = "/".join(
            f"{c}={_NULL_PARTITION if v is None else quote(v, safe='')}" for c, v in values.items()
        )
        relative = f"{folder}/part-00000-{uuid.uuid4()}-c000.snappy.parquet"
        buffer = pa.BufferOutputStream()
        pq.write_table(part, buffer, compression="snappy")
        body = buffer.getvalue()
        target = posixpath.join(root, relative)
        fs.create_dir(posixpath.dirname(target), recursive=True)
        with fs.open_output_stream(target) as stream:
            stream.write(body)
        out.append(
            {
                "table": name,
                "path": relative,
                "size": body.size,
                "partition_values": json.dumps(values),
                "num_records": part.num_rows,
                "stats": file_stats(part),
                "schema": data.schema.serialize().to_pybytes(),
            }
        )
    return out


def _union(schemas: list[pa.Schema]) -> pa.Schema:
    """The fields of every schema, in order of first appearance (a batch's files differ only
    in which optional columns they carry)."""
    fields: dict[str, pa.Field] = {}
    for schema in schemas:
        for field in schema:
            fields.setdefault(field.name, field)
    return pa.schema(list(fields.values()))


def _field_paths(schema: pa.Schema) -> set[str]:
    paths = set()

    def walk(prefix: str, kind: pa.DataType) -> None:
        if pa.types.is_struct(kind):
            for child in kind:
                paths.add(prefix + child.name)
                walk(prefix + child.name + ".", child.type)
        elif pa.types.is_list(kind) or pa.types.is_large_list(kind):
            walk(prefix, kind.value_type)

    for field in schema:
        paths.add(field.name)
        walk(field.name + ".", field.type)
    return paths


def commit_files(
    location: Location,
    files: list[dict[str, Any]],
    empty_schema: pa.Schema,
    partition_by: list[str],
    app_id: str,
    batch_id: int,
    log_retention_days: int | None = None,
    table: DeltaTable | None = None,
) -> bool:
    """Commit ``files`` (``FILES_SCHEMA`` rows of this table) as batch ``batch_id`` of
    ``app_id`` in one transaction; False, committing nothing, if the table already holds it.

    A table that does not exist yet is created (keeping ``log_retention_days`` of log history,
    else delta-rs's 30), and one that lacks a column of the files gets it (schema evolution), by
    an empty append before the commit. ``empty_schema`` is the table's schema when the batch
    wrote no file to it. ``table``, when given, is a handle on it brought up to date here (a
    stale one could miss a commit of this batch and commit it twice).
    """
    # Each load of the table replays its log (a listing and reads on S3): load it once, and
    # again only after the append that changed its schema.
    if table is not None:
        table.update_incremental()
    elif location.is_delta_table():
        table = location.delta_table()
    if table is not None:
        done = table.transaction_version(app_id)
        if done is not None and done >= batch_id:
            return False
    schemas = [pa.ipc.read_schema(pa.py_buffer(f["schema"])) for f in files]
    schema = _union(schemas) if schemas else empty_schema
    if table is None or not _field_paths(schema) <= _field_paths(
        pa.schema(table.schema().to_arrow())
    ):
        created = table is None and log_retention_days is not None
        write_deltalake(
            location.uri,
            no_rows(schema),
            storage_options=location.storage_options,
            mode="append",
            partition_by=partition_by,
            schema_mode="merge",
            configuration=(
                {"delta.logRetentionDuration": f"interval {log_retention_days} days"}
                if created
                else None
            ),
        )
        table = location.delta_table()
    now = int(time.time() * 1000)
    actions: list[AddAction | RemoveAction] = [
        AddAction(
            f["path"],
            f["size"],
            json.loads(f["partition_values"]),
            now,
            True,
            f["stats"],
        )
        for f in files
    ]
    table.create_write_transaction(
        actions,
        "append",
        table.schema(),
        partition_by,
        commit_properties=CommitProperties(app_transactions=[Transaction(app_id, batch_id)]),
    )
    return True
