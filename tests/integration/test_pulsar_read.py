"""``read_range`` on pulsar-lite: a range that ends on a whole entry (as every micro-batch range
does, since the newest id a topic reports has no batch index) is read exactly, and the read
ends at the entry's last message instead of waiting for a timeout to say the entry is over."""

from __future__ import annotations

import uuid
from typing import Any

import pulsar
import pytest

from include.pulsar_client import pulsar_client
from include.pulsar_read import last_position, read_range
from include.settings import Settings


class _Reader:
    """A reader that counts the timeouts its reads end in (a timeout is the only way to wait)."""

    def __init__(self, reader: Any, timeouts: list[int]) -> None:
        self._reader, self._timeouts = reader, timeouts

    def read_next(self, timeout_ms: int) -> Any:
        try:
            return self._reader.read_next(timeout_ms)
        except pulsar.Timeout:
            self._timeouts.append(timeout_ms)
            raise

    def close(self) -> None:
        self._reader.close()


class _Client:
    def __init__(self, client: Any) -> None:
        self._client = client
        self.timeouts: list[int] = []

    def create_reader(self, *args: Any, **kwargs: Any) -> _Reader:
        return _Reader(self._client.create_reader(*args, **kwargs), self.timeouts)


@pytest.mark.parametrize("batched", [True, False])
def test_a_range_to_a_whole_entry_is_read_exactly_without_waiting(
    platform: Settings, batched: bool
) -> None:
    client = pulsar_client(platform.pulsar_url, platform.pulsar_token)
    topic = f"persistent://public/default/read-{uuid.uuid4().hex[:8]}.events"
    try:
        producer = client.create_producer(
            topic,
            batching_enabled=batched,
            batching_max_messages=5,
            batching_max_publish_delay_ms=1_000,
        )
        sent = [f"m{i}".encode() for i in range(15)]
        results: list[Any] = []
        for body in sent:
            producer.send_async(body, lambda result, _id: results.append(result))
        producer.flush()
        assert results == [pulsar.Result.Ok] * len(sent)
        end = last_position(client, topic)
        assert end is not None and end[2] == -1  # pulsar-lite: a whole entry
        counting = _Client(client)
        got = [m.data() for m in read_range(counting, topic, None, end, read_timeout_ms=5_000)]
        assert got == sent
        assert counting.timeouts == []
        # From inside the first entry (batched) or after the first message, to the same end.
        first = next(iter(read_range(client, topic, None, end))).message_id()
        after = (first.ledger_id(), first.entry_id(), first.batch_index())
        counting = _Client(client)
        rest = [m.data() for m in read_range(counting, topic, after, end, read_timeout_ms=5_000)]
        assert rest == sent[1:]
        assert counting.timeouts == []
    finally:
        client.close()
