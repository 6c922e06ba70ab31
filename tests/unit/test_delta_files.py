"""Delta files written without delta-rs's writer and committed by it: what readers see."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import duckdb
import pyarrow as pa
from deltalake import DeltaTable

from include.lake.storage import Location
from jobs.stream.delta_files import commit_files, write_files
from tests.e2e.lake_reader import register_table

PARTITIONS = ["tenant_id", "event_date"]
V1 = pa.schema(
    [
        ("tenant_id", pa.string()),
        ("n", pa.int64()),
        ("note", pa.string()),
        ("event_date", pa.date32()),
    ]
)


def _rows(tenants: list[str | None], first: int, extra: bool = False) -> pa.Table:
    count = len(tenants)
    table = pa.table(
        {
            "tenant_id": tenants,
            "n": list(range(first, first + count)),
            "note": [None] + ["x" * 40] * (count - 1),
            "event_date": [date(2026, 11, 20)] * count,
        },
        schema=V1,
    )
    if extra:
        table = table.append_column("added", pa.array(["v2"] * count))
    return table


def test_files_written_apart_and_committed_read_back_everywhere(tmp_path: Path) -> None:
    location = Location.of(tmp_path / "t")
    # A tenant with characters that need escaping in a path, and a null partition value.
    first = write_files("t", _rows(["a b/é", None, "a b/é"], 0), location, PARTITIONS)
    assert len(first) == 2 and sum(f["num_records"] for f in first) == 3
    assert commit_files(location, first, V1, PARTITIONS, "app", 0)
    # The next batch's files carry a new column: the table evolves before the commit.
    second = write_files("t", _rows(["c"], 10, extra=True), location, PARTITIONS)
    assert commit_files(location, second, V1, PARTITIONS, "app", 1)
    # A replay of batch 1 commits nothing (its files stay orphans for vacuum).
    again = write_files("t", _rows(["c"], 10, extra=True), location, PARTITIONS)
    assert not commit_files(location, again, V1, PARTITIONS, "app", 1)
    # A batch without rows for this table still records its app transaction.
    assert commit_files(location, [], V1, PARTITIONS, "app", 2)

    table = DeltaTable(location.uri)
    assert table.transaction_version("app") == 2
    assert "added" in pa.schema(table.schema().to_arrow()).names
    rows = sorted(table.to_pyarrow_table().to_pylist(), key=lambda r: r["n"])
    assert [(r["tenant_id"], r["n"], r["added"]) for r in rows] == [
        ("a b/é", 0, None),
        (None, 1, None),
        ("a b/é", 2, None),
        ("c", 10, "v2"),
    ]
    stats = [json.loads(f["stats"]) for f in first]
    escaped = next(s for s in stats if s["numRecords"] == 2)
    assert escaped["minValues"] == {"n": 0} and escaped["maxValues"] == {"n": 2}
    assert escaped["nullCount"] == {"n": 0, "note": 1}
    # An independent reader: the log replayed by hand, the files read by DuckDB.
    con = duckdb.connect()
    register_table(con, "t", location.path)
    assert con.execute("SELECT count(*), sum(n) FROM t").fetchone() == (4, 13)
    assert con.execute("SELECT count(*) FROM t WHERE tenant_id = 'a b/é'").fetchone() == (2,)


def test_maintenance_deletes_files_no_commit_added_once_past_the_retention(
    tmp_path: Path,
) -> None:
    import os
    import time

    from include.lake.archive import maintain

    location = Location.of(tmp_path / "lake" / "t")
    committed = write_files("t", _rows(["a"], 0), location, PARTITIONS)
    assert commit_files(location, committed, V1, PARTITIONS, "app", 0)
    old, recent = (
        write_files("t", _rows(["a"], n), location, PARTITIONS)[0]["path"] for n in (5, 9)
    )
    three_hours_ago = time.time() - 3 * 3600
    os.utime(location.path / old, (three_hours_ago, three_hours_ago))
    maintain(tmp_path / "lake", "t", vacuum_retention_hours=2)
    assert not (location.path / old).exists(), "an orphan past the retention stays"
    assert (location.path / recent).exists(), "a file younger than the retention was deleted"
    assert (location.path / committed[0]["path"]).exists()
    assert DeltaTable(location.uri).to_pyarrow_table().num_rows == 1


def test_a_created_table_keeps_the_log_history_it_was_given(tmp_path: Path) -> None:
    kept = Location.of(tmp_path / "kept")
    assert commit_files(
        kept, write_files("t", _rows(["a"], 0), kept, PARTITIONS), V1, PARTITIONS, "app", 0, 45
    )
    assert DeltaTable(kept.uri).metadata().configuration == {
        "delta.logRetentionDuration": "interval 45 days"
    }
    # A later commit (a new column: schema evolution) leaves the table's setting as it was.
    evolved = write_files("t", _rows(["a"], 5, extra=True), kept, PARTITIONS)
    assert commit_files(kept, evolved, V1, PARTITIONS, "app", 1, 99)
    assert DeltaTable(kept.uri).metadata().configuration == {
        "delta.logRetentionDuration": "interval 45 days"
    }
    default = Location.of(tmp_path / "default")
    assert commit_files(
        default, write_files("t", _rows(["a"], 0), default, PARTITIONS), V1, PARTITIONS, "app", 0
    )
    assert "delta.logRetentionDuration" not in DeltaTable(default.uri).metadata().configuration
