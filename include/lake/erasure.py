"""GDPR erasure of one customer of one tenant from the lake (Delta) and its Parquet archive.

What goes, for ``(tenant, customer id)``:

- **silver**: the rows whose ``customer_customer_id`` is the customer; their ``event_id``s
  (from the lake and from archived silver files) identify everything else. Every Delta delete
  names rows by event id (or quarantine message id), never by customer id: delta-rs writes a
  delete's predicate in clear into the commit's ``commitInfo`` in the Delta log;
- **event_items** and **bronze**: the rows of those events (bronze keeps the raw payload, and
  one row per duplicate delivery, all with the same event id);
- **quarantine**: messages on the tenant's topic whose raw payload names the customer id as a
  whole token (``c_1`` does not match ``c_10``); quarantined payloads may not be JSON at all,
  so this is a byte-level match, not a parse;
- **archive**: every archived Parquet file of the tenant's partitions of those four tables that
  holds such rows is rewritten without them, atomically (``include.lake.storage``). Its manifest
  entry (row count, SHA-256) is replaced *before* the file, so ``archive.verify`` passes again
  once the file is in place; a crash in between leaves a file that still holds the customer,
  which the retry rewrites.

Silver (archive, then lake) is erased last: a crash at any point leaves the event ids of every
row not yet erased findable by the retry. Running it again deletes nothing.

What this does **not** remove at once:

- Delta keeps the files a delete replaced, for time travel, until they are vacuumed:
  ``archive_lake``'s maintenance vacuums files unreferenced for
  ``LAKEHOUSE_LAKE_VACUUM_RETENTION_HOURS`` (168 by default), so the erased rows physically leave
  the lake that long after the erasure.
- The Delta log keeps per-file column statistics (min/max of the first 32 columns, which include
  ``customer_customer_id``) in the commits that added the old files, until the log's retention
  (``delta.logRetentionDuration``, 30 days by default) lets maintenance's ``cleanup_metadata``
  expire them (after a checkpoint).
- A message published on *another* tenant's topic (quarantined as ``tenant_mismatch``) stays:
  customer ids are per tenant, so the same id on another topic is another person.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import DeltaTable
from deltalake.exceptions import CommitFailedError

from include.lake import tables
from include.lake.archive import (
    ARCHIVE_FILE,
    PARTITIONING,
    manifest_path,
    parquet_bytes,
    read_manifest,
    read_parquet,
    write_manifest,
)
from include.lake.storage import Location, as_location, partition_values
from include.privacy import valid_customer_id
from include.tenants import validate_tenant_id

log = logging.getLogger(__name__)

SILVER = tables.SILVER.name
BRONZE = tables.BRONZE.name
ITEMS = tables.EVENT_ITEMS.name
QUARANTINE = tables.QUARANTINE.name

# Values per IN list: keeps each predicate small enough for DataFusion to plan quickly.
ID_CHUNK = 500
# A stream append to the same partition between our read and our commit makes delta-rs refuse
# the delete; the predicate is still right on the newer snapshot, so try again.
COMMIT_ATTEMPTS = 4
# Characters a customer id may contain (``include.privacy.CUSTOMER_ID_PATTERN``): a match must
# not continue into one of them on either side.
_ID_CHARS = r"A-Za-z0-9._@:+\-"

RowMask = Callable[[pa.Table], pa.ChunkedArray | pa.Array]


@dataclass(frozen=True)
class LakeErasure:
    """Rows one erasure removed from each lake table and from the archive."""

    silver_rows: int
    bronze_rows: int
    event_items_rows: int
    quarantine_rows: int
    archive_rows: int
    event_ids: tuple[str, ...]

    @property
    def lake_rows(self) -> int:
        """Rows deleted from the current snapshots of the four Delta tables."""
        return self.silver_rows + self.bronze_rows + self.event_items_rows + self.quarantine_rows


def customer_token_pattern(customer_id: str) -> str:
    """An RE2 pattern matching ``customer_id`` as a whole token in raw bytes.

    ``c_1`` matches in ``{"customer_id":"c_1"}`` or ``id=c_1;`` but not in ``c_10`` or ``xc_1``
    (RE2 has no look-around, so the boundaries are alternations with the text's ends).
    """
    if not valid_customer_id(customer_id):
        raise ValueError("invalid customer id: it must match include.privacy.CUSTOMER_ID_PATTERN")
    return f"(?:^|[^{_ID_CHARS}]){re.escape(customer_id)}(?:$|[^{_ID_CHARS}])"


def _sql_literal(value: str) -> str:
    # Every value reaching a predicate is validated (tenant, customer id) or produced by the
    # platform (UUIDs, dates, topics, message ids); refuse a quote rather than escape it.
    if "'" in value or "\\" in value:
        raise ValueError("unexpected quote or backslash in a predicate value")
    return f"'{value}'"


def _in_list(column: str, values: list[str]) -> str:
    return f"{column} IN ({', '.join(_sql_literal(v) for v in values)})"


def _chunks(values: list[str], size: int = ID_CHUNK) -> Iterator[list[str]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _table(lake: Location, name: str) -> DeltaTable | None:
    location = lake / name
    return location.delta_table() if location.is_delta_table() else None


def _tenant_rows(table: DeltaTable, name: str, tenant_id: str, columns: list[str]) -> pa.Table:
    """``columns`` of the tenant's partitions of ``table`` (current snapshot).

    Callers filter the result, never the scan: files a delete rewrote store strings as
    ``string_view`` and the older ones as ``string``, and pyarrow cannot evaluate a scan filter
    over such a mix (no ``equal`` kernel for string and string_view); the scan's own projection
    converts both to the table's schema."""
    dataset = table.to_pyarrow_dataset(
        file_pruning_predicate=[(tables.BY_NAME[name].tenant_column, "=", tenant_id)]
    )
    return dataset.to_table(columns=columns)


def _delete(lake: Location, name: str, predicate: str, expected: int) -> int:
    """Delete ``predicate``'s rows from ``name``; return how many went."""
    for attempt in range(1, COMMIT_ATTEMPTS + 1):
        table = _table(lake, name)
        if table is None:  # pragma: no cover - the caller saw the table a moment ago
            return 0
        try:
            metrics = table.delete(predicate)
        except CommitFailedError:
            if attempt == COMMIT_ATTEMPTS:
                raise
            log.warning(
                "erasure delete conflicted with a concurrent commit, retrying",
                extra={"table": name, "attempt": attempt},
            )
            time.sleep(0.5 * attempt)
            continue
        # delta-rs omits the count when it cannot tell without a scan: use what we counted.
        return int(metrics.get("num_deleted_rows", expected))
    raise AssertionError("unreachable")  # pragma: no cover


# -- Finding the customer's events -----------------------------------------------------------
def archived_files(
    archive: Location | Path, name: str, tenant_id: str
) -> list[tuple[dict[str, str], Location]]:
    """``(partition, file)`` of every archived file of ``tenant_id``'s partitions of ``name``."""
    columns = PARTITIONING[name]
    tenant_column = tables.BY_NAME[name].tenant_column
    tenant_dir = as_location(archive) / f"{name}/{tenant_column}={tenant_id}"
    found = []
    for relative, _size in tenant_dir.files(ARCHIVE_FILE):
        partition = {tenant_column: tenant_id, **partition_values(relative)}
        if list(partition) != list(columns) or relative.count("/") != len(columns) - 1:
            raise ValueError(f"unexpected archive file {tenant_dir / relative}")
        found.append((partition, tenant_dir / relative))
    return found


def _customer_events(
    lake: Location, archive: Location, tenant_id: str, customer_id: str
) -> dict[str, str]:
    """``event_id -> event_date`` of the customer's events in silver, lake and archive."""
    events: dict[str, str] = {}
    table = _table(lake, SILVER)
    if table is not None:
        rows = _tenant_rows(
            table, SILVER, tenant_id, ["event_id", "event_date", "customer_customer_id"]
        )
        rows = rows.filter(_customer_mask(customer_id)(rows))
        for event_id, day in zip(
            rows.column("event_id").to_pylist(), rows.column("event_date").to_pylist(), strict=True
        ):
            events[event_id] = day.isoformat()
    for partition, path in archived_files(archive, SILVER, tenant_id):
        rows = read_parquet(path, columns=["event_id", "customer_customer_id"])
        mine = rows.filter(pc.fill_null(pc.equal(rows["customer_customer_id"], customer_id), False))
        for event_id in mine.column("event_id").to_pylist():
            events[event_id] = partition["event_date"]
    for event_id in events:
        uuid.UUID(event_id)  # the contract makes them UUIDs; they go into predicates below
    return events


# -- The Delta tables ------------------------------------------------------------------------
def _erase_events(lake: Location, name: str, tenant_id: str, events: dict[str, str]) -> int:
    """Delete the rows of ``events`` (``event_id -> event_date``) from silver, bronze or
    event_items."""
    table = _table(lake, name)
    if table is None or not events:
        return 0
    deleted = 0
    stored = _tenant_rows(table, name, tenant_id, ["event_id"])
    for chunk in _chunks(sorted(events)):
        present = stored.filter(_event_mask(chunk)(stored)).num_rows
        if present == 0:
            continue
        days = sorted({events[e] for e in chunk})
        # The date list prunes the delete's scan to the partitions these events live in.
        predicate = (
            f"tenant_id = {_sql_literal(tenant_id)} AND {_in_list('event_date', days)} "
            f"AND {_in_list('event_id', chunk)}"
        )
        deleted += _delete(lake, name, predicate, present)
    return deleted


def _payload_mask(pattern: str) -> RowMask:
    def mask(rows: pa.Table) -> pa.ChunkedArray | pa.Array:
        payload = rows.column("payload")
        if not pa.types.is_binary(payload.type):
            payload = pc.cast(payload, pa.binary())
        return pc.fill_null(pc.match_substring_regex(payload, pattern), False)

    return mask


def _erase_quarantine(lake: Location, tenant_id: str, pattern: str) -> int:
    """Delete the tenant's quarantined messages whose payload names the customer.

    DataFusion (delta-rs 1.6) refuses ``strpos`` and regular expressions on a binary column;
    ``LIKE`` works but treats ``_`` as a wildcard and cannot express token boundaries. So
    Arrow finds the messages and the delete names them by ``(topic, message_id)``.
    """
    table = _table(lake, QUARANTINE)
    if table is None:
        return 0
    rows = _tenant_rows(table, QUARANTINE, tenant_id, ["topic", "message_id", "payload"])
    matched = rows.filter(_payload_mask(pattern)(rows))
    if matched.num_rows == 0:
        return 0
    by_topic: dict[str, set[str]] = {}
    for topic, message_id in zip(
        matched.column("topic").to_pylist(), matched.column("message_id").to_pylist(), strict=True
    ):
        by_topic.setdefault(topic, set()).add(message_id)
    deleted = 0
    for topic, message_ids in sorted(by_topic.items()):
        ids = sorted(message_ids)
        for chunk in _chunks(ids):
            expected = matched.filter(
                pc.and_(
                    pc.equal(matched["topic"], topic),
                    pc.is_in(matched["message_id"], pa.array(chunk)),
                )
            ).num_rows
            predicate = (
                f"topic_tenant = {_sql_literal(tenant_id)} AND topic = {_sql_literal(topic)} "
                f"AND {_in_list('message_id', chunk)}"
            )
            deleted += _delete(lake, QUARANTINE, predicate, expected)
    return deleted


# -- The archive -----------------------------------------------------------------------------
def _rewrite_archive(
    archive: Location, name: str, tenant_id: str, columns: list[str], drop: RowMask
) -> int:
    """Rewrite each archived file of the tenant's partitions of ``name`` without the rows
    ``drop`` selects (computed on ``columns``); return how many rows went."""
    removed = 0
    for partition, path in archived_files(archive, name, tenant_id):
        probe = read_parquet(path, columns=columns)
        doomed = drop(probe)
        count = int(pc.sum(pc.cast(doomed, pa.int64())).as_py() or 0)
        if count == 0:
            continue
        kept = read_parquet(path).filter(pc.invert(doomed))
        data = parquet_bytes(kept)
        written = pq_rows(data)
        if written != kept.num_rows:  # pragma: no cover - a broken writer
            raise RuntimeError(f"{path}: {written} rows written, {kept.num_rows} expected")
        manifest = manifest_path(archive, name, partition)
        # Manifest first: see the module docstring.
        if manifest.exists():
            entry = read_manifest(manifest)
            digest = hashlib.sha256(data).hexdigest()
            write_manifest(replace(entry, rows=kept.num_rows, sha256=digest), archive)
        else:
            log.warning(
                "archived file without a manifest entry", extra={"table": name, "file": str(path)}
            )
        path.write_bytes(data)
        removed += count
        log.info(
            "archived file rewritten without an erased customer",
            extra={"table": name, "partition": partition, "rows_removed": count},
        )
    return removed


def pq_rows(data: bytes) -> int:
    """Rows of the Parquet file ``data``."""
    return int(pq.ParquetFile(io.BytesIO(data)).metadata.num_rows)


def _event_mask(event_ids: list[str]) -> RowMask:
    value_set = pa.array(event_ids, type=pa.string())

    def mask(rows: pa.Table) -> pa.ChunkedArray | pa.Array:
        return pc.fill_null(pc.is_in(rows.column("event_id"), value_set=value_set), False)

    return mask


def _customer_mask(customer_id: str) -> RowMask:
    def mask(rows: pa.Table) -> pa.ChunkedArray | pa.Array:
        return pc.fill_null(pc.equal(rows.column("customer_customer_id"), customer_id), False)

    return mask


def erase_customer_from_lake(
    lake_root: Location | Path, archive_root: Location | Path, tenant_id: str, customer_id: str
) -> LakeErasure:
    """Erase one customer of one tenant from the four Delta tables and the Parquet archive.

    Args:
        lake_root: where the Delta tables (``silver``, ``bronze``, ...) live.
        archive_root: where ``archive_lake`` writes.
        tenant_id: the tenant; must match ``include.tenants.TENANT_ID_PATTERN``.
        customer_id: the customer; must match ``include.privacy.CUSTOMER_ID_PATTERN``.

    Returns:
        Rows deleted per table, rows removed from archived files, and the erased event ids.

    Raises:
        ValueError: an invalid tenant or customer id (both end up in Delta predicates).

    Idempotent: a second run finds nothing and deletes nothing. Tables not created yet are
    skipped. The customer id is never logged.
    """
    validate_tenant_id(tenant_id)
    pattern = customer_token_pattern(customer_id)
    lake, archive = as_location(lake_root), as_location(archive_root)
    events = _customer_events(lake, archive, tenant_id, customer_id)
    event_ids = sorted(events)
    items_rows = _erase_events(lake, ITEMS, tenant_id, events)
    bronze_rows = _erase_events(lake, BRONZE, tenant_id, events)
    quarantine_rows = _erase_quarantine(lake, tenant_id, pattern)
    archive_rows = 0
    if event_ids:
        for name in (ITEMS, BRONZE):
            archive_rows += _rewrite_archive(
                archive, name, tenant_id, ["event_id"], _event_mask(event_ids)
            )
    archive_rows += _rewrite_archive(
        archive, QUARANTINE, tenant_id, ["payload"], _payload_mask(pattern)
    )
    # Silver last: it is where a retry finds the event ids again (module docstring).
    archive_rows += _rewrite_archive(
        archive, SILVER, tenant_id, ["customer_customer_id"], _customer_mask(customer_id)
    )
    silver_rows = _erase_events(lake, SILVER, tenant_id, events)
    result = LakeErasure(
        silver_rows=silver_rows,
        bronze_rows=bronze_rows,
        event_items_rows=items_rows,
        quarantine_rows=quarantine_rows,
        archive_rows=archive_rows,
        event_ids=tuple(event_ids),
    )
    log.info(
        "customer erased from the lake",
        extra={
            "tenant_id": tenant_id,
            "events": len(event_ids),
            "silver_rows": silver_rows,
            "bronze_rows": bronze_rows,
            "event_items_rows": items_rows,
            "quarantine_rows": quarantine_rows,
            "archive_rows": archive_rows,
        },
    )
    return result
