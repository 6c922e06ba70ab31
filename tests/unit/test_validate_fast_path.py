"""The msgspec fast path of ``validate_batch`` against the Pydantic-only path it replaces.

Oracle: ``tests.validate_reference.validate_batch_pydantic`` (the old row loop and Arrow
building, over the unchanged ``_check``). Every input here must come out as an equal
RecordBatch from both: the bad-message catalogue, the cases of ``test_validate.py``, 40,000
generated events of both schema versions, and a seeded fuzz of mutated events
(``LAKEHOUSE_FUZZ_CASES`` and ``LAKEHOUSE_FUZZ_SEED`` make a longer or another run). Times are
placed relative to a fixed publish time, so nothing depends on today's date.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, get_args

import msgspec
import orjson
import pyarrow as pa
import pytest

from generator.catalog import merchant_profile
from generator.sessions import SessionFactory
from include.events import fast, models
from jobs.stream.partition_read import ARROW_SCHEMA
from jobs.stream.validate import (
    COLUMNS,
    MAX_CLOCK_SKEW,
    MAX_EVENT_AGE,
    OUTPUT_SCHEMA,
    validate_batch,
)
from tests.integration.bad_messages import bad_messages, good_messages, plain_valid
from tests.unit import test_validate
from tests.validate_reference import validate_batch_pydantic

TEMPLATE = "persistent://public/default/{tenant_id}.events"
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
INGEST = NOW + timedelta(seconds=30)
MAX_BYTES = 262_144
# "bad_currency_shop" is registered with a currency that is no valid code: no order can match.
CURRENCIES = {
    "acme_shop": "USD",
    "globex_store": "EUR",
    "initech_mart": "GBP",
    "bad_currency_shop": "usd",
}
GENERATED = 40_000
FUZZ_CASES = int(os.environ.get("LAKEHOUSE_FUZZ_CASES", "12000"))
FUZZ_SEED = int(os.environ.get("LAKEHOUSE_FUZZ_SEED", "20261125"))

Message = tuple[str, bytes | None]


def _topic(tenant: str) -> str:
    return TEMPLATE.format(tenant_id=tenant)


def _batch(messages: Sequence[Message], published: Sequence[datetime | None]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(
        {
            "topic": [topic for topic, _ in messages],
            "message_id": [f"7:{i}:-1" for i in range(len(messages))],
            "publish_time": list(published),
            "key": [None if i % 7 == 0 else f"k{i}" for i in range(len(messages))],
            "properties": [[] for _ in messages],
            "value": [value for _, value in messages],
        },
        schema=ARROW_SCHEMA,
    )


def _assert_same(
    messages: Sequence[Message],
    max_bytes: int = MAX_BYTES,
    published: Sequence[datetime | None] | None = None,
) -> pa.RecordBatch:
    """Both paths on one batch; on any difference, fail showing the first differing rows."""
    batch = _batch(messages, published or [NOW] * len(messages))
    old = validate_batch_pydantic(batch, CURRENCIES, TEMPLATE, max_bytes, INGEST)
    new = validate_batch(batch, CURRENCIES, TEMPLATE, max_bytes, INGEST)
    assert new.schema == OUTPUT_SCHEMA
    if not new.equals(old):
        shown = []
        for i in range(batch.num_rows):
            if not new.slice(i, 1).equals(old.slice(i, 1)):
                shown.append(
                    f"payload {messages[i][1]!r}\n  old {old.slice(i, 1).to_pylist()}\n"
                    f"  new {new.slice(i, 1).to_pylist()}"
                )
            if len(shown) == 5:
                break
        pytest.fail("fast path and Pydantic path differ:\n" + "\n".join(shown or ["(schema)"]))
    # Equal values, and the same bytes on the wire (buffers under nulls, offsets, validity).
    assert _ipc(new) == _ipc(old)
    return new


def _ipc(batch: pa.RecordBatch) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    data: bytes = sink.getvalue().to_pybytes()
    return data


def _generated(count: int, seed: int) -> list[Message]:
    """``count`` generator events over four tenants, both schema versions, some late."""
    factory = SessionFactory(random.Random(seed), v2_share=0.5, late_share=0.05)
    tenants = ["acme_shop", "globex_store", "initech_mart"]
    merchants = [merchant_profile(t, CURRENCIES[t]) for t in tenants]
    out: list[Message] = []
    while len(out) < count:
        merchant = merchants[len(out) % len(merchants)]
        out += [
            (_topic(merchant.tenant_id), orjson.dumps(e)) for e in factory.session(merchant, NOW)
        ]
    return out[:count]


# --- the catalogue and the cases of test_validate.py ----------------------------------------


def _test_validate_payloads() -> Iterator[bytes]:
    tests = [
        test_validate.test_bad_messages_are_quarantined_with_their_reason,
        test_validate.test_hostile_content_is_quarantined_never_raised,
    ]
    for test in tests:
        for mark in getattr(test, "pytestmark", []):
            if mark.name == "parametrize":
                yield from (params[0] for params in mark.args[1])
    purchase = test_validate._purchase
    flagged = purchase() | {"processing_flags": {"pii_contains": True, "gdpr_consent": True}}
    yield orjson.dumps(dict(flagged, schema_version=True))
    yield orjson.dumps(dict(flagged, schema_version=1))
    yield orjson.dumps(dict(purchase(), order=dict(purchase()["order"], total_amount="12.10")))
    yield orjson.dumps(dict(purchase(), order=dict(purchase()["order"], total_amount=0.3)))
    yield test_validate._with(session_id="\\u0000")
    for customer_id in (
        "'; DROP TABLE events; --",
        "a b",
        "_leading",
        "x" * 201,
        "ü",
        "C-4.a@s:e+1",
    ):
        yield test_validate._with(customer=dict(purchase()["customer"], customer_id=customer_id))
    for offset in (MAX_EVENT_AGE, MAX_CLOCK_SKEW):
        for sign in (-1, 1):
            for nudge in (timedelta(0), timedelta(microseconds=1), -timedelta(microseconds=1)):
                moment = NOW + sign * offset + nudge
                yield test_validate._with(
                    event_time=moment.astimezone(timezone(timedelta(hours=-3))).isoformat()
                )
    yield orjson.dumps(purchase(schema_version=2))
    yield orjson.dumps(purchase("globex_store"))


def test_the_bad_message_catalogue_comes_out_the_same() -> None:
    bad = bad_messages("acme_shop", "globex_store", "USD", NOW, MAX_BYTES)
    good = good_messages("acme_shop", "USD", NOW, MAX_BYTES)
    messages: list[Message] = [(_topic("acme_shop"), m.payload) for m in bad]
    messages += [(_topic("acme_shop"), m.payload) for m in good]
    messages.append((_topic("acme_shop"), plain_valid("plain", "acme_shop", "USD", NOW).payload))
    messages += [(_topic("acme_shop"), None), ("not-a-template-topic", b"{}")]
    messages.append((_topic("stranger_shop"), bad[0].payload))
    out = _assert_same(messages)
    statuses = out.column("status").to_pylist()
    assert statuses.count("valid") == len(good) + 1


@pytest.mark.parametrize("max_bytes", [10_000, 1 << 21])
def test_the_cases_of_test_validate_come_out_the_same(max_bytes: int) -> None:
    payloads = list(_test_validate_payloads())
    _assert_same([(_topic("acme_shop"), p) for p in payloads], max_bytes=max_bytes)
    # The same payloads on another tenant's topic (mismatches) and with no publish time.
    _assert_same(
        [(_topic("globex_store"), p) for p in payloads],
        max_bytes=max_bytes,
        published=[None] * len(payloads),
    )


# --- generated events -------------------------------------------------------------------------


def test_40000_generated_events_come_out_the_same() -> None:
    messages = _generated(GENERATED, seed=14)
    for start in range(0, len(messages), 10_000):
        out = _assert_same(messages[start : start + 10_000])
        assert set(out.column("status").to_pylist()) == {"valid"}
    versions = {orjson.loads(v or b"{}")["schema_version"] for _, v in messages[:2_000]}
    assert versions == {1, 2}


def test_the_fast_path_accepts_every_generated_event() -> None:
    # Not a silent fallback: the fast path itself stores all of them.
    messages = _generated(5_000, seed=15)
    declined = [
        value
        for topic, value in messages
        if value is None
        or fast.accept(
            value,
            topic.split("/")[-1].removesuffix(".events"),
            CURRENCIES[topic.split("/")[-1].removesuffix(".events")],
            NOW - MAX_EVENT_AGE,
            NOW + MAX_CLOCK_SKEW,
        )
        is None
    ]
    assert declined == []


def test_the_structs_mirror_the_contract() -> None:
    for name, struct in fast.STRUCTS.items():
        model = getattr(models, name)
        fields = msgspec.structs.fields(struct)
        expected = {n: f for n, f in model.model_fields.items() if n != "schema_version"}
        assert {f.name for f in fields} == set(expected), name
        assert {f.name for f in fields if f.required} == {
            n for n, f in expected.items() if f.is_required()
        }, name
    assert set(get_args(fast.DeviceType)) == set(
        get_args(get_args(models.Device.model_fields["type"].annotation)[0])
    )
    assert tuple(c.name for c in COLUMNS) == fast.FLAT_NAMES


# --- fuzz -------------------------------------------------------------------------------------

_TIMES = [
    "2026-11-25T12:00:00Z",
    "2026-11-25T11:00:00.123456Z",
    "2026-11-25T11:00:00.1234567Z",  # 7 digits: Pydantic truncates, msgspec would round
    "2026-11-25T11:00:00.9999999Z",
    "2026-11-25T11:00:00.000000Z",
    "2026-11-25T11:00:00.5+05:30",
    "2026-11-25T11:00:00-23:59",
    "2026-11-25T11:00:00+24:00",
    "2026-11-25T11:00:00-00:00",
    "2026-11-25T11:00:00+0530",
    "2026-11-25T11:00:00+05",
    "2026-11-25T11:00:00",
    "2026-11-25 11:00:00Z",
    "2026-11-25t11:00:00z",
    "2026-11-25T11:00Z",
    "2026-11-25T11:00:00,5Z",
    "2026-11-25T11:00:60Z",
    "2026-11-25T24:00:00Z",
    "2026-02-30T00:00:00Z",
    "2024-02-29T00:00:00Z",
    "2026-13-01T00:00:00Z",
    "2026-11-25T11:00:00Z\n",
    "20261125T110000Z",
    "1764072000",
    "\u0662\u0660\u0662\u0666-11-25T11:00:00Z",  # Arabic-Indic digits
    "0001-01-01T00:00:00+05:00",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59-05:00",
    "9999-12-31T23:59:59Z",
    "1970-01-01T00:00:00Z",
    "",
]
_UUIDS = [
    "00000000-0000-0000-0000-000000000000",
    "ffffffff-ffff-ffff-ffff-ffffffffffff",
    "6F1C3A52-7D0E-4B8E-9A55-0D6C1B2B7E11",
    "6f1c3a527d0e4b8e9a550d6c1b2b7e11",
    "{6f1c3a52-7d0e-4b8e-9a55-0d6c1b2b7e11}",
    "urn:uuid:6f1c3a52-7d0e-4b8e-9a55-0d6c1b2b7e11",
    "6f1c3a52-7d0e-4b8e-9a55-0d6c1b2b7e11\n",
    "6f1c3a52-7d0e-4b8e-9a55-0d6c1b2b7e1",
    "6f1c3a52-7d0e-4b8e-9a55-0d6c1b2b7e1g",
]
_CUSTOMER_IDS = ["a", "_a", "a" * 200, "a" * 201, "a\n", "ab\n", "a b", "a.b@c:d+e-f", "\u0661"]
_EMAILS = [
    "a@b",
    "a@b\n",
    "a @b",
    "a@b@c",
    "a\u00a0@b",
    "a\u2003@b",
    "a\x1c@b",
    "a\x85@b",
    "a\u180e@b",
    "a\u200b@b",
    "a\u3000@b",
    "x" * 314 + "@b.cd",
    "x" * 315 + "@b.cd",
    "@b",
    "a@",
]
_SPECIAL: dict[str, list[Any]] = {
    "event_id": _UUIDS,
    "event_time": _TIMES,
    "produced_at": _TIMES,
    "customer_id": _CUSTOMER_IDS,
    "email": _EMAILS,
    "country": ["DE", "de", "DE\n", "DEU", "D", "\u00c4\u00d6", "\uff24\uff25"],
    "currency": ["USD", "EUR", "GBP", "usd", "USD\n", "US", "\uff35\uff33\uff24"],
    "tenant_id": ["acme_shop", "globex_store", "acme_shop\n", "ACME_SHOP", "nobody_shop", "ac"],
    "type": ["desktop", "mobile", "tablet", "other", "Mobile", "mobile\n", "tv", ""],
    "event_type": [*models.EventType, "Purchase", "purchase\n", "click"],
    "quantity": [0, 1, 10_000, 10_001, -1, 1.0, 2.5, "2", True, None, 10**30],
    "pii_contains": [True, False, 0, 1, "true", None],
    "gdpr_consent": [True, False, 0, 1, "true", None],
    "schema_version": [1, 2, True, False, 1.0, 2.0, "1", 3, 0, None],
    "ip": ["", "x" * 45, "x" * 46, "::1", None],
}
_MONEY: list[Any] = [
    0,
    0.0,
    -0.0,
    -1,
    0.01,
    0.005,
    12.345,
    0.1 + 0.2,
    1e-7,
    1e15,
    999_999_999_999_999.9,
    9_999_999_999_999.99,
    99_999_999_999_999,
    9_999_999_999_999_999,
    2**53 + 1,
    10**17,
    1e300,
    "12.10",
    "1e2",
    " 5",
    True,
    None,
    [],
]
_STRINGS: list[Any] = [
    "",
    "x",
    "x" * 200,
    "x" * 201,
    "\u00e9" * 200,
    "\U0001f600" * 201,
    "a\n",
    "\n",
    " ",
    "a\x00b",
    "\x1f",
    "\u2028",
    "\\u0000",
    "'; DROP TABLE events; --",
    None,
    0,
    1.5,
    True,
    [],
    {},
    ["x"],
    {"a": 1},
]
_SCORES: list[Any] = [
    {},
    {"": 0.0},
    {"fraud": 1e308},
    {"fraud": 5e-324},
    {"fraud": -0.0},
    {"fraud": 10**30},
    {"fraud": 3},
    {"fraud": "0.5"},
    {"fraud": None},
    {"fraud": True},
    {"fraud": [0.5]},
    {"\u00fc\U0001f600": 0.25},
    None,
]
_BYTE_EDITS: list[Callable[[bytes, random.Random], bytes]] = [
    lambda b, r: b"\xef\xbb\xbf" + b,
    lambda b, r: b" \n\t\r" + b + b"\r\n\t ",
    lambda b, r: b + b"\x0c",
    lambda b, r: b + b"\xa0",
    lambda b, r: b + b"\n",
    lambda b, r: b[: r.randrange(len(b))],
    lambda b, r: b[:-1] + b',"tenant_id":"globex_store"}',
    lambda b, r: b[:-1] + b',"tenant_id":"acme_shop"}',
    lambda b, r: b[:-1] + b',"schema_version":true}',
    lambda b, r: b[:-1] + b',"schema_version":1}',
    lambda b, r: b[:-1] + b',"event_type":"purchase"}',
    lambda b, r: b"{" + b'"event_type":"purchase",' + b[1:],
    lambda b, r: b.replace(b'"tenant_id"', b'"tenant\\u005fid"', 1),
    lambda b, r: b.replace(b'"session_id":"', b'"session_id":"\\u0041', 1),
    lambda b, r: b.replace(b'"session_id":"', b'"session_id":"\\u0000', 1),
    lambda b, r: b.replace(b'"session_id":"', b'"session_id":"\\ud800', 1),
    lambda b, r: b.replace(b'"session_id":"', b'"session_id":"\\ud83d\\ude00', 1),
    lambda b, r: b.replace(b'"session_id":"', b'"session_id":"\x01', 1),
    lambda b, r: b.replace(b'"session_id":"', b'"session_id":"\xff', 1),
    lambda b, r: b.replace(b'"session_id":"', b'"session_id":"\\/', 1),
    lambda b, r: b.replace(b'"churn":', b'"churn":NaN,"x":', 1),
    lambda b, r: b.replace(b'"churn":', b'"churn":Infinity,"x":', 1),
    lambda b, r: b.replace(b'"churn":', b'"churn":1e400,"x":', 1),
    lambda b, r: b.replace(b'"churn":', b'"churn":-1e400,"x":', 1),
    lambda b, r: b.replace(b'"churn":', b'"churn":01,"x":', 1),
    lambda b, r: b.replace(b'"churn":', b'"churn":1.0000000000000000000000001e0,"churn2":', 1),
    lambda b, r: b.replace(b'"quantity":1', b'"quantity":1.0', 1),
    lambda b, r: b.replace(b'"quantity":1', b'"quantity":1e0', 1),
    lambda b, r: b.replace(b'"quantity":1', b'"quantity":-0', 1),
    lambda b, r: b.replace(
        b'"unit_price":', b'"unit_price":0.1000000000000000055511151231257827', 1
    ),
    lambda b, r: b.replace(b'"unit_price":', b'"unit_price":12.1000000000000000001,"x":', 1),
    lambda b, r: b.replace(b'"unit_price":', b'"unit_price":1E+2,"x":', 1),
    lambda b, r: b.replace(b'"total_amount":', b'"total_amount":1e1,"x":', 1),
    lambda b, r: b.replace(b'"total_amount":', b'"total_amount":-0.0,"x":', 1),
    lambda b, r: b.replace(b":", b" : ", 3),
    lambda b, r: b.replace(b'"schema_version":', b'"schema_version":' + b"[" * 3000, 1),
]


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(node, dict):
        for key, child in node.items():
            yield (*prefix, key)
            yield from _paths(child, (*prefix, key))
    elif isinstance(node, list):
        for n, child in enumerate(node):
            yield (*prefix, n)
            yield from _paths(child, (*prefix, n))


def _parent(event: Any, path: tuple[Any, ...]) -> Any:
    for part in path[:-1]:
        event = event[part]
    return event


def _mutate(event: dict[str, Any], rng: random.Random) -> None:
    """One random edit of ``event``, in place."""
    paths = list(_paths(event))
    if not paths:
        event["schema_version"] = 1
        return
    path = rng.choice(paths)
    parent, key = _parent(event, path), path[-1]
    name = key if isinstance(key, str) else ""
    kind = rng.randrange(10)
    if kind == 0 and isinstance(parent, dict):
        del parent[key]
    elif kind == 1 and isinstance(parent, dict):
        parent[rng.choice(["extra", "discount", "marketing", "order", "items", "device"])] = (
            rng.choice(_STRINGS)
        )
    elif kind == 2:
        current = parent[key]
        if isinstance(current, str):
            parent[key] = rng.choice([current + "\n", current.upper(), current + " ", current * 40])
        else:
            parent[key] = rng.choice(_STRINGS)
    elif kind == 3:
        moment = NOW + rng.choice([-MAX_EVENT_AGE, MAX_CLOCK_SKEW, timedelta(0)])
        moment += timedelta(microseconds=rng.choice([-1, 0, 1, 500_000]))
        zone = timezone(timedelta(minutes=rng.choice([0, -180, 330, 1439, -1439])))
        text = moment.astimezone(zone).isoformat()
        event[rng.choice(["event_time", "event_time", "lineage"])] = (
            text if rng.random() < 0.8 else {"source": "x", "produced_at": text}
        )
    elif kind == 4:
        amount = rng.choice([*_MONEY, rng.randrange(10**6) / 100, rng.randrange(10**6) / 1000])
        order, items = event.get("order"), event.get("items")
        if isinstance(order, dict) and rng.random() < 0.5:
            order["total_amount"] = amount
        elif isinstance(items, list) and items and isinstance(items[0], dict):
            items[0]["unit_price"] = amount
    elif kind == 5:
        event["event_type"] = rng.choice(_SPECIAL["event_type"])
        if rng.random() < 0.3:
            event["order"] = None
    elif kind == 6:
        line = {"sku": "S", "quantity": 1, "unit_price": 1.5}
        event["items"] = rng.choice([[], None, [line] * 500, [line] * 501, [{}], line])
    elif kind == 7:
        event["ml_context"] = rng.choice([None, {}, {"model_scores": rng.choice(_SCORES)}])
    elif kind == 8 and name in _SPECIAL:
        parent[key] = rng.choice(_SPECIAL[name])
    else:
        event["schema_version"] = rng.choice(_SPECIAL["schema_version"])
        if rng.random() < 0.5:
            event["marketing"] = rng.choice([None, {}, {"campaign": "c"}, {"campaign": ""}])


def _fuzzed(count: int, seed: int) -> list[Message]:
    rng = random.Random(seed)
    bases = [orjson.loads(v or b"") for _, v in _generated(600, seed)]
    bases += [orjson.loads(m.payload) for m in good_messages("acme_shop", "USD", NOW, MAX_BYTES)]
    out: list[Message] = []
    for _ in range(count):
        event = orjson.loads(orjson.dumps(rng.choice(bases)))
        for _ in range(rng.choice([1, 1, 2, 3])):
            _mutate(event, rng)
        # The standard library's encoder: it writes any integer, and escapes when asked.
        text = json.dumps(event, ensure_ascii=rng.random() < 0.1, separators=(",", ":"))
        payload = text.encode()
        if rng.random() < 0.2:
            payload = rng.choice(_BYTE_EDITS)(payload, rng)
        tenant = event.get("tenant_id") if isinstance(event.get("tenant_id"), str) else "acme_shop"
        if tenant not in CURRENCIES or rng.random() < 0.05:
            tenant = rng.choice([*CURRENCIES, "stranger_shop"])
        out.append((_topic(tenant), payload))
    return out


def test_fuzzed_messages_come_out_the_same() -> None:
    messages = _fuzzed(FUZZ_CASES, FUZZ_SEED)
    rng = random.Random(FUZZ_SEED)
    for start in range(0, len(messages), 4_000):
        chunk = messages[start : start + 4_000]
        published = [None if rng.random() < 0.05 else NOW for _ in chunk]
        _assert_same(chunk, published=published)
