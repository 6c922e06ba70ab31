"""Bootstrap tokens: the configured admin token, and in dev one token per demo tenant."""

from __future__ import annotations

import logging
import uuid

from api.db import Database
from api.security import Role, dev_tenant_token, token_hash
from include.settings import DEV_ADMIN_TOKEN, Settings

log = logging.getLogger("lakehouse.api.seed")


async def seed_tokens(db: Database, settings: Settings) -> None:
    """Make sure the bootstrap tokens exist and the configured admin token is the only active
    admin token; outside dev, revoke every dev token."""
    admin = settings.admin_token.get_secret_value()
    wanted: list[tuple[str, Role, str | None, str, bool]] = [
        (
            admin,
            Role.ADMIN,
            None,
            "bootstrap admin (LAKEHOUSE_ADMIN_TOKEN)",
            admin == DEV_ADMIN_TOKEN,
        )
    ]
    if settings.env == "dev":
        wanted += [
            (dev_tenant_token(t), Role.TENANT, t, f"dev token of {t}", True)
            for t in settings.demo_tenants
        ]
    async with db.platform() as conn:
        if settings.env != "dev":
            revoked = await conn.execute(
                "UPDATE api_tokens SET revoked_at = now() WHERE dev AND revoked_at IS NULL"
            )
            log.info("dev tokens revoked", extra={"result": revoked})
        # The configured admin token is the one admin token: changing LAKEHOUSE_ADMIN_TOKEN
        # revokes the previous one at the next start (admin tokens come from nowhere else).
        rotated = await conn.execute(
            "UPDATE api_tokens SET revoked_at = now() "
            "WHERE role = 'admin' AND token_hash <> $1 AND revoked_at IS NULL",
            token_hash(admin),
        )
        await conn.execute(
            "UPDATE api_tokens SET revoked_at = NULL WHERE role = 'admin' AND token_hash = $1",
            token_hash(admin),
        )
        log.info("previous admin tokens revoked", extra={"result": rotated})
        for secret, role, tenant, name, dev in wanted:
            await conn.execute(
                "INSERT INTO api_tokens (token_id, token_hash, role, tenant_id, name, dev) "
                "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (token_hash) DO NOTHING",
                uuid.uuid4(),
                token_hash(secret),
                role.value,
                tenant,
                name,
                dev,
            )
    log.info("bootstrap tokens present", extra={"tokens": len(wanted), "env": settings.env})
