"""Publishing a known mix for the streaming tests, and the reference they compare with."""

from __future__ import annotations

import random
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import islice
from typing import Any

import orjson
from pyspark.sql import SparkSession
from pyspark.sql.streaming.query import StreamingQuery

from generator.catalog import Merchant, merchant_profile
from generator.messages import DUPLICATE, VALID, FaultShares, OutgoingMessage, message_stream
from generator.publisher import Publisher
from generator.sessions import SessionFactory
from include.db import connect
from include.pulsar_client import pulsar_client
from include.settings import Settings
from include.tenants import register_tenant, topic_for
from jobs.stream.job import start_stream
from jobs.stream.sink import lake_caught_up
from tests.clock import days_ago

# Where a published mix starts by default: ten days ago, so its late sessions (up to three days
# earlier) and its 7-second clock stay well inside every rule relative to now.
MIX_START = days_ago(10)

REASON_OF_KIND = {
    "malformed": "invalid_json",
    "unsupported_version": "unsupported_schema_version",
    "tenant_mismatch": "tenant_mismatch",
}


@dataclass
class Reference:
    """What the stream must produce for what a test published."""

    silver_ids: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    bronze_rows: Counter[str] = field(default_factory=Counter)
    item_rows: Counter[str] = field(default_factory=Counter)
    quarantine: Counter[tuple[str, str]] = field(default_factory=Counter)
    minutes: dict[tuple[str, datetime, str], list[Any]] = field(default_factory=dict)
    # Every distinct valid event as published, per tenant (for API reference answers).
    events: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    published: int = 0

    def add_valid(self, tenant: str, payload: bytes, duplicate: bool) -> None:
        body = orjson.loads(payload)
        self.bronze_rows[tenant] += 1
        if duplicate or body["event_id"] in self.silver_ids[tenant]:
            return
        self.silver_ids[tenant].add(body["event_id"])
        self.events[tenant].append(body)
        self.item_rows[tenant] += len(body["items"])
        event_time = datetime.fromisoformat(body["event_time"]).astimezone(UTC)
        minute = event_time.replace(second=0, microsecond=0)
        key = (tenant, minute, body["event_type"])
        row = self.minutes.setdefault(key, [0, Decimal("0"), 0])
        row[0] += 1
        if body["order"] is not None:
            row[1] += Decimal(str(body["order"]["total_amount"]))
        row[2] += sum(i["quantity"] for i in body["items"])


def register(settings: Settings, tenants: list[str]) -> list[Merchant]:
    """Register the tenants and return their generator profiles."""
    merchants = []
    with connect(settings) as conn:
        for tenant in tenants:
            profile = merchant_profile(tenant)
            register_tenant(conn, tenant, profile.display_name, profile.currency)
            merchants.append(profile)
    return merchants


def hand_made_bad_messages(
    merchant: Merchant, start: datetime
) -> list[tuple[OutgoingMessage, str]]:
    """Messages for the reasons the generator does not produce, with the expected reason."""
    rng = random.Random(3)
    factory = SessionFactory(rng)
    purchase = None
    while purchase is None:
        events = factory.session(merchant, start)
        purchase = next((e for e in events if e["event_type"] == "purchase"), None)
    wrong_currency = dict(
        purchase,
        event_id="00000000-0000-4000-8000-00000000c001",
        order=dict(purchase["order"], currency="JPY"),
    )
    no_customer = dict(
        purchase, event_id="00000000-0000-4000-8000-00000000c002", customer={"email": "x@y.z"}
    )
    huge = dict(
        purchase,
        event_id="00000000-0000-4000-8000-00000000c003",
        session_id="s" * 190,
        lineage=dict(purchase["lineage"], trace_id="t" * 190),
    )
    huge_payload = orjson.dumps(huge) + b" " * 300_000
    out = [
        (orjson.dumps(wrong_currency), "currency_mismatch"),
        (orjson.dumps(no_customer), "schema_violation"),
        (huge_payload, "payload_too_large"),
        (b"\xff\xfe not utf-8", "invalid_json"),
        (b"[1, 2, 3]", "schema_violation"),
    ]
    return [
        (OutgoingMessage(merchant.tenant_id, "bad", payload, "bad", None), reason)
        for payload, reason in out
    ]


def publish_mix(
    settings: Settings,
    merchants: list[Merchant],
    count: int,
    seed: int,
    reference: Reference,
    start: datetime | None = None,
) -> None:
    """Publish ``count`` generated messages (every fault kind) plus hand-made bad ones."""
    start = start or MIX_START
    rng = random.Random(seed)
    clock_state = [start]

    def clock() -> datetime:
        clock_state[0] += timedelta(seconds=7)
        return clock_state[0]

    faults = FaultShares(
        duplicate=0.04, malformed=0.01, unsupported_version=0.01, tenant_mismatch=0.02
    )
    stream = message_stream(
        merchants, rng, SessionFactory(rng, v2_share=0.4, late_share=0.1), faults, clock
    )
    messages = list(islice(stream, count))
    extra = hand_made_bad_messages(merchants[0], start)
    client = pulsar_client(settings.pulsar_url)
    publisher = Publisher(client, lambda t: topic_for(t, settings.topic_template), chunk_size=200)
    try:
        for message in messages:
            publisher.publish(message)
        for message, _reason in extra:
            publisher.publish(message)
        publisher.drain()
    finally:
        publisher.close()
        client.close()
    assert publisher.stats.sent == len(messages) + len(extra)
    for message in messages:
        if message.kind in (VALID, DUPLICATE):
            reference.add_valid(message.tenant_id, message.payload, message.kind == DUPLICATE)
        else:
            reference.quarantine[(message.tenant_id, REASON_OF_KIND[message.kind])] += 1
    for message, reason in extra:
        reference.quarantine[(message.tenant_id, reason)] += 1
    reference.published += len(messages) + len(extra)


def publish_valid(
    settings: Settings, tenant: str, payloads: list[bytes], reference: Reference
) -> None:
    """Publish hand-made valid events of ``tenant`` and add them to ``reference``."""
    client = pulsar_client(settings.pulsar_url)
    publisher = Publisher(client, lambda t: topic_for(t, settings.topic_template), chunk_size=200)
    try:
        for payload in payloads:
            body = orjson.loads(payload)
            publisher.publish(
                OutgoingMessage(tenant, body["event_id"], payload, VALID, body["event_id"])
            )
        publisher.drain()
    finally:
        publisher.close()
        client.close()
    for payload in payloads:
        reference.add_valid(tenant, payload, duplicate=False)
    reference.published += len(payloads)


def batch_sizes(settings: Settings) -> list[int]:
    """The messages each committed micro-batch read, in batch order."""
    with connect(settings) as conn:
        rows = conn.execute("SELECT input_rows FROM stream_batches ORDER BY batch_id").fetchall()
    return [int(r[0]) for r in rows]


def wait_until_consumed(
    settings: Settings,
    expected_rows: int,
    query: StreamingQuery | None = None,
    timeout_s: float = 240,
) -> None:
    """Block until the stream's committed batches account for every published message."""
    deadline = time.monotonic() + timeout_s
    seen = 0
    while time.monotonic() < deadline:
        if query is not None and not query.isActive:
            raise AssertionError(f"the stream stopped: {query.exception()}")
        with connect(settings) as conn:
            row = conn.execute("SELECT coalesce(sum(input_rows), 0) FROM stream_batches").fetchone()
        seen = int(row[0]) if row else 0
        # PostgreSQL commits a batch before the Delta tables do: wait for the lake too.
        if seen >= expected_rows and lake_caught_up(settings.lake, settings.pg_dsn):
            return
        time.sleep(1)
    raise AssertionError(f"the stream consumed {seen} of {expected_rows} messages")


def assert_end_state(settings: Settings, reference: Reference, tenants: list[str]) -> None:
    """Silver, items, bronze, quarantine and the minute aggregates equal the reference."""
    lake = settings.lake
    silver = (lake / "silver").delta_table().to_pyarrow_table()
    silver_ids: dict[str, list[str]] = {}
    for tenant, event_id in zip(
        silver.column("tenant_id").to_pylist(), silver.column("event_id").to_pylist(), strict=True
    ):
        silver_ids.setdefault(tenant, []).append(event_id)
    for tenant in tenants:
        assert len(silver_ids[tenant]) == len(set(silver_ids[tenant])), "duplicates in silver"
        got = set(silver_ids[tenant])
        missing = reference.silver_ids[tenant] - got
        extra = got - reference.silver_ids[tenant]
        assert not missing and not extra, (
            f"{tenant}: {len(missing)} events missing from silver, {len(extra)} unexpected"
        )
    assert "marketing_campaign" in silver.column_names  # added by schema evolution
    items = (lake / "event_items").delta_table().to_pyarrow_table()
    assert Counter(items.column("tenant_id").to_pylist()) == {
        t: reference.item_rows[t] for t in tenants if reference.item_rows[t]
    }
    bronze = (lake / "bronze").delta_table().to_pyarrow_table()
    assert Counter(bronze.column("tenant_id").to_pylist()) == {
        t: reference.bronze_rows[t] for t in tenants
    }
    quarantine = (lake / "quarantine").delta_table().to_pyarrow_table()
    assert (
        Counter(
            zip(
                quarantine.column("topic_tenant").to_pylist(),
                quarantine.column("reason").to_pylist(),
                strict=True,
            )
        )
        == reference.quarantine
    )
    detail = dict(
        zip(
            quarantine.column("reason").to_pylist(),
            quarantine.column("detail").to_pylist(),
            strict=True,
        )
    )
    assert detail["schema_violation"].startswith(("customer.customer_id", "<root>"))
    with connect(settings) as conn:
        rows = conn.execute(
            "SELECT tenant_id, minute, event_type, events, amount, items "
            "FROM stream_minute_metrics WHERE tenant_id = ANY(%s)",
            (tenants,),
        ).fetchall()
    actual = {(t, m, e): [n, a, i] for t, m, e, n, a, i in rows}
    expected = {
        k: [v[0], Decimal(v[1]).quantize(Decimal("0.01")), v[2]]
        for k, v in reference.minutes.items()
    }
    assert actual == expected


def run_stream_until_consumed(
    spark: SparkSession, settings: Settings, topics: list[str], reference: Reference
) -> None:
    """Run the streaming query until it committed every message published so far, then stop it."""
    query = start_stream(spark, settings, topics=topics, trigger_seconds=1)
    try:
        wait_until_consumed(settings, reference.published, query)
    finally:
        query.stop()
