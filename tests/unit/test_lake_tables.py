"""The lake catalog names columns the stream really writes to each table."""

from __future__ import annotations

import pytest

from include.lake.archive import PARTITIONING
from include.lake.tables import BY_NAME, LAKE_TABLES, LakeTable
from jobs.stream import shaping, sink
from jobs.stream.validate import OUTPUT_SCHEMA

_ROWS = {
    "bronze": shaping.bronze_rows,
    "silver": shaping.silver_rows,
    "event_items": shaping.item_rows,
    "quarantine": shaping.quarantine_rows,
}


@pytest.mark.parametrize("table", LAKE_TABLES, ids=lambda t: t.name)
def test_each_tables_partition_tenant_and_key_columns_are_written(table: LakeTable) -> None:
    written = set(_ROWS[table.name](OUTPUT_SCHEMA.empty_table()).schema.names)
    assert set(table.partition_by) | set(table.key) <= written
    assert table.partition_by[-1].endswith("_date")


def test_the_stream_and_the_archive_read_the_catalog() -> None:
    assert set(_ROWS) == set(BY_NAME) == set(sink.TABLES)
    assert {name: tuple(columns) for name, columns in sink.PARTITIONS.items()} == PARTITIONING
