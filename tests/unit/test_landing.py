"""The landed micro-batch (files written in the read, settled on the driver) against the
batch it replaced (the driver chose silver's rows first, then every file was written): the same
rows in every table, whatever earlier batches counted, on a replay, and when the key lookup
and the PostgreSQL step disagree."""

from __future__ import annotations

import json
import random
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from include.lake.storage import Location
from jobs.stream.landing import land_partition, settle_candidates, split_landed
from jobs.stream.shaping import EVENT_KEY, first_occurrences, silver_messages
from jobs.stream.sink import ITEMS, PARTITIONS, SILVER, TABLES, batch_files
from jobs.stream.validate import VALID
from tests.random_batches import TOPICS, random_batch

pytestmark = pytest.mark.unit

Key = tuple[str, str]


def _partitions(seed: int, rows: int) -> list[pa.Table]:
    """One table per topic, as the source's tasks read them: message ids unique in their topic
    (Pulsar's positions), a valid row's tenant is its topic's (the validation refuses any
    other), and has an event id."""
    rng = random.Random(seed)
    batch = random_batch(rng, rows, distinct_events=rows // 3)
    parts = []
    for k, topic in enumerate(TOPICS):
        part = batch.filter(pc.equal(batch.column("topic"), topic))
        valid = pc.equal(part.column("status"), VALID)
        tenant = pc.if_else(valid, pa.scalar(f"tenant{k}"), part.column("tenant_id"))
        event = pc.if_else(
            pc.and_(valid, pc.is_null(part.column("event_id"))),
            pa.scalar(str(uuid.UUID(int=k))),
            part.column("event_id"),
        )
        part = part.set_column(part.schema.get_field_index("tenant_id"), "tenant_id", tenant)
        part = part.set_column(part.schema.get_field_index("event_id"), "event_id", event)
        ids = pa.array([f"{9 + k}:{n}:-1" for n in range(part.num_rows)], pa.string())
        part = part.set_column(part.schema.get_field_index("message_id"), "message_id", ids)
        parts.append(part)
    return parts


def _valid_keys(batch: pa.Table) -> list[Key]:
    valid = batch.filter(pc.equal(batch.column("status"), VALID))
    return sorted(set(zip(*(valid.column(c).to_pylist() for c in EVENT_KEY), strict=True)))


def _chosen(batch: pa.Table, fresh: set[Key]) -> pa.Table:
    """What ``LakeSink.plan_batch`` chooses: the batch's first occurrences with a fresh key."""
    valid = batch.filter(pc.equal(batch.column("status"), VALID))
    return silver_messages(valid.take(first_occurrences(valid)), fresh)


def _rows(lake: Path, name: str, files: list[dict[str, object]]) -> list[dict[str, object]]:
    """Every row of ``files`` with its partition values, as a reader of the table sees it (the
    table's schema is the union of its files': a column a file lacks reads as null), in a
    stable order."""
    out = []
    for f in files:
        if f["table"] != name:
            continue
        values = json.loads(str(f["partition_values"]))
        for row in pq.read_table(lake / name / str(f["path"])).to_pylist():
            out.append({**row, **values})
    columns = {c for row in out for c in row}
    full = [{c: row.get(c) for c in sorted(columns)} for row in out]
    return sorted(full, key=lambda r: json.dumps(r, sort_keys=True, default=str))


def _land(
    parts: list[pa.Table], lake: Path, counted: set[Key], chosen: pa.Table, pending: tuple[str, ...]
) -> list[dict[str, object]]:
    def owned(tenant: str, ids: list[str]) -> set[str]:
        return {e for e in ids if (tenant, e) not in counted}

    landed = pa.Table.from_batches(
        [
            b
            for part in parts
            for b in land_partition(iter(part.to_batches()), Location.of(lake), TABLES, owned)
        ]
    )
    return settle_candidates(split_landed(landed), chosen, pending, Location.of(lake), PARTITIONS)


def _files_on_disk(lake: Path) -> set[str]:
    return {str(p.relative_to(lake)) for p in lake.rglob("*.parquet")}


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(
    "case", ["first sight", "seen before", "replay", "counted after the lookup", "items only"]
)
def test_landed_batch_holds_what_the_driver_side_batch_held(
    seed: int, case: str, tmp_path: Path
) -> None:
    parts = _partitions(seed, 600)
    batch = pa.concat_tables(parts)
    keys = _valid_keys(batch)
    rng = random.Random(seed)
    earlier = {k for k in keys if rng.random() < 0.3} if case != "first sight" else set()
    fresh = set(keys) - earlier
    counted = set(earlier)  # what stream_event_keys holds when the tasks look
    pending: tuple[str, ...] = TABLES
    if case == "replay":  # PostgreSQL committed this batch before the crash
        counted |= fresh
    if case == "counted after the lookup":
        late = {k for k in sorted(fresh) if rng.random() < 0.2}
        assert late
        fresh -= late
    if case == "items only":  # the others committed before a crash
        pending = (ITEMS,)
    chosen = _chosen(batch, fresh)

    old_lake, new_lake = tmp_path / "old", tmp_path / "new"
    # The replaced job wrote each Spark partition's (topic's) files in its own task.
    old = [f for part in parts for f in batch_files(part, Location.of(old_lake), pending, chosen)]
    new = _land(parts, new_lake, counted, chosen, pending)

    for name in TABLES:
        assert _rows(new_lake, name, new) == _rows(old_lake, name, old), name
        if name in (SILVER, ITEMS) and name in pending:
            assert _rows(new_lake, name, new), f"{name}: nothing to compare"
    # The files the commit does not take are gone.
    assert _files_on_disk(new_lake) == {f"{f['table']}/{f['path']}" for f in new}
    if case == "seen before":
        assert len(chosen) < len(_chosen(batch, set(keys)))


def test_rows_of_one_tenant_in_two_tasks_are_refused(tmp_path: Path) -> None:
    # The landing relies on one task per topic; a split topic must fail loudly, not lose rows.
    (part, *_) = [p for p in _partitions(7, 600) if p.num_rows > 20]
    half = part.num_rows // 2
    halves = [part.slice(0, half), part.slice(half)]
    keys = set(_valid_keys(part))
    chosen = _chosen(part, keys)
    # The second task's rows repeat keys of the first: its lookup finds them counted.
    first_keys = set(_valid_keys(halves[0]))
    with pytest.raises(RuntimeError, match="two tasks landed silver rows"):
        _land_split(halves, tmp_path, first_keys, chosen)


def _land_split(
    halves: list[pa.Table], lake: Path, first_keys: set[Key], chosen: pa.Table
) -> list[dict[str, object]]:
    landed = []
    for n, half in enumerate(halves):
        counted = first_keys if n else set()

        def owned(tenant: str, ids: list[str], counted: set[Key] = counted) -> set[str]:
            return {e for e in ids if (tenant, e) not in counted}

        landed += list(land_partition(iter(half.to_batches()), Location.of(lake), TABLES, owned))
    return settle_candidates(
        split_landed(pa.Table.from_batches(landed)), chosen, TABLES, Location.of(lake), PARTITIONS
    )
