"""Event contract, versions 1 and 2, as Pydantic v2 models.

These models are the single source of truth: the Spark ``StructType`` and the Arrow schema
are derived from them (``include.events.schemas``). On the wire an event is one UTF-8 JSON
object. Version 2 is additive (a ``marketing`` struct), so both versions validate side by side.
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Literal
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    TypeAdapter,
    model_validator,
)

from include.privacy import CUSTOMER_ID_PATTERN
from include.tenants import Currency, TenantId

# Money travels as a JSON number with at most two decimals; serialising through float keeps
# the shortest representation, so "12.1" stays exactly 12.1 when parsed as a decimal again.
Money = Annotated[
    Decimal,
    Field(max_digits=18, decimal_places=2, ge=0),
    PlainSerializer(float, return_type=float, when_used="json"),
]
ShortText = Annotated[str, Field(min_length=1, max_length=200)]


class EventType(StrEnum):
    """What happened in a shopping session."""

    PAGE_VIEW = "page_view"
    PRODUCT_VIEW = "product_view"
    ADD_TO_CART = "add_to_cart"
    REMOVE_FROM_CART = "remove_from_cart"
    CHECKOUT_STARTED = "checkout_started"
    PURCHASE = "purchase"
    REFUND = "refund"


ORDER_EVENT_TYPES = frozenset({EventType.PURCHASE, EventType.REFUND})


class _Strict(BaseModel):
    # Unknown fields are refused: a producer sending them has a contract bug worth quarantining.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Customer(_Strict):
    """Who acted. Only ``customer_id`` is required; the rest may be absent."""

    # An identifier, not free text: the API filters and erases customers by it (GDPR), so it
    # must be a value an erasure request can name (include.privacy.CUSTOMER_ID_PATTERN).
    customer_id: Annotated[str, Field(pattern=CUSTOMER_ID_PATTERN.pattern)]
    email: Annotated[str, Field(max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")] | None = None
    country: Annotated[str, Field(pattern=r"^[A-Z]{2}$")] | None = None
    segment: ShortText | None = None


class Device(_Strict):
    """The device the session runs on."""

    type: Literal["desktop", "mobile", "tablet", "other"] | None = None
    os: ShortText | None = None
    browser: ShortText | None = None
    ip: Annotated[str, Field(max_length=45)] | None = None


class Item(_Strict):
    """One cart or order line."""

    sku: ShortText
    category: ShortText | None = None
    quantity: Annotated[int, Field(ge=1, le=10_000)]
    unit_price: Money


class Order(_Strict):
    """The order of a purchase or refund."""

    order_id: ShortText
    total_amount: Money
    currency: Currency
    payment_method: ShortText | None = None


class MlContext(_Strict):
    """Scores the shop's models gave this event."""

    model_version: ShortText | None = None
    model_scores: dict[str, float] = Field(default_factory=dict)


class ProcessingFlags(_Strict):
    """Data-protection flags."""

    pii_contains: bool = False
    gdpr_consent: bool = False


class Lineage(_Strict):
    """Where the event came from."""

    source: ShortText
    producer_id: ShortText | None = None
    produced_at: AwareDatetime | None = None
    trace_id: ShortText | None = None


class Marketing(_Strict):
    """Campaign attribution (schema version 2)."""

    campaign: ShortText | None = None
    utm_source: ShortText | None = None
    utm_medium: ShortText | None = None


class EventV1(_Strict):
    """An e-commerce event, contract version 1."""

    event_id: UUID
    schema_version: Literal[1] = 1
    tenant_id: TenantId
    event_type: EventType
    event_time: AwareDatetime
    session_id: ShortText
    customer: Customer
    device: Device | None = None
    items: list[Item] = Field(default_factory=list, max_length=500)
    order: Order | None = None
    ml_context: MlContext | None = None
    processing_flags: ProcessingFlags = Field(default_factory=ProcessingFlags)
    lineage: Lineage

    @model_validator(mode="after")
    def _orders_need_an_order(self) -> EventV1:
        if self.event_type in ORDER_EVENT_TYPES and self.order is None:
            raise ValueError(f"order is required for event_type {self.event_type.value}")
        return self


class EventV2(EventV1):
    """Contract version 2: version 1 plus campaign attribution."""

    schema_version: Literal[2] = 2  # type: ignore[assignment]
    marketing: Marketing | None = None


AnyEvent = Annotated[EventV1 | EventV2, Field(discriminator="schema_version")]
SUPPORTED_SCHEMA_VERSIONS = frozenset({1, 2})
LATEST_EVENT_MODEL = EventV2

_ANY_EVENT = TypeAdapter[EventV1 | EventV2](AnyEvent)


def parse_event(payload: bytes | str) -> EventV1 | EventV2:
    """Validate one JSON payload against the contract of its ``schema_version``.

    Raises ``pydantic.ValidationError`` when the payload breaks the contract.
    """
    return _ANY_EVENT.validate_json(payload)
