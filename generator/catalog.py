"""Deterministic merchant profiles: display name, currency and product catalog per tenant."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

# Demo merchants with hand-picked names; any other tenant id gets a derived profile.
_KNOWN_MERCHANTS: dict[str, tuple[str, str]] = {
    "acme_shop": ("Acme Shop", "USD"),
    "globex_store": ("Globex Store", "EUR"),
    "initech_mart": ("Initech Mart", "GBP"),
    "umbrella_goods": ("Umbrella Goods", "USD"),
    "stark_supply": ("Stark Supply", "EUR"),
    "wayne_outlet": ("Wayne Outlet", "USD"),
    "hooli_market": ("Hooli Market", "CHF"),
    "soylent_foods": ("Soylent Foods", "GBP"),
}
_CURRENCIES = ("USD", "EUR", "GBP", "CHF")
_CATEGORIES = ("apparel", "shoes", "electronics", "home", "beauty", "toys", "sports", "books")
CATALOG_SIZE = 200


@dataclass(frozen=True)
class Product:
    """One SKU of a merchant; prices are whole cents so sums stay exact."""

    sku: str
    category: str
    price_cents: int


@dataclass(frozen=True)
class Merchant:
    """What the generator knows of a tenant."""

    tenant_id: str
    display_name: str
    currency: str
    products: tuple[Product, ...]


def demo_tenant_ids(count: int) -> list[str]:
    """The first ``count`` demo tenant ids (named ones first, then ``merchant_NNN``)."""
    named = list(_KNOWN_MERCHANTS)
    extra = [f"merchant_{n:03d}" for n in range(1, max(0, count - len(named)) + 1)]
    return (named + extra)[:count]


def _stable_seed(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def merchant_profile(tenant_id: str, currency: str | None = None) -> Merchant:
    """The profile of ``tenant_id``; the same id always yields the same catalog."""
    rng = random.Random(_stable_seed(tenant_id))
    name, default_currency = _KNOWN_MERCHANTS.get(
        tenant_id, (tenant_id.replace("_", " ").title(), rng.choice(_CURRENCIES))
    )
    products = tuple(
        Product(
            sku=f"SKU-{n:05d}",
            category=rng.choice(_CATEGORIES),
            # Log-uniform-ish prices from 2.99 to about 600: many cheap items, a few expensive.
            price_cents=int(round(299 * (200 ** rng.random()), -1)) - 1,
        )
        for n in range(1, CATALOG_SIZE + 1)
    )
    return Merchant(tenant_id, name, currency or default_currency, products)
