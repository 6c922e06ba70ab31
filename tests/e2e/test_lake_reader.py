"""The independent Delta reader of the end-to-end test agrees with delta-rs on a table that went
through what the platform's tables go through: partitioned appends, schema evolution, deletes,
compaction and a checkpoint followed by more commits."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from tests.e2e import lake_reader


def _batch(i: int, evolved: bool) -> pa.Table:
    table = pa.table(
        {
            "tenant_id": [("t_a", "t_b")[i % 2]] * 3,
            "x": pa.array([i, i + 1, i + 2], pa.int64()),
            "event_date": [f"2026-11-2{i % 3}"] * 3,
        }
    )
    return table.append_column("extra", pa.array([f"e{i}"] * 3)) if evolved else table


def _write(path: Path, table: pa.Table) -> None:
    write_deltalake(
        str(path), table, mode="append", partition_by=["tenant_id", "event_date"],
        schema_mode="merge",
    )  # fmt: skip


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lake") / "t"
    for i in range(40):
        _write(path, _batch(i, evolved=i >= 25))
    delta = DeltaTable(str(path))
    delta.delete("x < 10")
    delta.optimize.compact()
    delta.create_checkpoint()
    for i in range(40, 44):
        _write(path, _batch(i, evolved=True))
    return path


def test_the_log_replay_finds_the_live_files_of_delta_rs(table: Path) -> None:
    snap = lake_reader.snapshot(table)
    delta = DeltaTable(str(table))
    assert snap.version == delta.version() == lake_reader.latest_version(table)
    assert any(p.name.endswith(".checkpoint.parquet") for p in (table / "_delta_log").iterdir())
    assert {str(p) for p in snap.files} == set(delta.file_uris())
    assert snap.partition_columns == ("tenant_id", "event_date")


def test_duckdb_reads_the_same_rows_as_delta_rs(table: Path) -> None:
    con = duckdb.connect()
    lake_reader.register_table(con, "t", table)
    ours = Counter(con.execute("SELECT tenant_id, event_date, x, extra FROM t").fetchall())
    theirs = DeltaTable(str(table)).to_pyarrow_table()
    reference = Counter(
        zip(
            theirs.column("tenant_id").to_pylist(),
            theirs.column("event_date").to_pylist(),
            theirs.column("x").to_pylist(),
            theirs.column("extra").to_pylist(),
            strict=True,
        )
    )
    assert ours == reference
    kept = [x for i in range(44) for x in (i, i + 1, i + 2) if x >= 10]  # "x < 10" deleted
    assert sorted(x for _t, _d, x, _e in ours.elements()) == sorted(kept)


def test_no_table_and_unknown_features_are_refused(tmp_path: Path) -> None:
    assert lake_reader.latest_version(tmp_path) is None
    with pytest.raises(FileNotFoundError):
        lake_reader.snapshot(tmp_path)
    _write(tmp_path / "dv", _batch(0, evolved=False))
    commit = tmp_path / "dv" / "_delta_log" / f"{1:020d}.json"
    commit.write_text(
        '{"add": {"path": "x.parquet", "partitionValues": {}, "size": 1, "modificationTime": 0,'
        ' "dataChange": true, "deletionVector": {"storageType": "u", "pathOrInlineDv": "a"}}}\n'
    )
    with pytest.raises(lake_reader.UnsupportedDeltaFeatureError):
        lake_reader.snapshot(tmp_path / "dv")
