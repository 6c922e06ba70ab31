"""Personal data rules shared by the API, the loader and the erasure job."""

from __future__ import annotations

import hashlib
import re

# Customer ids come from producers; erasure puts them into Delta predicates, so only a safe
# alphabet is accepted at the API (quotes, wildcards and whitespace cannot appear).
CUSTOMER_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@:+-]{0,199}$")

# The SQL twin of ``customer_hash`` for a text column (PostgreSQL 11+ has sha256 built in).
CUSTOMER_HASH_SQL = "sha256(convert_to({column}, 'UTF8'))"


def customer_hash(customer_id: str) -> bytes:
    """What is kept of an erased customer's id for good: its SHA-256."""
    return hashlib.sha256(customer_id.encode("utf-8")).digest()


def valid_customer_id(customer_id: str) -> bool:
    """Whether ``customer_id`` uses only the characters erasure accepts."""
    return CUSTOMER_ID_PATTERN.fullmatch(customer_id) is not None


def mask_email(email: str | None) -> str | None:
    """``alice@example.com`` -> ``a***@example.com``: the domain stays for analytics."""
    if email is None:
        return None
    local, at, domain = email.partition("@")
    if not at:
        return "***"
    return f"{local[:1]}***@{domain}"


def mask_ip(ip: str | None) -> str | None:
    """Keep the network, drop the host: IPv4 /24 (``203.0.113.0/24``), IPv6 /48."""
    if ip is None:
        return None
    if ":" in ip:
        groups = [g for g in ip.split(":") if g][:3]
        return ":".join(groups) + "::/48" if groups else "***"
    parts = ip.split(".")
    if len(parts) != 4:
        return "***"
    return ".".join(parts[:3]) + ".0/24"
