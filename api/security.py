"""API tokens: generation, hashing and the roles they carry.

A token is 256 random bits, shown once; the database keeps its SHA-256 only. Lookup is by that
hash and the stored hash is compared again with ``hmac.compare_digest``, so no comparison of
secret material depends on how many leading bytes match.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

TOKEN_PREFIX = "lh_"  # noqa: S105 - a public prefix that marks our tokens, not a secret


class Role(StrEnum):
    """What a token may do: ``admin`` everything, ``tenant`` read its own tenant's data."""

    ADMIN = "admin"
    TENANT = "tenant"


@dataclass(frozen=True)
class Principal:
    """The caller behind a valid token."""

    token_id: uuid.UUID
    role: Role
    tenant_id: str | None  # set for tenant tokens only
    # Whether the token's tenant is active, read with the token (None: no such tenant yet, or
    # an admin token); saves resolving the tenant in a second query.
    tenant_active: bool | None = None

    @property
    def is_admin(self) -> bool:
        """Whether the token has the admin role."""
        return self.role is Role.ADMIN


def new_token() -> str:
    """A fresh random token secret."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> bytes:
    """The stored form of a token."""
    return hashlib.sha256(token.encode("utf-8")).digest()


def same_hash(stored: bytes, presented: bytes) -> bool:
    """Constant-time equality of two token hashes."""
    return hmac.compare_digest(stored, presented)


def dev_tenant_token(tenant_id: str) -> str:
    """The documented dev token of a demo tenant (seeded only when LAKEHOUSE_ENV=dev)."""
    return f"{tenant_id}-token"


def is_usable(expires_at: datetime | None, revoked_at: datetime | None, now: datetime) -> bool:
    """Whether a token that exists may still be used at ``now``."""
    return revoked_at is None and (expires_at is None or expires_at > now)
