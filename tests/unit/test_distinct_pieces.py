"""The distinct-count blocks (issue #16) against plain Python sets: tiling, roll-up, repair,
and the API's per-bucket counts, on seeded random activity."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from pyroaring import BitMap

from api.distinct import bucket_bounds, counts_from, plan
from include.warehouse import distinct as d


def test_decompose_tiles_every_window_exactly_with_aligned_blocks() -> None:
    rng = random.Random(3)
    for _ in range(2_000):
        start = rng.randrange(0, 3_000_000)
        end = start + rng.choice([1, 7, 15, 60, 61, 1_440, 10_079, 43_200, 576_000])
        blocks = d.decompose(start, end)
        at = start
        for level, block in blocks:
            assert block == at and (block - d.phase_of(level)) % d.size_of(level) == 0
            at += d.size_of(level)
        assert at == end
        assert len(blocks) <= 80
    # Hour buckets of a whole-hour zone are one block each; an off-grid hour is a few.
    assert d.decompose(60 * 24, 60 * 25) == [(2, 60 * 24)]
    assert len(d.decompose(60 * 24 + 7, 60 * 25 + 7)) == 8 + 3 + 7
    assert d.decompose(60 * 24 + 45, 60 * 25 + 45) == [(d.TOP + 3, 60 * 24 + 45)]
    assert d.decompose(1440 * 9 + 300, 1440 * 10 + 300) == [(d.TOP + 4 + 5, 1440 * 9 + 300)]
    assert len(d.covering(12_345)) == d.MAX_LEVEL + 1


def test_minute_index_round_trips() -> None:
    moment = datetime(2026, 3, 29, 1, 59, tzinfo=UTC)
    assert d.at_minute(d.minute_of(moment)) == moment
    assert d.minute_of(d.EPOCH) == 0


def _activity(rng: random.Random, n: int) -> dict[tuple[str, int], set[int]]:
    out: dict[tuple[str, int], set[int]] = {}
    for _ in range(n):
        kind = rng.choice(d.KINDS)
        minute = rng.randrange(0, 40_000)
        out.setdefault((kind, minute), set()).add(rng.randrange(0, 500))
    return out


def _truth(activity: dict[tuple[str, int], set[int]], kind: str, a: int, b: int) -> int:
    return len(set().union(*(ids for (k, m), ids in activity.items() if k == kind and a <= m < b)))


def test_rolled_up_blocks_answer_any_window_like_a_set_union() -> None:
    rng = random.Random(11)
    activity = _activity(rng, 5_000)
    blocks = d.roll_up({k: BitMap(v) for k, v in activity.items()})
    for _ in range(300):
        a = rng.randrange(0, 40_000)
        b = a + rng.randrange(1, 20_000)
        for kind in d.KINDS:
            found = [
                blocks[(kind, lv, s)] for lv, s in d.decompose(a, b) if (kind, lv, s) in blocks
            ]
            assert d.union_cardinality(found) == _truth(activity, kind, a, b)


def test_adding_is_idempotent_and_repair_equals_rebuilding_without_the_erased_ids() -> None:
    rng = random.Random(5)
    activity = _activity(rng, 3_000)
    first = {k: BitMap(v) for k, v in list(activity.items())[:1_500]}
    late = {k: BitMap(v) for k, v in list(activity.items())[1_500:]}
    stored = d.roll_up(first)
    stored |= d.merge_added(stored, d.roll_up(late))
    assert d.merge_added(stored, d.roll_up(late)) == {}  # a replay changes nothing
    assert stored == d.roll_up({k: BitMap(v) for k, v in activity.items()})
    # Erase ids 0..49 of the session space from some of their minutes only.
    erased = BitMap(range(50))
    deleted = {k for k in activity if k[0] != "customer" and activity[k] & set(erased)}
    touched = rng.sample(sorted(deleted), len(deleted) // 2)
    after = {k: (v - set(erased) if k in touched else set(v)) for k, v in activity.items()}
    remaining_minutes = {k: BitMap(v & set(erased)) for k, v in after.items() if v & set(erased)}
    keys = {(kind, lv, s) for _, m in touched for lv, s in d.covering(m) for kind in d.KINDS}
    remaining = {k: v for k, v in d.roll_up(remaining_minutes).items() if k in keys}
    fixed = d.repaired({k: v for k, v in stored.items() if k in keys},
                       {"session": erased}, remaining)  # fmt: skip
    result = {**stored, **fixed}
    result = {k: v for k, v in result.items() if v}
    assert result == d.roll_up({k: BitMap(v) for k, v in after.items() if v})


@pytest.mark.parametrize("zone_minutes", [0, 30, 45])
def test_api_counts_per_bucket_and_range_equal_set_unions(zone_minutes: int) -> None:
    rng = random.Random(zone_minutes)
    activity = _activity(rng, 4_000)
    blocks = d.roll_up({k: BitMap(v) for k, v in activity.items()})
    start = d.at_minute(1_000 + rng.randrange(60))
    end = start + timedelta(hours=300, minutes=rng.randrange(60))
    first = start.replace(minute=zone_minutes) - (
        timedelta(hours=1) if start.minute < zone_minutes else timedelta(0)
    )
    buckets = []
    at = first
    while at < end:
        buckets.append(at)
        at += timedelta(hours=1)
    bounds = bucket_bounds(buckets, start, end)
    per_bucket, whole, need = plan(bounds, d.minute_of(start), d.minute_of(end))
    rows = [
        (kind, lv, s, len(bm), d.serialize(BitMap(bm)) if need[(lv, s)] else None)
        for (kind, lv, s), bm in blocks.items()
        if (lv, s) in need
    ]
    series, total = counts_from(rows, per_bucket, whole)
    for (a, b), got in zip(bounds, series, strict=True):
        assert got == tuple(_truth(activity, k, a, b) for k in d.KINDS)
    a, b = d.minute_of(start), d.minute_of(end)
    assert total == tuple(_truth(activity, k, a, b) for k in d.KINDS)
    if zone_minutes == 0:  # whole-hour buckets need no bitmap but the range's
        assert sum(need.values()) == len(whole)
