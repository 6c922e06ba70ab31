"""Admin: tenants and their tokens."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Response

from api.deps import TENANT_PATTERN, AdminCaller, Ctx
from api.errors import Problem
from api.models import (
    TenantCreate,
    TenantList,
    TenantOut,
    TokenCreate,
    TokenCreated,
    TokenList,
    TokenOut,
)
from api.security import Role, new_token, token_hash

router = APIRouter(tags=["admin"])
TenantPath = Annotated[str, Path(pattern=TENANT_PATTERN)]

_TENANT_COLUMNS = (
    "tenant_id, display_name AS name, currency, active, created_at, fraud_score_threshold"
)
_TOKEN_COLUMNS = "token_id, role, tenant_id, name, created_at, expires_at, revoked_at"  # noqa: S105


@router.post("/tenants", status_code=201, summary="Register a tenant")
async def create_tenant(ctx: Ctx, admin: AdminCaller, body: TenantCreate) -> TenantOut:
    """Register a tenant; the streaming job reads its topic within seconds.
    409 if the tenant exists."""
    async with ctx.db.platform() as conn:
        row = await conn.fetchrow(
            "INSERT INTO tenants (tenant_id, display_name, currency) VALUES ($1, $2, $3) "
            f"ON CONFLICT (tenant_id) DO NOTHING RETURNING {_TENANT_COLUMNS}",
            body.tenant_id,
            body.name,
            body.currency,
        )
    if row is None:
        raise Problem(409, f"tenant {body.tenant_id!r} already exists")
    return TenantOut(**dict(row))


@router.get("/tenants", summary="List tenants")
async def list_tenants(ctx: Ctx, admin: AdminCaller) -> TenantList:
    """Every registered tenant, by id."""
    async with ctx.db.platform() as conn:
        rows = await conn.fetch(f"SELECT {_TENANT_COLUMNS} FROM tenants ORDER BY tenant_id")
    return TenantList(tenants=[TenantOut(**dict(row)) for row in rows])


async def _require_tenant(ctx: Ctx, tenant_id: str) -> None:
    async with ctx.db.platform() as conn:
        if not await conn.fetchval("SELECT 1 FROM tenants WHERE tenant_id = $1", tenant_id):
            raise Problem(404, f"no tenant {tenant_id!r}")


@router.post("/tenants/{tenant_id}/tokens", status_code=201, summary="Create a tenant token")
async def create_token(
    ctx: Ctx, admin: AdminCaller, tenant_id: TenantPath, body: TokenCreate
) -> TokenCreated:
    """A new token bound to ``tenant_id``. The response is the only time its secret is shown.
    Admin tokens are not created here: the first comes from ``LAKEHOUSE_ADMIN_TOKEN``."""
    if body.role is not Role.TENANT:
        raise Problem(422, "only tenant tokens are created here (role must be 'tenant')")
    if body.expires_at is not None and body.expires_at <= datetime.now(UTC):
        raise Problem(422, "expires_at must be in the future")
    await _require_tenant(ctx, tenant_id)
    secret = new_token()
    async with ctx.db.platform() as conn:
        row = await conn.fetchrow(
            "INSERT INTO api_tokens (token_id, token_hash, role, tenant_id, name, expires_at) "
            f"VALUES ($1, $2, $3, $4, $5, $6) RETURNING {_TOKEN_COLUMNS}",
            uuid.uuid4(),
            token_hash(secret),
            Role.TENANT.value,
            tenant_id,
            body.name,
            body.expires_at,
        )
    assert row is not None
    return TokenCreated(token=secret, **dict(row))


@router.get("/tenants/{tenant_id}/tokens", summary="List a tenant's tokens (never secrets)")
async def list_tokens(ctx: Ctx, admin: AdminCaller, tenant_id: TenantPath) -> TokenList:
    """Every token bound to ``tenant_id``, revoked and expired ones included."""
    await _require_tenant(ctx, tenant_id)
    async with ctx.db.platform() as conn:
        rows = await conn.fetch(
            f"SELECT {_TOKEN_COLUMNS} FROM api_tokens WHERE tenant_id = $1 ORDER BY created_at",
            tenant_id,
        )
    return TokenList(tokens=[TokenOut(**dict(row)) for row in rows])


@router.delete("/tokens/{token_id}", status_code=204, summary="Revoke a token")
async def revoke_token(ctx: Ctx, admin: AdminCaller, token_id: uuid.UUID) -> Response:
    """Revoke a token at once (idempotent). 404 if there is no such token."""
    async with ctx.db.platform() as conn:
        found = await conn.fetchval(
            "UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now()) "
            "WHERE token_id = $1 RETURNING 1",
            token_id,
        )
    if not found:
        raise Problem(404, "no such token")
    return Response(status_code=204)
