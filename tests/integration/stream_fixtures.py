"""Publishing a known mix for the streaming tests, and the reference they compare with."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import islice
from typing import Any

import orjson
import pulsar

from generator.catalog import Merchant, merchant_profile
from generator.messages import DUPLICATE, VALID, FaultShares, OutgoingMessage, message_stream
from generator.publisher import Publisher
from generator.sessions import SessionFactory
from include.db import connect
from include.settings import Settings
from include.tenants import register_tenant, topic_for

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
    published: int = 0

    def add_valid(self, tenant: str, payload: bytes, duplicate: bool) -> None:
        body = orjson.loads(payload)
        self.bronze_rows[tenant] += 1
        if duplicate or body["event_id"] in self.silver_ids[tenant]:
            return
        self.silver_ids[tenant].add(body["event_id"])
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
    start = start or datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
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
    client = pulsar.Client(
        settings.pulsar_url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Warn)
    )
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
