from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from itertools import islice
from typing import Any

import orjson
import pytest

from generator.catalog import demo_tenant_ids, merchant_profile
from generator.messages import (
    DUPLICATE,
    MALFORMED,
    TENANT_MISMATCH,
    UNSUPPORTED_VERSION,
    VALID,
    FaultShares,
    OutgoingMessage,
    message_stream,
)
from generator.runner import PublishPlan, merge_summaries, split_plan
from generator.sessions import SessionFactory, iso_millis
from include.events import parse_event

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MERCHANTS = [merchant_profile(t) for t in ("acme_shop", "globex_store", "initech_mart")]


def _messages(
    n: int, seed: int = 1, faults: FaultShares | None = None, **kw: Any
) -> list[OutgoingMessage]:
    rng = random.Random(seed)
    return list(
        islice(
            message_stream(
                MERCHANTS, rng, SessionFactory(rng, **kw), faults or FaultShares(), lambda: START
            ),
            n,
        )
    )


def test_every_generated_event_satisfies_the_contract() -> None:
    for message in _messages(3_000, v2_share=0.5, late_share=0.1):
        event = parse_event(message.payload)
        assert event.tenant_id == message.tenant_id
        assert str(event.event_id) == message.event_id


def test_orders_total_their_items_exactly_and_use_the_tenant_currency() -> None:
    orders = 0
    for message in _messages(5_000):
        event = parse_event(message.payload)
        if event.order is not None:
            orders += 1
            assert event.order.total_amount == sum(
                (i.unit_price * i.quantity for i in event.items), Decimal(0)
            )
            merchant = next(m for m in MERCHANTS if m.tenant_id == event.tenant_id)
            assert event.order.currency == merchant.currency
    assert orders > 20


def test_sessions_walk_the_funnel_in_time_order() -> None:
    rng = random.Random(3)
    factory = SessionFactory(rng)
    order = [
        "page_view",
        "product_view",
        "add_to_cart",
        "remove_from_cart",
        "checkout_started",
        "purchase",
        "refund",
    ]
    kinds: Counter[str] = Counter()
    for _ in range(2_000):
        events = factory.session(MERCHANTS[0], START)
        types = [e["event_type"] for e in events]
        kinds.update(types)
        assert types == sorted(types, key=order.index)
        times = [e["event_time"] for e in events]
        assert times == sorted(times) and times[-1] == iso_millis(int(START.timestamp() * 1000))
        assert len({e["session_id"] for e in events}) == 1
        if "refund" in types:
            purchase, refund = (e for e in events if e["event_type"] in ("purchase", "refund"))
            assert purchase["order"]["order_id"] == refund["order"]["order_id"]
    # Each funnel step happens, and fewer shoppers reach each later step.
    assert kinds["page_view"] > kinds["add_to_cart"] > kinds["purchase"] > kinds["refund"] > 0


def test_a_seed_reproduces_the_output_byte_for_byte() -> None:
    assert _messages(500, seed=42) == _messages(500, seed=42)
    assert _messages(500, seed=42) != _messages(500, seed=43)


def test_late_sessions_are_hours_to_days_old() -> None:
    ages = []
    for message in _messages(2_000, late_share=1.0):
        event = parse_event(message.payload)
        ages.append((START - event.event_time).total_seconds())
    # Shifted 1 h to 3 days back, plus the session's own span (at most 40 s a step).
    assert min(ages) >= 3_600 and max(ages) <= 3 * 86_400 + 1_800


def test_faults_are_injected_at_their_shares_and_marked() -> None:
    faults = FaultShares(
        duplicate=0.05, malformed=0.03, unsupported_version=0.02, tenant_mismatch=0.04
    )
    messages = _messages(20_000, faults=faults)
    kinds = Counter(m.kind for m in messages)
    for kind, share in [
        (DUPLICATE, 0.05),
        (MALFORMED, 0.03),
        (UNSUPPORTED_VERSION, 0.02),
        (TENANT_MISMATCH, 0.04),
    ]:
        assert abs(kinds[kind] / len(messages) - share) < 0.01, kind
    seen: dict[str, set[bytes]] = {}
    for m in messages:
        payloads = seen.setdefault(m.tenant_id, set())
        if m.kind == DUPLICATE:
            assert m.payload in payloads  # an exact resend of this tenant's earlier event
        elif m.kind == MALFORMED:
            with pytest.raises(orjson.JSONDecodeError):
                orjson.loads(m.payload)
        elif m.kind == UNSUPPORTED_VERSION:
            assert orjson.loads(m.payload)["schema_version"] == 99
        elif m.kind == TENANT_MISMATCH:
            body = orjson.loads(m.payload)
            assert body["tenant_id"] != m.tenant_id
            parse_event(m.payload)  # valid in itself: only the topic gives it away
        else:
            assert m.kind == VALID
            payloads.add(m.payload)


def test_fault_shares_must_leave_room_for_valid_events() -> None:
    with pytest.raises(ValueError, match="less than 1"):
        FaultShares(duplicate=0.5, malformed=0.5)


def test_demo_tenants_are_valid_and_distinct() -> None:
    ids = demo_tenant_ids(20)
    assert len(set(ids)) == 20 and ids[:3] == ["acme_shop", "globex_store", "initech_mart"]
    for tenant_id in ids:
        assert merchant_profile(tenant_id) == merchant_profile(tenant_id)


def test_split_plan_deals_tenants_and_counts_exactly() -> None:
    merchants = tuple(merchant_profile(t) for t in demo_tenant_ids(5))
    plan = PublishPlan(
        merchants=merchants,
        pulsar_url="pulsar://x:1",
        topic_template="{tenant_id}",
        count=1_001,
        seed=7,
    )
    parts = split_plan(plan, 2)
    assert sum(p.count or 0 for p in parts) == 1_001
    assert sorted(m.tenant_id for p in parts for m in p.merchants) == sorted(demo_tenant_ids(5))
    assert len({p.seed for p in parts}) == 2


def test_merged_summary_adds_counts_and_takes_the_longest_time() -> None:
    a = {
        "sent": 10,
        "failed": 1,
        "resent": 2,
        "unacknowledged": 0,
        "seconds": 2.0,
        "average_payload_bytes": 100,
        "per_tenant": {"t_a": {"valid": 10}},
    }
    b = {
        "sent": 30,
        "failed": 0,
        "resent": 0,
        "unacknowledged": 0,
        "seconds": 4.0,
        "average_payload_bytes": 200,
        "per_tenant": {"t_b": {"valid": 30}},
    }
    merged = merge_summaries([a, b])
    assert merged["sent"] == 40 and merged["failed"] == 1 and merged["events_per_second"] == 10.0
    assert merged["average_payload_bytes"] == 175
    assert merged["per_tenant"] == {"t_a": {"valid": 10}, "t_b": {"valid": 30}}
