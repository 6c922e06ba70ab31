"""What a Delta table gained after a version, read from its transaction log.

The streaming job only appends, and maintenance (``optimize``) rewrites files with
``dataChange: false``. So the rows a table gained after version ``v`` are exactly the files added
with ``dataChange: true`` by commits ``v+1 .. current`` (the Delta protocol's own definition of a
data change). A file removed again later (compacted, or archived) is still readable until
``vacuum`` deletes it, which happens only after the vacuum retention; a loader that falls further
behind than that, or than the log retention, gets ``ChangesUnavailableError`` and must replay.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import orjson

from include.lake.storage import Location, as_location


class ChangesUnavailableError(RuntimeError):
    """The log or the files needed to read a table's changes are gone."""


@dataclass(frozen=True)
class AddedFile:
    """A data file a commit added: path relative to the table, partition values, row count if
    known."""

    path: str
    version: int
    partition_values: dict[str, str | None]
    num_records: int | None


def current_version(table: Location | Path) -> int | None:
    """The table's latest version, or None when there is no table yet."""
    location = as_location(table)
    if not location.is_delta_table():
        return None
    return location.delta_table().version()


def _commit_file(table: Location, version: int) -> Location:
    return table / f"_delta_log/{version:020d}.json"


def added_since(
    table: Location | Path, after_version: int | None, until_version: int
) -> list[AddedFile]:
    """Files added as data changes by commits after ``after_version`` up to ``until_version``."""
    import pyarrow.fs as pafs

    location = as_location(table)
    first = 0 if after_version is None else after_version + 1
    added: list[AddedFile] = []
    for version in range(first, until_version + 1):
        commit = _commit_file(location, version)
        try:
            lines = commit.read_bytes().splitlines()
        except FileNotFoundError as error:
            raise ChangesUnavailableError(
                f"{commit} is gone (log cleanup): the changes after version {after_version} "
                "cannot be read; rebuild with the replay DAG"
            ) from error
        for line in lines:
            if not line.strip():
                continue
            action = orjson.loads(line)
            add = action.get("add")
            if add is None or not add.get("dataChange", True):
                continue
            path = unquote(add["path"])
            stats = orjson.loads(add["stats"]) if add.get("stats") else {}
            added.append(
                AddedFile(
                    path=path,
                    version=version,
                    partition_values=dict(add.get("partitionValues") or {}),
                    num_records=stats.get("numRecords"),
                )
            )
    # Every file the commits added must still be readable.
    fs, root = location.filesystem()
    infos = fs.get_file_info([f"{root}/{file.path}" for file in added])
    for file, info in zip(added, infos, strict=True):
        if info.type == pafs.FileType.NotFound:
            raise ChangesUnavailableError(
                f"{location / file.path}, added by version {file.version}, is gone (vacuumed): "
                "rebuild with the replay DAG"
            )
    return added
