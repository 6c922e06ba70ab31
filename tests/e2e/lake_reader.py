"""An independent reader of the Delta tables: the log replayed by hand, the Parquet read by DuckDB.

The platform writes its tables with delta-rs. To show the lake holds what the platform claims,
this module reads them without delta-rs: it replays the Delta log itself (the newest complete
Parquet checkpoint, then every JSON commit after it) to find the live data files and their
partition values, and lets DuckDB read those Parquet files. DuckDB's own ``delta`` extension is
downloaded at run time, which this machine cannot do; the log protocol is small enough to read
here. Features this reader does not implement (deletion vectors, column mapping, v2 checkpoints)
raise instead of giving a wrong answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import duckdb
import orjson

_COMMIT = re.compile(r"^(\d{20})\.json$")
_CHECKPOINT = re.compile(r"^(\d{20})\.checkpoint(?:\.(\d{10})\.(\d{10}))?\.parquet$")


class UnsupportedDeltaFeatureError(RuntimeError):
    """The table uses a part of the Delta protocol this reader does not implement."""


@dataclass(frozen=True)
class Snapshot:
    """The live data files of one Delta table at its newest version."""

    table_dir: Path
    version: int
    files: dict[Path, dict[str, str | None]]  # data file -> partition values
    partition_columns: tuple[str, ...]


def latest_version(table_dir: Path) -> int | None:
    """The newest committed version (the highest JSON commit), or None without a table."""
    log_dir = table_dir / "_delta_log"
    if not log_dir.is_dir():
        return None
    versions = [int(m.group(1)) for p in log_dir.iterdir() if (m := _COMMIT.match(p.name))]
    return max(versions, default=None)


def _data_path(table_dir: Path, path: str) -> Path:
    parsed = urlparse(path)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme:
        raise UnsupportedDeltaFeatureError(f"data file outside the local file system: {path}")
    return table_dir / unquote(path)


def _complete_checkpoints(log_dir: Path) -> dict[int, list[Path]]:
    """Version -> its checkpoint files, for checkpoints whose every part is present."""
    parts: dict[tuple[int, int], list[Path]] = {}
    for path in log_dir.iterdir():
        match = _CHECKPOINT.match(path.name)
        if match:
            total = int(match.group(3) or 1)
            parts.setdefault((int(match.group(1)), total), []).append(path)
        elif ".checkpoint." in path.name and not path.name.endswith(".crc"):
            raise UnsupportedDeltaFeatureError(f"v2 or unknown checkpoint file: {path.name}")
    return {v: sorted(files) for (v, total), files in parts.items() if len(files) == total}


def _check_metadata(metadata: dict[str, Any]) -> tuple[str, ...]:
    mode = (metadata.get("configuration") or {}).get("delta.columnMapping.mode", "none")
    if mode not in (None, "none"):
        raise UnsupportedDeltaFeatureError(f"column mapping mode {mode!r}")
    return tuple(metadata.get("partitionColumns") or ())


def _check_add(add: dict[str, Any]) -> None:
    if add.get("deletionVector"):
        raise UnsupportedDeltaFeatureError(f"deletion vector on {add['path']}")


def snapshot(table_dir: Path) -> Snapshot:
    """Replay ``table_dir``'s log: newest complete checkpoint, then the JSON commits after it."""
    log_dir = table_dir / "_delta_log"
    version = latest_version(table_dir)
    if version is None:
        raise FileNotFoundError(f"{table_dir} is no Delta table")
    files: dict[Path, dict[str, str | None]] = {}
    partition_columns: tuple[str, ...] = ()
    checkpoints = {v: p for v, p in _complete_checkpoints(log_dir).items() if v <= version}
    first = 0
    if checkpoints:
        at = max(checkpoints)
        first = at + 1
        names = [str(p) for p in checkpoints[at]]
        con = duckdb.connect()
        try:
            rows = con.execute(
                "SELECT add.path, map_keys(add.partitionValues), map_values(add.partitionValues), "
                "add.deletionVector IS NOT NULL FROM read_parquet(?, union_by_name = true) "
                "WHERE add IS NOT NULL",
                [names],
            ).fetchall()
            meta = con.execute(
                "SELECT metaData.configuration, metaData.partitionColumns "
                "FROM read_parquet(?, union_by_name = true) WHERE metaData IS NOT NULL",
                [names],
            ).fetchall()
        finally:
            con.close()
        for path, keys, values, has_dv in rows:
            if has_dv:
                raise UnsupportedDeltaFeatureError(f"deletion vector on {path}")
            files[_data_path(table_dir, path)] = dict(zip(keys, values, strict=True))
        for configuration, columns in meta:
            config = dict(configuration) if isinstance(configuration, dict) else {}
            if isinstance(configuration, list | tuple):  # older DuckDB: list of key/value pairs
                config = {item["key"]: item["value"] for item in configuration}
            partition_columns = _check_metadata(
                {"configuration": config, "partitionColumns": columns}
            )
    for number in range(first, version + 1):
        commit = log_dir / f"{number:020d}.json"
        for line in commit.read_bytes().splitlines():
            if not line.strip():
                continue
            action = orjson.loads(line)
            if "metaData" in action:
                partition_columns = _check_metadata(action["metaData"])
            elif "add" in action:
                _check_add(action["add"])
                path = _data_path(table_dir, action["add"]["path"])
                files[path] = dict(action["add"].get("partitionValues") or {})
            elif "remove" in action:
                files.pop(_data_path(table_dir, action["remove"]["path"]), None)
    return Snapshot(table_dir, version, files, partition_columns)


def register_table(con: duckdb.DuckDBPyConnection, name: str, table_dir: Path) -> Snapshot:
    """Create the DuckDB table ``name``: the table's live rows, partition columns included."""
    snap = snapshot(table_dir)
    if not snap.files:
        raise AssertionError(f"{table_dir} has no live data files")
    missing = [p for p in snap.files if not p.exists()]
    if missing:
        raise AssertionError(
            f"{len(missing)} live files of {table_dir} are gone, e.g. {missing[0]}"
        )
    columns = snap.partition_columns
    con.execute(
        f"CREATE TEMP TABLE {name}__files (file VARCHAR"
        + "".join(f", {c} VARCHAR" for c in columns)
        + ")"
    )
    con.executemany(
        f"INSERT INTO {name}__files VALUES (?{', ?' * len(columns)})",
        [[str(path), *(values.get(c) for c in columns)] for path, values in snap.files.items()],
    )
    # Delta keeps partition values in the log, not in the files: join them back by file name.
    # hive_partitioning is off so the folder names are not read as columns a second time.
    con.execute(
        f"CREATE TEMP TABLE {name} AS SELECT d.* EXCLUDE (filename)"
        + "".join(f", f.{c}" for c in columns)
        + f" FROM read_parquet(?, filename = true, union_by_name = true, "
        f"hive_partitioning = false) d JOIN {name}__files f ON d.filename = f.file",
        [[str(p) for p in snap.files]],
    )
    return snap
