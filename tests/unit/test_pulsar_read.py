from __future__ import annotations

from include.pulsar_read import RedeliveryFilter


def test_redeliveries_and_older_ids_are_dropped() -> None:
    kept = RedeliveryFilter()
    stream = [
        (1, 0, 0),
        (1, 0, 1),
        (1, 0, 0),
        (1, 0, 1),
        (1, 0, 2),
        (1, 1, 0),
        (1, 0, 2),
        (2, 0, -1),
    ]
    accepted = [p for p in stream if kept.accept(p)]
    assert accepted == [(1, 0, 0), (1, 0, 1), (1, 0, 2), (1, 1, 0), (2, 0, -1)]
    assert kept.dropped == 3
    assert kept.last == (2, 0, -1)


def test_a_filter_resumes_after_a_given_position() -> None:
    kept = RedeliveryFilter(last=(5, 10, 3))
    assert not kept.accept((5, 10, 3))
    assert not kept.accept((5, 9, 999))
    assert kept.accept((5, 10, 4))


def test_an_id_without_batch_index_covers_its_whole_entry() -> None:
    from include.pulsar_read import covers

    assert covers((1, 5, -1), (1, 5, -1))
    assert covers((1, 5, -1), (1, 5, 7))
    assert not covers((1, 5, 3), (1, 5, -1))
    assert not covers((1, 5, -1), (1, 6, -1))
    assert not covers(None, (0, 0, -1))
    assert covers(None, None)


def _field(number: int, value: int) -> bytes:
    """A protobuf varint field (tag, then value), as the client serializes ids."""
    out, tag = bytearray(), (number << 3) | 0
    for part in (tag, value & (2**64 - 1)):
        while True:
            byte, part = part & 0x7F, part >> 7
            out.append(byte | (0x80 if part else 0))
            if not part:
                break
    return bytes(out)


def test_the_batch_size_is_read_from_a_serialized_message_id() -> None:
    from include.pulsar_read import batch_size_of

    # As the client serialized the 3rd of 7 messages of entry 0 of ledger 0 (seen on pulsar-lite).
    assert batch_size_of(bytes.fromhex("0800100020023007")) == 7
    # Multi-byte values, a negative partition (ten-byte varint), an ack set before the size.
    id_data = (
        _field(1, 123_456_789) + _field(2, 70_000) + _field(3, -1) + _field(4, 999)
        + _field(5, 2**40) + _field(6, 1_000)
    )  # fmt: skip
    assert batch_size_of(id_data) == 1_000
    # A length-delimited field before it (a chunked message's first id) is skipped whole.
    nested = _field(1, 5) + _field(6, 3)
    assert batch_size_of(_field(1, 1) + b"\x3a" + bytes([len(nested)]) + nested + _field(6, 9)) == 9
    # No size: an unbatched message's id.
    assert batch_size_of(_field(1, 1) + _field(2, 2) + _field(4, (2**64) - 1)) is None
    assert batch_size_of(b"") is None
