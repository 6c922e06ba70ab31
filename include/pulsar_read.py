"""Reading a topic range exactly once despite redeliveries and stalls.

pulsar-lite (and Apache Pulsar after reconnects) redelivers messages a reader already received,
and a reader can stall while messages remain. Within one topic message ids only grow, so a
message whose ``(ledger, entry, batch_index)`` is not greater than the last one kept is a
redelivery and is dropped; a read that times out before its end is retried by a new reader that
starts after the last id kept (``Reader.seek`` does not reposition on pulsar-lite).
"""

from __future__ import annotations

import logging
import sys
import uuid
from collections.abc import Iterator

import pulsar

log = logging.getLogger(__name__)

Position = tuple[int, int, int]  # (ledger_id, entry_id, batch_index)
_WHOLE_ENTRY = sys.maxsize
# How long to wait for more messages of an entry that already started arriving.
_ENTRY_REST_TIMEOUT_MS = 250
# Measured on batched topics read two at a time: with a 20,000-message queue 5 of 12 reads
# stalled once; with 1,000, 0 of 12, at the same speed. Stalls still happen (and unbatched
# topics have stalled with small queues), so a stall costs one short read timeout and a new
# reader, never the read.
READER_QUEUE_SIZE = 1_000


class StalledReadError(RuntimeError):
    """A topic read made no progress after repeated retries."""


# Field 6 of Pulsar's ``MessageIdData`` (PulsarApi.proto): how many messages the id's batched
# entry holds. The client sets it on every message it unpacks from a batch.
_BATCH_SIZE_FIELD = 6


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def batch_size_of(serialized: bytes) -> int | None:
    """The ``batch_size`` of a serialized ``MessageIdData`` (``MessageId.serialize()``), or None
    when it holds none (an unbatched message, or a client that does not set it)."""
    at = 0
    while at < len(serialized):
        tag, at = _varint(serialized, at)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            value, at = _varint(serialized, at)
            if field == _BATCH_SIZE_FIELD:
                return value if value > 0 else None
        elif wire == 2:
            length, at = _varint(serialized, at)
            at += length
        elif wire in (1, 5):
            at += 8 if wire == 1 else 4
        else:  # not a MessageIdData
            return None
    return None


def _last_index_of_entry(message_id: pulsar.MessageId) -> int | None:
    """The batch index of the last message of the id's entry (-1 for an unbatched message), or
    None when the id does not tell. Reading to a whole entry needs no wait past that index."""
    if message_id.batch_index() < 0:
        return -1
    size = batch_size_of(message_id.serialize())
    return None if size is None else size - 1


def position_of(message_id: pulsar.MessageId) -> Position:
    """The ordering key of a message id within its topic."""
    return (message_id.ledger_id(), message_id.entry_id(), message_id.batch_index())


def message_id_at(position: Position) -> pulsar.MessageId:
    """A ``MessageId`` for ``position`` (to start a reader there)."""
    ledger, entry, batch = position
    return pulsar.MessageId(-1, ledger, entry, batch)


def _through_entry(position: Position) -> Position:
    # An id without a batch index stands for its whole (possibly batched) entry.
    ledger, entry, batch = position
    return (ledger, entry, _WHOLE_ENTRY) if batch < 0 else position


def covers(done: Position | None, newest: Position | None) -> bool:
    """Whether a range read through ``done`` already includes ``newest``."""
    if newest is None:
        return True
    return done is not None and _through_entry(newest) <= _through_entry(done)


class RedeliveryFilter:
    """Keeps a message only if its position is beyond every position kept before."""

    def __init__(self, last: Position | None = None) -> None:
        self.last = last
        self.dropped = 0

    def accept(self, position: Position) -> bool:
        """Whether the message at ``position`` is new (and remember it if so)."""
        if self.last is not None and position <= self.last:
            self.dropped += 1
            return False
        self.last = position
        return True


def newest_position(consumer: pulsar.Consumer) -> Position | None:
    """The newest message's position on the consumer's topic, or None when it is empty."""
    try:
        position = position_of(consumer.get_last_message_id())
    except pulsar.UnknownError:
        # pulsar-lite answers "Topic has no messages" with UnknownError.
        return None
    return None if position[0] < 0 or position[1] < 0 else position


def last_position(client: pulsar.Client, topic: str) -> Position | None:
    """The position of the newest message in ``topic``, or None when it is empty."""
    consumer = client.subscribe(
        topic,
        f"lakehouse-probe-{uuid.uuid4().hex[:12]}",
        consumer_type=pulsar.ConsumerType.Exclusive,
        initial_position=pulsar.InitialPosition.Latest,
    )
    try:
        return newest_position(consumer)
    finally:
        consumer.unsubscribe()
        consumer.close()


def read_range(
    client: pulsar.Client,
    topic: str,
    after: Position | None,
    until: Position,
    *,
    receiver_queue_size: int = READER_QUEUE_SIZE,
    read_timeout_ms: int = 1_000,
    max_stalls: int = 30,
) -> Iterator[pulsar.Message]:
    """Yield each message of ``topic`` after ``after`` (exclusive) up to ``until`` (inclusive)
    exactly once, in order; raise ``StalledReadError`` after ``max_stalls`` timed-out reads in a
    row without a new message.

    Every message up to ``until`` is already stored, so a read that waits ``read_timeout_ms``
    is a stall, not an empty topic."""
    end = _through_entry(until)
    kept = RedeliveryFilter(None if after is None else _through_entry(after))
    resume = after  # a real position to start the next reader after
    stalls = 0
    in_last_entry = False
    last_index: int | None = None  # of the last entry's messages, once its size is known
    while kept.last is None or kept.last < end:
        start = pulsar.MessageId.earliest if resume is None else message_id_at(resume)
        reader = client.create_reader(
            topic, start, receiver_queue_size=receiver_queue_size, start_message_id_inclusive=False
        )
        try:
            while True:
                try:
                    message = reader.read_next(
                        _ENTRY_REST_TIMEOUT_MS if in_last_entry else read_timeout_ms
                    )
                except pulsar.Timeout:
                    if in_last_entry:
                        # The client receives an entry's whole batch in one frame: once one of
                        # its messages arrived, a pause means the rest of the entry was read.
                        return
                    stalls += 1
                    log.warning(
                        "topic read stalled; recreating the reader",
                        extra={"topic": topic, "last": kept.last, "stalls": stalls},
                    )
                    break
                message_id = message.message_id()
                position = position_of(message_id)
                if position > end:
                    return
                if kept.accept(position):
                    resume = position
                    stalls = 0
                    yield message
                if position == end:
                    return
                # An end id without a batch index covers its whole entry: done at the entry's
                # last message when its id tells the entry's size, else after a short pause
                # (has_message_available() answers False inside a batch: it lost messages).
                # Each range of a micro-batch ends so, and the pause cost every task 250 ms.
                in_last_entry = position[:2] == end[:2]
                if in_last_entry:
                    if last_index is None:  # once per read, not per message of the entry
                        last_index = _last_index_of_entry(message_id)
                    if last_index is not None and position[2] >= last_index:
                        return
        finally:
            reader.close()
        if stalls >= max_stalls:
            raise StalledReadError(
                f"{topic}: no progress after {stalls} stalled reads (kept through {kept.last}, "
                f"reading to {end}, dropped {kept.dropped} redeliveries)"
            )


def messages_per_entry(
    client: pulsar.Client,
    topic: str,
    after: Position | None,
    entries: int = 8,
    read_timeout_ms: int = 5_000,
) -> float:
    """Average messages per entry over the next ``entries`` entries after ``after`` (a sample of
    the producers' batch sizes); 0 when nothing arrived in time.

    The newest message id of a topic carries no batch size, so admission control estimates rows
    from entries. Several entries are sampled because a producer's first entry often holds a
    single message.
    """
    start = pulsar.MessageId.earliest if after is None else message_id_at(after)
    reader = client.create_reader(
        topic, start, receiver_queue_size=READER_QUEUE_SIZE, start_message_id_inclusive=False
    )
    kept = RedeliveryFilter(None if after is None else _through_entry(after))
    count = 0
    seen: set[tuple[int, int]] = set()
    try:
        while True:
            try:
                message = reader.read_next(read_timeout_ms if not seen else _ENTRY_REST_TIMEOUT_MS)
            except pulsar.Timeout:
                break
            position = position_of(message.message_id())
            if not kept.accept(position):
                continue
            if position[:2] not in seen and len(seen) == entries:
                break
            seen.add(position[:2])
            count += 1
    finally:
        reader.close()
    return count / len(seen) if seen else 0.0
