"""Request and response bodies of the API (every one a typed Pydantic model)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from api.security import Role

TenantIdText = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{2,62}$")]
# Free text stored in PostgreSQL: no control characters (PostgreSQL text cannot hold NUL).
_NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"
Label = Annotated[str, StringConstraints(max_length=200, pattern=_NO_CONTROL)]


class Granularity(StrEnum):
    """Bucket size of a metrics series."""

    MINUTE = "minute"
    HOUR = "hour"
    DAY = "day"


class RankBy(StrEnum):
    """What top products are ranked by."""

    REVENUE = "revenue"
    QUANTITY = "quantity"


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class MetricValues(_Out):
    """The measures of one bucket or of the whole range."""

    events: int = Field(description="Distinct events counted (speed layer).")
    events_by_type: dict[str, int]
    orders: int = Field(description="Purchase events.")
    revenue: Decimal = Field(description="Sum of purchase totals, in the tenant's currency.")
    refunds: Decimal = Field(description="Sum of refund totals, in the tenant's currency.")
    items_sold: int = Field(description="Item quantities of purchases.")
    average_order_value: Decimal | None = Field(description="revenue / orders (2 decimals).")
    sessions: int = Field(description="Distinct sessions (loaded events).")
    purchasing_sessions: int
    conversion_rate: float | None = Field(description="purchasing_sessions / sessions.")
    unique_customers: int = Field(description="Distinct customer ids (loaded events).")


class SeriesPoint(MetricValues):
    """One bucket of a metrics series."""

    bucket_start: datetime


class Freshness(_Out):
    """How current the answer is."""

    newest_event_time: datetime | None = Field(
        description="Newest event time included (minute precision for the speed layer)."
    )
    speed_layer_updated_at: datetime | None = Field(description="Last streaming batch commit.")
    batch_loaded_at: datetime | None = Field(description="Last load of the events table.")


class MetricsResponse(_Out):
    """``GET /metrics``."""

    tenant_id: str
    start: datetime
    end: datetime
    granularity: Granularity
    timezone: str
    currency: str
    series: list[SeriesPoint]
    totals: MetricValues
    freshness: Freshness


class FunnelStep(_Out):
    """Sessions that reached a step (and every step before it)."""

    step: str
    sessions: int
    rate_from_previous: float | None
    rate_from_first: float | None


class FunnelResponse(_Out):
    """``GET /metrics/funnel``."""

    tenant_id: str
    start: datetime
    end: datetime
    steps: list[FunnelStep]


class Product(_Out):
    """One product's purchases in the range."""

    sku: str
    category: str | None
    quantity: int
    revenue: Decimal
    orders: int


class TopProductsResponse(_Out):
    """``GET /metrics/top-products``."""

    tenant_id: str
    start: datetime
    end: datetime
    by: RankBy
    products: list[Product]


class EventItem(_Out):
    """One event, flattened. PII is masked for tenant tokens."""

    event_id: uuid.UUID
    event_type: str
    event_time: datetime
    schema_version: int
    session_id: str | None
    customer_id: str | None
    customer_email: str | None
    customer_country: str | None
    customer_segment: str | None
    device_type: str | None
    device_ip: str | None
    order_id: str | None
    order_total_amount: Decimal | None
    order_currency: str | None
    order_payment_method: str | None
    item_count: int | None
    marketing_campaign: str | None
    fraud_score: float | None


class EventsPage(_Out):
    """``GET /events``: newest first; pass ``next_cursor`` back as ``cursor`` for more."""

    items: list[EventItem]
    next_cursor: str | None


class FraudAnomaly(_Out):
    """An event whose fraud score is at or above the tenant's threshold."""

    event_id: uuid.UUID
    event_time: datetime
    event_type: str
    customer_id: str | None
    fraud_score: float
    threshold: float


class HourlyAnomaly(_Out):
    """An hour whose order count or revenue is an outlier against its trailing baseline."""

    hour_start: datetime
    measure: str
    value: float
    baseline_median: float
    z_score: float


class AnomaliesResponse(_Out):
    """``GET /anomalies``."""

    tenant_id: str
    start: datetime
    end: datetime
    fraud_threshold: float
    z_threshold: float
    baseline_hours: int
    fraud: list[FraudAnomaly]
    hourly: list[HourlyAnomaly]


class TenantUsage(_Out):
    """Cost-allocation figures of one tenant."""

    tenant_id: str
    events_ingested: int
    quarantined: int
    quarantined_by_reason: dict[str, int]
    stored_bytes: int
    stored_bytes_by_store: dict[str, int]
    api_requests: int


class UsageResponse(_Out):
    """``GET /usage``."""

    tenants: list[TenantUsage]


class TenantCreate(BaseModel):
    """``POST /tenants`` body."""

    model_config = ConfigDict(extra="forbid")

    tenant_id: TenantIdText
    name: Annotated[
        str,
        StringConstraints(min_length=1, max_length=200, strip_whitespace=True, pattern=_NO_CONTROL),
    ]
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]


class TenantOut(_Out):
    """A registered tenant."""

    tenant_id: str
    name: str
    currency: str
    active: bool
    created_at: datetime
    fraud_score_threshold: float


class TenantList(_Out):
    """``GET /tenants``."""

    tenants: list[TenantOut]


class TokenCreate(BaseModel):
    """``POST /tenants/{tenant_id}/tokens`` body."""

    model_config = ConfigDict(extra="forbid")

    role: Role = Role.TENANT
    expires_at: AwareDatetime | None = None
    name: Label = ""


class TokenOut(_Out):
    """A token's metadata (never its secret)."""

    token_id: uuid.UUID
    role: Role
    tenant_id: str | None
    name: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class TokenCreated(TokenOut):
    """A new token, with its secret: the only time it is shown."""

    token: str


class TokenList(_Out):
    """``GET /tenants/{tenant_id}/tokens``."""

    tokens: list[TokenOut]


class ErasureStatus(StrEnum):
    """Progress of an erasure request."""

    LAKE_PENDING = "lake_pending"
    LAKE_RUNNING = "lake_running"
    COMPLETED = "completed"
    FAILED = "failed"


class ErasureOut(_Out):
    """An erasure request and its progress."""

    request_id: uuid.UUID
    tenant_id: str
    status: ErasureStatus
    postgres_rows: int
    lake_rows: int | None
    archive_rows: int | None
    dag_run_id: str | None
    detail: str | None
    requested_at: datetime
    updated_at: datetime
    completed_at: datetime | None


class Health(_Out):
    """``GET /health`` and ``GET /ready``."""

    status: str
    checks: dict[str, str] = Field(default_factory=dict)


class ProblemDetail(BaseModel):
    """An error (RFC 9457 problem details), served as ``application/problem+json``."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str
    request_id: str | None = None
    errors: list[dict[str, Any]] | None = Field(
        None, description="Validation errors (422): location, message and type of each."
    )
    checks: dict[str, str] | None = Field(None, description="Failed readiness checks (503).")


_ERROR_STATUSES = {
    400: "Bad request",
    401: "Missing, unknown, expired or revoked token",
    403: "The token may not do this (wrong role or tenant)",
    404: "Not found",
    409: "Conflict",
    413: "Request body too large",
    422: "Invalid parameters",
    429: "Rate limit reached (see Retry-After)",
    500: "Internal error",
    503: "Database unreachable or not ready (see Retry-After)",
}
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {
        "model": ProblemDetail,
        "description": description,
        "content": {"application/problem+json": {}},
    }
    for status, description in _ERROR_STATUSES.items()
}
