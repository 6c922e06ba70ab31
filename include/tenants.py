"""The tenant registry: validated tenant ids, topic names, and the ``tenants`` table."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

import psycopg
from psycopg.rows import class_row
from pydantic import AfterValidator, BaseModel, ConfigDict

TENANT_ID_PATTERN = re.compile(r"^[a-z][a-z0-9_]{2,62}$")
CURRENCY_PATTERN = re.compile(r"^[A-Z]{3}$")


class InvalidTenantIdError(ValueError):
    """A tenant id that does not match ``^[a-z][a-z0-9_]{2,62}$``."""


def validate_tenant_id(tenant_id: str) -> str:
    """Return ``tenant_id`` unchanged, or raise ``InvalidTenantIdError`` saying why."""
    if not isinstance(tenant_id, str) or not TENANT_ID_PATTERN.fullmatch(tenant_id):
        raise InvalidTenantIdError(
            f"invalid tenant id {tenant_id!r}: it must start with a lowercase letter, then 2 to 62 "
            "lowercase letters, digits or underscores (pattern ^[a-z][a-z0-9_]{2,62}$)"
        )
    return tenant_id


def validate_currency(currency: str) -> str:
    """Return an ISO-4217 style code (three capital letters), or raise ``ValueError``."""
    if not CURRENCY_PATTERN.fullmatch(currency):
        raise ValueError(f"invalid currency {currency!r}: expected three capital letters like USD")
    return currency


TenantId = Annotated[str, AfterValidator(validate_tenant_id)]
Currency = Annotated[str, AfterValidator(validate_currency)]


class Tenant(BaseModel):
    """A row of the ``tenants`` table."""

    model_config = ConfigDict(frozen=True)

    tenant_id: TenantId
    display_name: str
    currency: Currency
    created_at: datetime | None = None
    active: bool = True


def topic_for(tenant_id: str, template: str) -> str:
    """The Pulsar topic that carries ``tenant_id``'s events, from the configured template."""
    return template.format(tenant_id=validate_tenant_id(tenant_id))


def tenant_of_topic(topic: str, template: str) -> str | None:
    """The tenant whose topic ``topic`` is under ``template``, or None if it is no tenant's."""
    prefix, _, suffix = template.partition("{tenant_id}")
    if not (topic.startswith(prefix) and topic.endswith(suffix)):
        return None
    candidate = topic[len(prefix) : len(topic) - len(suffix)]
    return candidate if TENANT_ID_PATTERN.fullmatch(candidate) else None


def register_tenant(
    conn: psycopg.Connection, tenant_id: str, display_name: str, currency: str
) -> Tenant:
    """Insert a tenant unless it exists; return the stored row (an existing row wins).

    Raises ``InvalidTenantIdError`` for a malformed id, ``ValueError`` for a bad currency.
    """
    validate_tenant_id(tenant_id)
    candidate = Tenant(tenant_id=tenant_id, display_name=display_name, currency=currency)
    with conn.cursor(row_factory=class_row(Tenant)) as cur:
        cur.execute(
            "INSERT INTO tenants (tenant_id, display_name, currency) VALUES (%s, %s, %s) "
            "ON CONFLICT (tenant_id) DO NOTHING",
            (candidate.tenant_id, candidate.display_name, candidate.currency),
        )
        cur.execute(
            "SELECT tenant_id, display_name, currency, created_at, active FROM tenants "
            "WHERE tenant_id = %s",
            (candidate.tenant_id,),
        )
        stored = cur.fetchone()
    conn.commit()
    if stored is None:  # pragma: no cover - the insert or an existing row guarantees one
        raise RuntimeError(f"tenant {tenant_id} vanished right after registration")
    return stored


def list_tenants(conn: psycopg.Connection, *, active_only: bool = True) -> list[Tenant]:
    """Tenants ordered by id; only active ones unless ``active_only`` is false."""
    with conn.cursor(row_factory=class_row(Tenant)) as cur:
        cur.execute(
            "SELECT tenant_id, display_name, currency, created_at, active FROM tenants "
            "WHERE active OR NOT %s ORDER BY tenant_id",
            (active_only,),
        )
        return cur.fetchall()
