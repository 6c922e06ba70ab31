"""The end offset a batch records is where a restart without checkpoint begins."""

from __future__ import annotations

import pyarrow as pa

from include.pulsar_read import covers
from jobs.stream.sink import end_offsets


def _batch(rows: list[tuple[str, str]]) -> pa.Table:
    return pa.table({"topic": [t for t, _ in rows], "message_id": [m for _, m in rows]})


def test_the_recorded_offset_covers_the_newest_entry_after_its_last_message() -> None:
    # Entry 7 of ledger 3 held messages 0..4; the topic's newest id names that entry.
    offsets = end_offsets(_batch([("t", "3:6:9"), ("t", "3:7:0"), ("t", "3:7:4")]), {})
    assert offsets == {"t": [3, 7, -1]}
    ledger, entry, batch = offsets["t"]
    assert covers((ledger, entry, batch), (3, 7, -1))  # nothing left to read: no range planned


def test_offsets_only_move_forward_and_keep_topics_absent_from_the_batch() -> None:
    previous = {"a": [1, 9, -1], "b": [2, 4, -1]}
    offsets = end_offsets(_batch([("a", "1:12:3"), ("a", "1:10:0"), ("c", "5:0:0")]), previous)
    assert offsets == {"a": [1, 12, -1], "b": [2, 4, -1], "c": [5, 0, -1]}
    assert previous == {"a": [1, 9, -1], "b": [2, 4, -1]}
