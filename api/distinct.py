"""Exact distinct counts of ``/metrics`` from the roaring-bitmap pieces, and their repair after
an erasure in the API's own transaction (asyncpg twins of ``include.warehouse.distinct``).

A bucket (clipped to the requested range) is tiled by the fewest aligned blocks; a bucket that
is exactly one block (an hour of a whole-hour zone, a minute) reads only the block's stored
cardinality. Bitmaps are fetched only for blocks that take part in a union: buckets of several
blocks and the whole range's totals.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from pyroaring import BitMap

from api.db import Conn
from include.warehouse import distinct as pieces

# The stored cardinality of every wanted block, and its bitmap where ``need`` is set.
FETCH = """
SELECT p.kind, p.level, p.start_minute, p.cardinality, CASE WHEN w.need THEN p.bitmap END
FROM unnest($2::smallint[], $3::integer[], $4::boolean[]) AS w(level, start_minute, need)
JOIN distinct_pieces p
  ON p.tenant_id = $1 AND p.level = w.level AND p.start_minute = w.start_minute
"""

Counts = tuple[int, int, int]  # sessions, purchasing sessions, customers


def plan(
    bounds: Sequence[tuple[int, int]], start: int, end: int
) -> tuple[list[list[tuple[int, int]]], list[tuple[int, int]], dict[tuple[int, int], bool]]:
    """The blocks of each bucket, of the range, and per block whether its bitmap is needed."""
    per_bucket = [pieces.decompose(a, b) for a, b in bounds]
    whole = pieces.decompose(start, end)
    need: dict[tuple[int, int], bool] = {}
    for blocks in per_bucket:
        several = len(blocks) > 1
        for block in blocks:
            need[block] = need.get(block, False) or several
    for block in whole:
        need[block] = True
    return per_bucket, whole, need


def _count(
    blocks: list[tuple[int, int]],
    kind: str,
    cards: dict[tuple[str, int, int], int],
    bitmaps: dict[tuple[str, int, int], BitMap],
) -> int:
    if len(blocks) == 1:
        level, start = blocks[0]
        return cards.get((kind, level, start), 0)
    found = [bitmaps[k] for level, start in blocks if (k := (kind, level, start)) in bitmaps]
    return pieces.union_cardinality(found)


def counts_from(
    rows: Iterable[Any],
    per_bucket: list[list[tuple[int, int]]],
    whole: list[tuple[int, int]],
) -> tuple[list[Counts], Counts]:
    """Per bucket and over the range: (sessions, purchasing sessions, customers)."""
    cards: dict[tuple[str, int, int], int] = {}
    bitmaps: dict[tuple[str, int, int], BitMap] = {}
    for kind, level, start, cardinality, data in rows:
        cards[(kind, level, start)] = cardinality
        if data is not None:
            bitmaps[(kind, level, start)] = pieces.deserialize(data)
    kinds = pieces.KINDS
    series = [
        (
            _count(blocks, kinds[0], cards, bitmaps),
            _count(blocks, kinds[1], cards, bitmaps),
            _count(blocks, kinds[2], cards, bitmaps),
        )
        for blocks in per_bucket
    ]
    total = (
        _count(whole, kinds[0], cards, bitmaps),
        _count(whole, kinds[1], cards, bitmaps),
        _count(whole, kinds[2], cards, bitmaps),
    )
    return series, total


def bucket_bounds(
    buckets: Sequence[datetime], start: datetime, end: datetime
) -> list[tuple[int, int]]:
    """Minute windows of ``buckets`` (their starts, in order) clipped to ``start``..``end``."""
    first, last = pieces.minute_of(start), pieces.minute_of(end)
    marks = [max(first, pieces.minute_of(b)) for b in buckets]
    return [(a, b) for a, b in zip(marks, [*marks[1:], last], strict=True)]


async def distinct_series(
    conn: Conn, tenant_id: str, buckets: Sequence[datetime], start: datetime, end: datetime
) -> tuple[list[Counts], Counts]:
    """Exact distinct counts of each bucket and of the range, in one query."""
    per_bucket, whole, need = plan(
        bucket_bounds(buckets, start, end), pieces.minute_of(start), pieces.minute_of(end)
    )
    blocks = list(need)
    rows = await conn.fetch(
        FETCH,
        tenant_id,
        [lv for lv, _ in blocks],
        [s for _, s in blocks],
        [need[b] for b in blocks],
    )
    return counts_from(rows, per_bucket, whole)


async def repair(
    conn: Conn, tenant: str, sessions: list[str], customers: list[str], minutes: Iterable[int]
) -> int:
    """:func:`include.warehouse.distinct.repair_sync` on an asyncpg connection."""
    touched = sorted(set(minutes))
    if not touched or not (sessions or customers):
        if customers:
            await conn.execute(pieces.FORGET_CUSTOMERS, tenant, customers)
        return 0
    await conn.execute(pieces.LOCK, tenant)
    ids = {
        space: BitMap(found)
        for space, found in await conn.fetch(pieces.IDS_OF, tenant, sessions, customers)
    }
    keys = {
        (kind, level, block)
        for m in touched
        for level, block in pieces.covering(m)
        for kind in pieces.KINDS
    }
    wanted = list(keys)
    stored = {
        (kind, level, block): pieces.deserialize(data)
        for kind, level, block, data in await conn.fetch(
            pieces.READ_PIECES, *pieces.read_args(tenant, wanted)
        )
    }
    windows = pieces.top_windows(touched)
    rows = await conn.fetch(
        pieces.REMAINING, *pieces.remaining_args(tenant, windows, sessions, customers)
    )
    remaining = pieces.roll_up(pieces.minute_bitmaps((r[1], r[2], r[3]) for r in rows))
    changed = pieces.repaired(stored, ids, {k: v for k, v in remaining.items() if k in keys})
    upsert, delete = pieces.write_args(tenant, changed)
    if upsert is not None:
        await conn.execute(pieces.UPSERT_PIECES, *upsert)
    if delete is not None:
        await conn.execute(pieces.DELETE_PIECES, *delete)
    if customers:
        await conn.execute(pieces.FORGET_CUSTOMERS, tenant, customers)
    return len(changed)
