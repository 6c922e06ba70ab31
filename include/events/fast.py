"""A fast decoder of the event contract for messages that are plainly well-formed (msgspec).

The Pydantic models (``include.events.models``) stay the contract and the only source of
quarantine reasons. The Structs here mirror them field for field (``tests/unit/
test_validate_fast_path.py`` holds the two together) and may only ever be *stricter*:
``accept`` returns a message's flat row only where it is sure the Pydantic path would store
exactly that row; on anything else, a decode error, a value it cannot decide the same way,
a quarantine, it returns None and the caller asks Pydantic. So where the two disagree, the
cost is speed, never a different row.

Where the fast path is stricter than the contract, on purpose (each such message takes the
Pydantic path, which accepts or quarantines it as before):

- any ``\\u`` escape in the payload: it is how JSON carries NUL (which no store keeps) and lone
  surrogates, and it could spell a key another way;
- times other than ``YYYY-MM-DDTHH:MM:SS[.ffffff](Z|+HH:MM|-HH:MM)``, calendar-invalid dates,
  years 1 and 9999 (UTC may leave the calendar), 7 or more fractional digits (Pydantic
  truncates them; msgspec would round);
- money that is a JSON string, negative zero, 16 or more whole digits, or whose shortest float
  text has more than two decimals (Pydantic reads a JSON number as a float, then as a decimal
  of its shortest text: this path does the same arithmetic on that text);
- an ``event_id`` that is not a lowercase hyphenated UUID (its canonical text).

Regex constraints are rewritten from ``^...$`` to ``\\A(?:...)\\Z``: msgspec runs Python's
``re.search``, where ``$`` also matches before a trailing newline; the contract's
(Rust) engine does not. Digits are ``[0-9]``, not ``\\d``, which in Python takes any Unicode
digit.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from include.events.models import ORDER_EVENT_TYPES, EventType
from include.privacy import CUSTOMER_ID_PATTERN


def whole_match(pattern: str) -> str:
    """``^X$`` as ``\\A(?:X)\\Z``: the same language under ``re.search`` as under Rust's regex."""
    if not (pattern.startswith("^") and pattern.endswith("$")):
        raise ValueError(f"expected an anchored pattern: {pattern!r}")
    return rf"\A(?:{pattern[1:-1]})\Z"


_UUID = r"\A[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z"
_STAMP = (
    r"\A[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
    r"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?"
    r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])\Z"
)
# Python's \s is a superset of Rust's (it adds U+001C..U+001F): stricter, so safe.
_EMAIL = whole_match(r"^[^@\s]+@[^@\s]+$")

ShortText = Annotated[str, Meta(min_length=1, max_length=200)]
Stamp = Annotated[str, Meta(pattern=_STAMP)]
DeviceType = Literal["desktop", "mobile", "tablet", "other"]


class _Strict(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """Unknown fields are refused, as the contract's ``extra="forbid"``. (Fields keep the
    contract's order; ``kw_only`` lets a required one follow an optional one.)"""


class Customer(_Strict):
    customer_id: Annotated[str, Meta(pattern=whole_match(CUSTOMER_ID_PATTERN.pattern))]
    email: Annotated[str, Meta(max_length=320, pattern=_EMAIL)] | None = None
    country: Annotated[str, Meta(pattern=whole_match(r"^[A-Z]{2}$"))] | None = None
    segment: ShortText | None = None


class Device(_Strict):
    type: DeviceType | None = None
    os: ShortText | None = None
    browser: ShortText | None = None
    ip: Annotated[str, Meta(max_length=45)] | None = None


class Item(_Strict, kw_only=True):
    sku: ShortText
    category: ShortText | None = None
    quantity: Annotated[int, Meta(ge=1, le=10_000)]
    unit_price: float  # Money: see ``cents``


class Order(_Strict):
    order_id: ShortText
    total_amount: float  # Money: see ``cents``
    currency: str  # its pattern holds by equality with the tenant's (checked) currency
    payment_method: ShortText | None = None


class MlContext(_Strict):
    model_version: ShortText | None = None
    model_scores: dict[str, float] = {}


class ProcessingFlags(_Strict):
    pii_contains: bool = False
    gdpr_consent: bool = False


class Lineage(_Strict):
    source: ShortText
    producer_id: ShortText | None = None
    produced_at: Stamp | None = None
    trace_id: ShortText | None = None


class Marketing(_Strict):
    campaign: ShortText | None = None
    utm_source: ShortText | None = None
    utm_medium: ShortText | None = None


class EventV1(_Strict, kw_only=True, tag_field="schema_version", tag=1):
    event_id: Annotated[str, Meta(pattern=_UUID)]
    tenant_id: str  # its pattern holds by equality with the topic's tenant
    event_type: EventType
    event_time: Stamp
    session_id: ShortText
    customer: Customer
    device: Device | None = None
    items: Annotated[list[Item], Meta(max_length=500)] = []
    order: Order | None = None
    ml_context: MlContext | None = None
    processing_flags: ProcessingFlags = msgspec.field(default_factory=ProcessingFlags)
    lineage: Lineage


class EventV2(EventV1, tag=2):
    marketing: Marketing | None = None


# Pydantic model name -> its Struct (the test of the mirror walks these).
STRUCTS: dict[str, type[msgspec.Struct]] = {
    "EventV1": EventV1,
    "EventV2": EventV2,
    "Customer": Customer,
    "Device": Device,
    "Item": Item,
    "Order": Order,
    "MlContext": MlContext,
    "ProcessingFlags": ProcessingFlags,
    "Lineage": Lineage,
    "Marketing": Marketing,
}

# The flat columns ``accept`` fills, in order (``include.events.flatten.flat_columns``).
FLAT_NAMES = (
    "event_id",
    "schema_version",
    "tenant_id",
    "event_type",
    "event_time",
    "session_id",
    "customer_customer_id",
    "customer_email",
    "customer_country",
    "customer_segment",
    "device_type",
    "device_os",
    "device_browser",
    "device_ip",
    "order_order_id",
    "order_total_amount",
    "order_currency",
    "order_payment_method",
    "ml_context_model_version",
    "ml_context_model_scores",
    "processing_flags_pii_contains",
    "processing_flags_gdpr_consent",
    "lineage_source",
    "lineage_producer_id",
    "lineage_produced_at",
    "lineage_trace_id",
    "marketing_campaign",
    "marketing_utm_source",
    "marketing_utm_medium",
)
# One item line: sku, category, quantity, unit price in cents.
Line = tuple[str, str | None, int, int]

_DECODER = msgspec.json.Decoder(EventV1 | EventV2)
_UNICODE_ESCAPE = b"\\u"
_NO_DEVICE = (None, None, None, None)
_NO_ORDER = (None, None, None, None)
_NO_MARKETING = (None, None, None)
_EDGE_YEARS = (1, 9999)


def cents(amount: float) -> int | None:
    """Money in cents, as the contract reads it, or None where this path is not sure.

    Pydantic turns a JSON number into ``Decimal(str(float))``: the shortest text of the float.
    At most 15 whole digits (below 2**53, so an integer is exact as a float) and at most two
    decimals of that text: what the contract allows (18 digits, 2 decimals, ge 0), stricter.
    """
    whole, _, fraction = repr(amount).partition(".")
    if len(whole) > 15 or len(fraction) > 2 or not (whole.isdigit() and fraction.isdigit()):
        return None
    return int(whole) * 100 + int(fraction.ljust(2, "0"))


def _moment(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:  # 2026-02-30 and the like: the contract's error, not ours to word
        return None
    return None if moment.year in _EDGE_YEARS else moment


def accept(
    value: bytes, tenant: str, currency: str | None, earliest: datetime, latest: datetime
) -> tuple[tuple[Any, ...], list[Line]] | None:
    """(flat row in ``FLAT_NAMES`` order, item lines) of a message the contract stores as it
    is, or None to let the Pydantic path decide.

    ``tenant`` is the topic's (registered) tenant, ``currency`` its currency if that is a valid
    code (else None: no order can match it), ``earliest``..``latest`` the plausible event times.
    Money comes out in cents, times as aware datetimes, the event type as ``EventType``.
    """
    if _UNICODE_ESCAPE in value:
        return None
    try:
        event = _DECODER.decode(value)
    except Exception:  # anything at all: the Pydantic path words it (or accepts it)
        return None
    if event.tenant_id != tenant:
        return None
    event_time = _moment(event.event_time)
    if event_time is None or not earliest <= event_time <= latest:
        return None
    lineage = event.lineage
    produced_at = None
    if lineage.produced_at is not None:
        produced_at = _moment(lineage.produced_at)
        if produced_at is None:
            return None
    order = event.order
    if order is None:
        if event.event_type in ORDER_EVENT_TYPES:
            return None
        order_values: tuple[Any, ...] = _NO_ORDER
    else:
        total = cents(order.total_amount)
        if total is None or currency is None or order.currency != currency:
            return None
        order_values = (order.order_id, total, currency, order.payment_method)
    lines: list[Line] = []
    for item in event.items:
        price = cents(item.unit_price)
        if price is None:
            return None
        lines.append((item.sku, item.category, item.quantity, price))
    customer = event.customer
    device = event.device
    ml = event.ml_context
    flags = event.processing_flags
    if isinstance(event, EventV2):
        version = 2
        marketing = event.marketing
        marketing_values: tuple[Any, ...] = (
            _NO_MARKETING
            if marketing is None
            else (marketing.campaign, marketing.utm_source, marketing.utm_medium)
        )
    else:
        version = 1
        marketing_values = _NO_MARKETING
    row = (
        event.event_id,
        version,
        tenant,
        event.event_type,
        event_time,
        event.session_id,
        customer.customer_id,
        customer.email,
        customer.country,
        customer.segment,
        *(_NO_DEVICE if device is None else (device.type, device.os, device.browser, device.ip)),
        *order_values,
        *((None, None) if ml is None else (ml.model_version, ml.model_scores)),
        flags.pii_contains,
        flags.gdpr_consent,
        lineage.source,
        lineage.producer_id,
        produced_at,
        lineage.trace_id,
        *marketing_values,
    )
    return row, lines
