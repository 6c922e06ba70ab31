"""Archiving old lake partitions to Parquet, verified before anything is deleted.

For each partition of a Delta table whose date is older than the hot retention:

1. read its rows at one table version ``V``;
2. write them to ``<archive>/<table>/<col>=<value>/.../part-00000.parquet`` (zstd), atomically
   (locally a temporary file and a rename; on S3 one put, see ``include.lake.storage``);
3. read the file back: the row count must equal what was read, and its SHA-256 is recorded in a
   manifest (``<archive>/<table>/_manifest/<partition>.json``) with the count and ``V``;
4. only then delete the partition from the Delta table **at version V**. If late events were
   appended to that partition after ``V``, delta-rs refuses the delete's commit (a concurrent
   transaction added data the delete would cover): nothing is deleted, the task fails and its
   retry archives the partition again, late rows included.

Re-running is safe: a partition archived before is archived again (the file is replaced by the
same rows plus any late ones) and deleted again.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import DeltaTable

from include.lake.storage import Location, as_location
from include.lake.tables import LAKE_TABLES

log = logging.getLogger(__name__)

# Partition columns of each lake table (``include.lake.tables``): tenant first, date last.
PARTITIONING: dict[str, tuple[str, ...]] = {t.name: t.partition_by for t in LAKE_TABLES}
ARCHIVE_FILE = "part-00000.parquet"


class ArchiveVerificationError(RuntimeError):
    """An archived file does not hold what was written: nothing was deleted."""


@dataclass(frozen=True)
class ManifestEntry:
    """What the archive holds for one partition."""

    table: str
    partition: dict[str, str]
    file: str
    rows: int
    sha256: str
    delta_version: int
    archived_at: str


def partition_path(partition: dict[str, str], columns: Iterable[str]) -> str:
    """``tenant_id=acme/event_date=2026-11-20`` (Hive style, in ``columns`` order)."""
    return "/".join(f"{c}={partition[c]}" for c in columns)


def parquet_bytes(data: pa.Table) -> bytes:
    """``data`` as one zstd-compressed Parquet file (archive files are written whole)."""
    buffer = io.BytesIO()
    pq.write_table(data, buffer, compression="zstd")
    return buffer.getvalue()


def parquet_rows(location: Location) -> int:
    """Row count in a Parquet file's footer."""
    fs, path = location.filesystem()
    with fs.open_input_file(path) as handle:
        return int(pq.ParquetFile(handle).metadata.num_rows)


def read_parquet(location: Location, columns: list[str] | None = None) -> pa.Table:
    """A Parquet file's rows (``columns`` only, if given)."""
    fs, path = location.filesystem()
    with fs.open_input_file(path) as handle:
        return pq.ParquetFile(handle).read(columns=columns)


def old_partitions(
    table: DeltaTable, columns: tuple[str, ...], before: date
) -> list[dict[str, str]]:
    """Partitions of ``table`` whose date (the last partition column) is before ``before``."""
    actions = pa.table(table.get_add_actions(flatten=True))
    seen: set[tuple[str, ...]] = set()
    for row in actions.select([f"partition.{c}" for c in columns]).to_pylist():
        values = tuple(str(row[f"partition.{c}"]) for c in columns)
        if date.fromisoformat(values[-1]) < before:
            seen.add(values)
    return [dict(zip(columns, values, strict=True)) for values in sorted(seen)]


def _filters(partition: dict[str, str]) -> list[tuple[str, str, str]]:
    return [(column, "=", value) for column, value in partition.items()]


def _predicate(partition: dict[str, str]) -> str:
    # Partition values are validated ids and ISO dates: nothing to escape, but refuse quotes.
    for value in partition.values():
        if "'" in value:
            raise ValueError(f"unexpected quote in partition value {value!r}")
    return " AND ".join(f"{column} = '{value}'" for column, value in partition.items())


def archive_partition(
    table: DeltaTable, name: str, partition: dict[str, str], archive: Location | Path
) -> ManifestEntry:
    """Write one partition (at ``table``'s loaded version) to the archive and verify it."""
    archive = as_location(archive)
    columns = PARTITIONING[name]
    rows = table.to_pyarrow_table(partitions=_filters(partition))
    # Partition columns live in the path, as in the lake.
    data = rows.drop_columns([c for c in columns if c in rows.column_names])
    relative = f"{name}/{partition_path(partition, columns)}/{ARCHIVE_FILE}"
    target = archive / relative
    target.write_bytes(parquet_bytes(data))
    written = parquet_rows(target)
    if written != rows.num_rows:
        raise ArchiveVerificationError(
            f"{target} holds {written} rows, {rows.num_rows} were written: nothing deleted"
        )
    entry = ManifestEntry(
        table=name,
        partition=partition,
        file=relative,
        rows=rows.num_rows,
        sha256=target.sha256(),
        delta_version=table.version(),
        archived_at=datetime.now(UTC).isoformat(),
    )
    write_manifest(entry, archive)
    return entry


def manifest_path(archive: Location | Path, name: str, partition: dict[str, str]) -> Location:
    """``<archive>/<table>/_manifest/tenant_id=acme__event_date=2026-11-20.json``."""
    flat = partition_path(partition, PARTITIONING[name]).replace("/", "__")
    return as_location(archive) / f"{name}/_manifest/{flat}.json"


def write_manifest(entry: ManifestEntry, archive: Location | Path) -> None:
    """Write (or replace) the manifest entry of one partition, atomically."""
    path = manifest_path(archive, entry.table, entry.partition)
    path.write_bytes(orjson.dumps(asdict(entry), option=orjson.OPT_INDENT_2))


def read_manifest(path: Location | Path) -> ManifestEntry:
    """The manifest entry stored at ``path``."""
    return ManifestEntry(**orjson.loads(as_location(path).read_bytes()))


def verify(entry: ManifestEntry, archive: Location | Path) -> None:
    """Check an archived file against its manifest entry (row count and checksum)."""
    path = as_location(archive) / entry.file
    if not path.exists():
        raise ArchiveVerificationError(f"{path} is missing")
    rows = parquet_rows(path)
    if rows != entry.rows:
        raise ArchiveVerificationError(f"{path}: {rows} rows, the manifest says {entry.rows}")
    if path.sha256() != entry.sha256:
        raise ArchiveVerificationError(f"{path}: checksum differs from the manifest")


def archive_old_partitions(
    lake: Location | Path, name: str, archive: Location | Path, before: date
) -> list[ManifestEntry]:
    """Archive, verify and then delete from the lake every partition of ``name`` dated before
    ``before``; return the manifest entries of the partitions moved."""
    location = as_location(lake) / name
    if not location.is_delta_table():
        return []
    moved = []
    for partition in old_partitions(location.delta_table(), PARTITIONING[name], before):
        moved.append(move_partition(location.delta_table(), name, partition, archive))
    return moved


def move_partition(
    table: DeltaTable, name: str, partition: dict[str, str], archive: Location | Path
) -> ManifestEntry:
    """Archive one partition at ``table``'s loaded version, verify it, then delete it from the
    lake at that same version: a row appended since makes the delete's commit fail
    (``CommitFailedError``), so no row is deleted that the archive does not hold."""
    entry = archive_partition(table, name, partition, archive)
    verify(entry, archive)
    table.delete(_predicate(partition))
    log.info(
        "partition archived", extra={"table": name, "partition": partition, "rows": entry.rows}
    )
    return entry


# Longer than any micro-batch takes from writing its files to committing them.
_UNCOMMITTED_WRITE_HOURS = 1


def maintain(lake: Location | Path, name: str, vacuum_retention_hours: int) -> dict[str, object]:
    """Compact small files, write a checkpoint, clean up the expired log and vacuum."""
    location = as_location(lake) / name
    if not location.is_delta_table():
        return {}
    table = location.delta_table()
    compacted = table.optimize.compact()
    table = location.delta_table()
    table.create_checkpoint()
    table.cleanup_metadata()
    # delta-rs only lists what it would delete unless dry_run=False. Its default ("lite") vacuum
    # deletes only files the log removed; a "full" one also deletes files no commit ever added
    # (the stream's executors wrote them for an attempt that died before its commit). A file
    # being written for a commit to come is not in the log yet either, so "full" waits until
    # the retention leaves it an hour.
    removed = table.vacuum(
        retention_hours=vacuum_retention_hours,
        dry_run=False,
        enforce_retention_duration=False,
        full=vacuum_retention_hours >= _UNCOMMITTED_WRITE_HOURS,
    )
    return {
        "files_added": compacted.get("numFilesAdded"),
        "files_removed": compacted.get("numFilesRemoved"),
        "vacuumed_files": len(removed),
        "version": location.delta_table().version(),
    }
