"""Archiving lake partitions against real Delta tables (delta-rs) and Parquet files.

The dates here are fixed on purpose: the archive functions take their cut-off (``before``) as an
argument and never read the clock, so "old" means "before that argument" on any day.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError

from include.lake.archive import (
    ArchiveVerificationError,
    archive_old_partitions,
    archive_partition,
    manifest_path,
    move_partition,
    read_manifest,
    verify,
)


def _rows(tenants: list[str], days: list[date], ids: list[int]) -> pa.Table:
    return pa.table({"tenant_id": tenants, "event_date": days, "event_id": ids})


def _write(lake: Path, rows: pa.Table) -> None:
    write_deltalake(
        str(lake / "silver"), rows, mode="append", partition_by=["tenant_id", "event_date"]
    )


def test_old_partitions_move_to_the_archive_and_new_ones_stay(tmp_path: Path) -> None:
    lake, archive = tmp_path / "lake", tmp_path / "archive"
    old, new = date(2026, 9, 1), date(2026, 11, 20)
    _write(lake, _rows(["a", "a", "b", "b"], [old, new, old, old], [1, 2, 3, 4]))
    moved = archive_old_partitions(lake, "silver", archive, before=date(2026, 10, 1))
    assert sorted((e.partition["tenant_id"], e.rows) for e in moved) == [("a", 1), ("b", 2)]
    assert DeltaTable(str(lake / "silver")).to_pyarrow_table().column("event_id").to_pylist() == [2]
    archived = pq.read_table(archive / "silver" / "tenant_id=b" / "event_date=2026-09-01")
    assert sorted(archived.column("event_id").to_pylist()) == [3, 4]
    for entry in moved:
        verify(entry, archive)


def test_rows_appended_after_the_archive_was_read_are_never_deleted(tmp_path: Path) -> None:
    lake, archive = tmp_path / "lake", tmp_path / "archive"
    old = date(2026, 9, 1)
    _write(lake, _rows(["a"], [old], [1]))
    table = DeltaTable(str(lake / "silver"))  # the snapshot the move reads and deletes at
    partition = {"tenant_id": "a", "event_date": "2026-09-01"}
    _write(lake, _rows(["a"], [old], [2]))  # a late event, after the move's snapshot
    # The move archives the one row its snapshot holds; its delete conflicts with the append.
    with pytest.raises(CommitFailedError):
        move_partition(table, "silver", partition, archive)
    assert read_manifest(manifest_path(archive, "silver", partition)).rows == 1
    lake_ids = DeltaTable(str(lake / "silver")).to_pyarrow_table().column("event_id").to_pylist()
    assert sorted(lake_ids) == [1, 2]
    # The next run archives both rows, then deletes them.
    moved = archive_old_partitions(lake, "silver", archive, before=date(2026, 10, 1))
    assert [e.rows for e in moved] == [2]
    assert DeltaTable(str(lake / "silver")).to_pyarrow_table().num_rows == 0


def test_a_tampered_archive_fails_verification(tmp_path: Path) -> None:
    lake, archive = tmp_path / "lake", tmp_path / "archive"
    _write(lake, _rows(["a", "a"], [date(2026, 9, 1)] * 2, [1, 2]))
    table = DeltaTable(str(lake / "silver"))
    entry = archive_partition(
        table, "silver", {"tenant_id": "a", "event_date": "2026-09-01"}, archive
    )
    pq.write_table(pa.table({"event_id": [1]}), archive / entry.file)
    with pytest.raises(ArchiveVerificationError):
        verify(entry, archive)
