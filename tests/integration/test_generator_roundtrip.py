"""generator -> pulsar-lite -> consumer: every message arrives once, counted exactly per tenant.

The generator runs as its own process (as `make generate` runs it); the test classifies what it
reads back on its own and compares with the generator's summary.
"""

from __future__ import annotations

from collections import Counter

import orjson
import pytest

from include.db import connect
from include.pulsar_client import pulsar_client
from include.pulsar_read import last_position, read_range
from include.settings import Settings
from include.tenants import list_tenants, topic_for
from tests.services import run_generator

TENANTS = ["round_alpha", "round_beta", "round_gamma"]


def _classify(tenant_id: str, payload: bytes, seen: set[str]) -> str:
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return "malformed"
    if body["schema_version"] not in (1, 2):
        return "unsupported_version"
    if body["tenant_id"] != tenant_id:
        return "tenant_mismatch"
    if body["event_id"] in seen:
        return "duplicate"
    seen.add(body["event_id"])
    return "valid"


@pytest.mark.parametrize("processes", [1, 2])
def test_every_published_message_is_consumed_once_per_tenant(
    platform: Settings, processes: int
) -> None:
    tenants = [f"{t}_{processes}" for t in TENANTS]
    summary = run_generator(
        platform,
        "burst",
        "--count",
        "12000",
        "--seed",
        "11",
        "--tenants",
        ",".join(tenants),
        "--processes",
        str(processes),
        "--duplicate-rate",
        "0.03",
        "--malformed-rate",
        "0.01",
        "--bad-version-rate",
        "0.01",
        "--tenant-mismatch-rate",
        "0.02",
        timeout_s=120,
    )
    assert summary["sent"] == 12_000 and summary["failed"] == 0

    client = pulsar_client(platform.pulsar_url)
    try:
        consumed: dict[str, Counter[str]] = {}
        for tenant in tenants:
            topic = topic_for(tenant, platform.topic_template)
            end = last_position(client, topic)
            assert end is not None
            seen: set[str] = set()
            ids = []
            counts: Counter[str] = Counter()
            for message in read_range(client, topic, None, end):
                ids.append(message.message_id())
                counts[_classify(tenant, message.data(), seen)] += 1
            assert len({(i.ledger_id(), i.entry_id(), i.batch_index()) for i in ids}) == len(ids)
            consumed[tenant] = counts
    finally:
        client.close()

    assert {t: dict(c) for t, c in consumed.items()} == summary["per_tenant"]
    assert sum(sum(c.values()) for c in consumed.values()) == 12_000
    for kind in ("valid", "duplicate", "malformed", "unsupported_version", "tenant_mismatch"):
        assert all(consumed[t][kind] > 0 for t in tenants), kind
    with connect(platform) as conn:
        registered = {t.tenant_id for t in list_tenants(conn)}
    assert set(tenants) <= registered
