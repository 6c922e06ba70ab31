"""Validation and flattening of raw messages (pure Arrow in, Arrow out)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson
import pyarrow as pa
import pytest

from generator.catalog import merchant_profile
from generator.sessions import SessionFactory
from jobs.stream.partition_read import ARROW_SCHEMA
from jobs.stream.validate import MAX_CLOCK_SKEW, MAX_EVENT_AGE, OUTPUT_SCHEMA, validate_batch

TEMPLATE = "persistent://public/default/{tenant_id}.events"
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
CURRENCIES = {"acme_shop": "USD", "globex_store": "EUR"}


def _purchase(tenant: str = "acme_shop", schema_version: int = 1) -> dict[str, Any]:
    factory = SessionFactory(random.Random(8), v2_share=1.0 if schema_version == 2 else 0.0)
    while True:
        for event in factory.session(merchant_profile(tenant), NOW):
            if event["event_type"] == "purchase":
                return event


def _run(*messages: tuple[str, bytes], max_bytes: int = 10_000) -> list[dict[str, Any]]:
    batch = pa.RecordBatch.from_pydict(
        {
            "topic": [TEMPLATE.format(tenant_id=t) for t, _ in messages],
            "message_id": [f"1:{i}:-1" for i in range(len(messages))],
            "publish_time": [NOW] * len(messages),
            "key": ["k"] * len(messages),
            "properties": [[] for _ in messages],
            "value": [v for _, v in messages],
        },
        schema=ARROW_SCHEMA,
    )
    out = validate_batch(batch, CURRENCIES, TEMPLATE, max_bytes, NOW)
    assert out.schema == OUTPUT_SCHEMA
    rows: list[dict[str, Any]] = out.to_pylist()
    return rows


def test_a_valid_event_is_flattened_with_its_items() -> None:
    event = _purchase()
    (row,) = _run(("acme_shop", orjson.dumps(event)))
    # Expected straight from the payload as generated, not from the event models.
    assert row["status"] == "valid" and row["reason"] is None
    assert row["event_id"] == event["event_id"]
    assert row["customer_customer_id"] == event["customer"]["customer_id"]
    assert row["order_total_amount"] == Decimal(str(event["order"]["total_amount"]))
    assert row["event_time"] == datetime.fromisoformat(event["event_time"])
    assert row["device_ip"] == event["device"]["ip"]
    assert dict(row["ml_context_model_scores"]) == event["ml_context"]["model_scores"]
    assert event["items"]
    assert [(i["line_number"], i["sku"], i["quantity"], i["unit_price"]) for i in row["items"]] == [
        (n, i["sku"], i["quantity"], Decimal(str(i["unit_price"])))
        for n, i in enumerate(event["items"], start=1)
    ]
    assert row["marketing_campaign"] is None


def test_version_2_fills_the_marketing_columns() -> None:
    event = _purchase(schema_version=2)
    (row,) = _run(("acme_shop", orjson.dumps(event)))
    assert row["status"] == "valid"
    assert row["marketing_campaign"] == event["marketing"]["campaign"]


@pytest.mark.parametrize(
    ("payload", "reason", "detail_start"),
    [
        (b"{not json", "invalid_json", "Invalid JSON"),
        (b"\xff\xfe", "invalid_json", "Invalid JSON"),
        (b"[1]", "schema_violation", "<root>"),
        (
            orjson.dumps(_purchase() | {"schema_version": 7}),
            "unsupported_schema_version",
            "Input tag",
        ),
        (orjson.dumps(_purchase() | {"customer": {}}), "schema_violation", "customer.customer_id"),
        (
            orjson.dumps(_purchase() | {"items": [{"sku": "x", "quantity": 0, "unit_price": 1}]}),
            "schema_violation",
            "items.0.quantity",
        ),
        (
            orjson.dumps(_purchase() | {"tenant_id": "globex_store"}),
            "tenant_mismatch",
            "payload tenant",
        ),
        (
            orjson.dumps(_purchase() | {"order": dict(_purchase()["order"], currency="EUR")}),
            "currency_mismatch",
            "order currency EUR",
        ),
        (b" " * 10_001, "payload_too_large", "10001 bytes"),
    ],
)
def test_bad_messages_are_quarantined_with_their_reason(
    payload: bytes, reason: str, detail_start: str
) -> None:
    (row,) = _run(("acme_shop", payload))
    assert (row["status"], row["reason"]) == ("quarantined", reason)
    assert str(row["detail"]).startswith(detail_start), row["detail"]
    assert row["value"] == payload and row["event_id"] is None and row["items"] is None


def test_a_topic_of_no_registered_tenant_is_quarantined() -> None:
    (row,) = _run(("stranger_shop", orjson.dumps(_purchase("stranger_shop"))))
    assert row["reason"] == "unknown_tenant"


def test_money_stays_exact_through_flattening() -> None:
    event = _purchase()
    event["order"] = dict(event["order"], total_amount=0.3)
    (row,) = _run(("acme_shop", orjson.dumps(event)))
    assert row["order_total_amount"] == Decimal("0.30")


def _with(**fields: Any) -> bytes:
    return orjson.dumps(_purchase() | fields)


def _item(**fields: Any) -> bytes:
    return _with(items=[dict(_purchase()["items"][0], **fields)])


@pytest.mark.parametrize(
    ("payload", "reason", "detail_start"),
    [
        # Well-formed JSON, but nested far deeper than any event: a contract violation.
        (b"[" * 10_000 + b"]" * 10_000, "schema_violation", "<root>: nested deeper"),
        (
            _with(customer={"customer_id": "c", "segment": "X"}).replace(
                b'"X"', b"[" * 5_000 + b"]" * 5_000
            ),
            "schema_violation",
            "<root>: nested deeper",
        ),
        # The JSON types of the contract, not the lax coercions of the model.
        (_item(quantity="3"), "schema_violation", "items.0.quantity"),
        (_item(quantity=True), "schema_violation", "items.0.quantity"),
        (_with(processing_flags={"pii_contains": "yes"}), "schema_violation", "processing_flags"),
        (_with(event_time=1_764_072_000), "schema_violation", "event_time"),
        (_with(ml_context={"model_scores": {"fraud": "0.5"}}), "schema_violation", "ml_context"),
        # Values no downstream store can hold.
        (_with(session_id="s\x00"), "schema_violation", "session_id: text contains U+0000"),
        (_item(sku="SKU\x00"), "schema_violation", "items.0.sku: text contains U+0000"),
        (
            _with(ml_context={"model_scores": {"fr\x00ud": 0.5}}),
            "schema_violation",
            "ml_context.model_scores.fr\x00ud: text contains U+0000",
        ),
        (
            _with(ml_context={"model_scores": {"fraud": 1}}).replace(b":1}", b":1e400}"),
            "schema_violation",
            "ml_context.model_scores.fraud: Input should be a finite number",
        ),
        (
            _with(ml_context={"model_scores": {"fraud": 1}}).replace(b":1}", b":NaN}"),
            "invalid_json",
            "Invalid JSON",
        ),
        # Event times no clock should produce, relative to the publish time (NOW).
        (_with(event_time="1970-01-01T00:00:00Z"), "schema_violation", "event_time: 1970-01-01"),
        (_with(event_time="2026-11-26T12:00:01Z"), "schema_violation", "event_time: 2026-11-26"),
        (
            _with(event_time="0001-01-01T00:00:00+05:00"),
            "schema_violation",
            "event_time: 0001-01-01T00:00:00+05:00 is out of range in UTC",
        ),
        (
            _with(lineage={"source": "x", "produced_at": "9999-12-31T23:59:59-05:00"}),
            "schema_violation",
            "lineage.produced_at: 9999-12-31T23:59:59-05:00 is out of range in UTC",
        ),
    ],
    ids=[
        "nested-10000",
        "nested-in-a-field",
        "quantity-as-string",
        "quantity-as-bool",
        "flag-as-string",
        "time-as-number",
        "score-as-string",
        "nul-in-text",
        "nul-in-item-text",
        "nul-in-map-key",
        "infinite-score",
        "nan-literal",
        "time-far-past",
        "time-future",
        "time-overflows-utc",
        "produced-at-overflows-utc",
    ],
)
def test_hostile_content_is_quarantined_never_raised(
    payload: bytes, reason: str, detail_start: str
) -> None:
    (row,) = _run(("acme_shop", payload), max_bytes=len(payload))
    assert (row["status"], row["reason"]) == ("quarantined", reason)
    assert str(row["detail"]).startswith(detail_start), row["detail"]
    assert row["value"] == payload and row["event_id"] is None


@pytest.mark.parametrize(
    ("offset", "valid"),
    [
        (-MAX_EVENT_AGE, True),  # the oldest plausible time
        (-MAX_EVENT_AGE - timedelta(microseconds=1), False),
        (MAX_CLOCK_SKEW, True),  # the latest
        (MAX_CLOCK_SKEW + timedelta(microseconds=1), False),
        (timedelta(0), True),
    ],
)
def test_event_times_are_plausible_within_a_window_around_the_publish_time(
    offset: timedelta, valid: bool
) -> None:
    event_time = (NOW + offset).astimezone(timezone(timedelta(hours=-3)))
    (row,) = _run(("acme_shop", _with(event_time=event_time.isoformat())))
    assert (row["status"], row["reason"]) == (
        ("valid", None) if valid else ("quarantined", "schema_violation")
    )
    if valid:
        assert row["event_time"] == NOW + offset
    else:
        assert str(row["detail"]).startswith(f"event_time: {event_time.isoformat()} is more than")


def test_an_escaped_backslash_before_u0000_is_text_not_nul() -> None:
    (row,) = _run(("acme_shop", _with(session_id="\\u0000")))
    assert row["status"] == "valid" and row["session_id"] == "\\u0000"


def test_sql_and_markup_in_free_text_are_data() -> None:
    hostile = "'; DROP TABLE events; --<script>alert(1)</script>"
    event = _purchase()
    event["session_id"] = hostile
    event["customer"] = dict(event["customer"], segment=hostile)
    event["items"] = [dict(event["items"][0], sku=hostile)]
    event["order"] = dict(event["order"], total_amount=event["items"][0]["unit_price"] * 1)
    (row,) = _run(("acme_shop", orjson.dumps(event)))
    assert row["status"] == "valid", row["detail"]
    assert row["session_id"] == row["customer_segment"] == hostile
    assert row["items"][0]["sku"] == hostile


def test_a_customer_id_an_erasure_request_could_not_name_is_quarantined() -> None:
    # The API erases by customer id and accepts only CUSTOMER_ID_PATTERN: an event whose
    # customer it could never erase must not be stored.
    refused = []
    for customer_id in ("'; DROP TABLE events; --", "a b", "_leading", "x" * 201, "ü"):
        event = _purchase()
        event["customer"] = dict(event["customer"], customer_id=customer_id)
        (row,) = _run(("acme_shop", orjson.dumps(event)))
        refused.append((row["status"], row["reason"], row["detail"].split(":")[0]))
    assert refused == [("quarantined", "schema_violation", "customer.customer_id")] * 5
    event = _purchase()
    event["customer"] = dict(event["customer"], customer_id="Cust-42.a_b@shop:eu+1")
    (row,) = _run(("acme_shop", orjson.dumps(event)))
    assert row["status"] == "valid" and row["customer_customer_id"] == "Cust-42.a_b@shop:eu+1"


def test_a_boolean_schema_version_is_quarantined_even_where_true_equals_1() -> None:
    flagged = _purchase() | {"processing_flags": {"pii_contains": True, "gdpr_consent": True}}
    as_bool, as_int = dict(flagged, schema_version=True), dict(flagged, schema_version=1)
    bad, good = _run(("acme_shop", orjson.dumps(as_bool)), ("acme_shop", orjson.dumps(as_int)))
    assert (bad["status"], bad["reason"]) == ("quarantined", "schema_violation")
    assert bad["detail"].startswith("schema_version: must be a JSON integer")
    assert (good["status"], good["reason"]) == ("valid", None)


def test_money_as_a_json_string_is_the_same_exact_value() -> None:
    event = _purchase()
    as_string = dict(event, order=dict(event["order"], total_amount="12.10"))
    (row,) = _run(("acme_shop", orjson.dumps(as_string)))
    assert row["status"] == "valid" and row["order_total_amount"] == Decimal("12.10")
