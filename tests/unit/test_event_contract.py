from __future__ import annotations

import random
from datetime import UTC, datetime
from decimal import Decimal

import orjson
import pytest
from pydantic import ValidationError

from generator.catalog import merchant_profile
from generator.sessions import SessionFactory
from include.events import EventV1, EventV2, parse_event


def _sample(schema_version: int = 1) -> dict[str, object]:
    rng = random.Random(5)
    factory = SessionFactory(rng, v2_share=1.0 if schema_version == 2 else 0.0)
    while True:
        events = factory.session(merchant_profile("acme_shop"), datetime(2026, 1, 1, tzinfo=UTC))
        purchases = [e for e in events if e["event_type"] == "purchase"]
        if purchases:
            return purchases[0]


def test_a_v1_event_round_trips_through_json() -> None:
    payload = orjson.dumps(_sample(1))
    event = parse_event(payload)
    assert isinstance(event, EventV1) and not isinstance(event, EventV2)
    assert parse_event(event.model_dump_json()) == event


def test_v1_and_v2_validate_side_by_side() -> None:
    v1 = parse_event(orjson.dumps(_sample(1)))
    v2 = parse_event(orjson.dumps(_sample(2)))
    assert v1.schema_version == 1
    assert isinstance(v2, EventV2) and v2.marketing is not None


def test_marketing_is_refused_in_version_1() -> None:
    event = _sample(1) | {"marketing": {"campaign": "x"}}
    with pytest.raises(ValidationError, match="marketing"):
        parse_event(orjson.dumps(event))


@pytest.mark.parametrize("version", [0, 3, 99, "1"])
def test_unknown_schema_versions_are_refused(version: object) -> None:
    with pytest.raises(ValidationError, match="schema_version"):
        parse_event(orjson.dumps(_sample(1) | {"schema_version": version}))


def test_customer_id_is_required() -> None:
    event = _sample(1)
    event["customer"] = {"email": "a@b.c"}
    with pytest.raises(ValidationError, match=r"customer\.customer_id"):
        parse_event(orjson.dumps(event))


def test_purchase_needs_an_order() -> None:
    with pytest.raises(ValidationError, match="order is required"):
        parse_event(orjson.dumps(_sample(1) | {"order": None}))


def test_event_time_needs_a_time_zone() -> None:
    with pytest.raises(ValidationError, match="event_time"):
        parse_event(orjson.dumps(_sample(1) | {"event_time": "2026-01-01T10:00:00"}))


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError, match="surprise"):
        parse_event(orjson.dumps(_sample(1) | {"surprise": 1}))


def test_money_stays_exact() -> None:
    event = _sample(1)
    event["order"] = dict(event["order"], total_amount=0.1)  # type: ignore[call-overload]
    parsed = parse_event(orjson.dumps(event))
    assert parsed.order is not None and parsed.order.total_amount == Decimal("0.10")
    assert orjson.loads(parsed.model_dump_json())["order"]["total_amount"] == 0.1


def test_tenant_id_in_payload_is_validated() -> None:
    with pytest.raises(ValidationError, match="tenant"):
        parse_event(orjson.dumps(_sample(1) | {"tenant_id": "Bad-Tenant"}))
