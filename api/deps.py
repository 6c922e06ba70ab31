"""Request dependencies: the app context, the caller, and the tenant a request may read.

Routes state what they need in their signature: ``ctx: Ctx``, ``caller: Caller``,
``admin: AdminCaller``, ``tenant: TenantScope``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Query, Request

from api.context import AppContext
from api.errors import Problem
from api.ratelimit import retry_after_header
from api.security import Principal, Role, is_usable, same_hash, token_hash

TENANT_PATTERN = r"^[a-z][a-z0-9_]{2,62}$"
_BEARER = "bearer "
_MAX_TOKEN_CHARS = 256
_UNAUTHORIZED = {"WWW-Authenticate": 'Bearer realm="lakehouse"'}


def get_ctx(request: Request) -> AppContext:
    """The app's context."""
    ctx: AppContext = request.app.state.ctx
    return ctx


Ctx = Annotated[AppContext, Depends(get_ctx)]


async def authenticate(request: Request, ctx: Ctx) -> Principal:
    """The caller behind the bearer token, or 401; then the token's rate limit, or 429."""
    header = request.headers.get("authorization", "")
    if not header.lower().startswith(_BEARER):
        raise Problem(401, "missing bearer token", headers=_UNAUTHORIZED)
    token = header[len(_BEARER) :].strip()
    if not token or len(token) > _MAX_TOKEN_CHARS or not token.isascii():
        raise Problem(401, "malformed bearer token", headers=_UNAUTHORIZED)
    presented = token_hash(token)
    # One statement for the token and its tenant's state, outside a transaction block.
    row = await ctx.db.fetchrow(
        "SELECT k.token_id, k.token_hash, k.role, k.tenant_id, k.dev, k.expires_at, "
        "k.revoked_at, t.active FROM api_tokens k "
        "LEFT JOIN tenants t ON t.tenant_id = k.tenant_id WHERE k.token_hash = $1",
        presented,
    )
    if row is None or not same_hash(bytes(row["token_hash"]), presented):
        raise Problem(401, "unknown token", headers=_UNAUTHORIZED)
    if row["dev"] and ctx.settings.env != "dev":
        raise Problem(401, "dev tokens are refused outside dev", headers=_UNAUTHORIZED)
    if not is_usable(row["expires_at"], row["revoked_at"], datetime.now(UTC)):
        raise Problem(401, "token expired or revoked", headers=_UNAUTHORIZED)
    wait_s = ctx.limiter.acquire(str(row["token_id"]))
    if wait_s > 0:
        raise Problem(
            429,
            f"rate limit of {ctx.settings.api_rate_limit_per_minute} requests per minute reached",
            headers={"Retry-After": retry_after_header(wait_s)},
        )
    return Principal(row["token_id"], Role(row["role"]), row["tenant_id"], row["active"])


Caller = Annotated[Principal, Depends(authenticate)]


def require_admin(caller: Caller) -> Principal:
    """The caller, if it holds an admin token; 403 otherwise."""
    if not caller.is_admin:
        raise Problem(403, "this operation needs an admin token")
    return caller


AdminCaller = Annotated[Principal, Depends(require_admin)]


async def resolve_tenant(
    request: Request, ctx: Ctx, caller: Principal, requested: str | None
) -> str:
    """The tenant ``caller`` may read when it asks for ``requested`` (403/404/422 otherwise)."""
    if not caller.is_admin:
        if requested is not None and requested != caller.tenant_id:
            raise Problem(403, "a tenant token can only read its own tenant")
        assert caller.tenant_id is not None
        tenant_id = caller.tenant_id
    else:
        if requested is None:
            raise Problem(422, "tenant_id is required with an admin token")
        tenant_id = requested
    # A dev token may exist before its tenant registers; a deactivated tenant is not served.
    if not caller.is_admin:
        active = caller.tenant_active  # read with the token
    else:
        row = await ctx.db.fetchrow("SELECT active FROM tenants WHERE tenant_id = $1", tenant_id)
        active = None if row is None else row["active"]
    if active is None:
        raise Problem(404, f"no tenant {tenant_id!r}")
    if not active:
        raise Problem(403, f"tenant {tenant_id!r} is deactivated")
    request.state.tenant_id = tenant_id
    ctx.requests.count(tenant_id)
    return tenant_id


async def tenant_from_query(
    request: Request,
    ctx: Ctx,
    caller: Caller,
    tenant_id: Annotated[
        str | None,
        Query(
            pattern=TENANT_PATTERN,
            description="Tenant to read; required for admin tokens, implied by tenant tokens.",
        ),
    ] = None,
) -> str:
    """The tenant named in the query (or implied by a tenant token)."""
    return await resolve_tenant(request, ctx, caller, tenant_id)


TenantScope = Annotated[str, Depends(tenant_from_query)]
