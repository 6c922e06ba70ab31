"""Shopping sessions that walk the funnel, as contract-shaped event dicts (pure, seeded).

Events are built as plain dicts rather than Pydantic models because the generator must reach
about 100,000 events/s; the unit tests validate its output against the Pydantic contract, which
stays the single source of truth.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from generator.catalog import Merchant, Product

Event = dict[str, Any]

_COUNTRIES = ("US", "DE", "FR", "GB", "CH", "NL", "ES", "IT", "CA", "SE")
_SEGMENTS = ("new", "returning", "vip", "wholesale")
_DEVICES = (
    {"type": "desktop", "os": "Windows", "browser": "Chrome"},
    {"type": "desktop", "os": "macOS", "browser": "Safari"},
    {"type": "desktop", "os": "Linux", "browser": "Firefox"},
    {"type": "mobile", "os": "iOS", "browser": "Safari"},
    {"type": "mobile", "os": "Android", "browser": "Chrome"},
    {"type": "tablet", "os": "iPadOS", "browser": "Safari"},
)
_PAYMENT_METHODS = ("card", "paypal", "apple_pay", "bank_transfer", "gift_card")
_CAMPAIGNS = (
    ("black_friday", "google", "cpc"),
    ("newsletter_w47", "newsletter", "email"),
    ("spring_sale", "instagram", "social"),
    ("retargeting", "facebook", "paid_social"),
)
CUSTOMERS_PER_TENANT = 5_000
MODEL_VERSION = "scores-2026.11"


def _uuid4(rng: random.Random) -> str:
    """A version-4 UUID string drawn from ``rng`` (so a seed reproduces it)."""
    bits = rng.getrandbits(128)
    bits = (bits & ~(0xF000 << 64)) | (0x4000 << 64)  # version 4
    bits = (bits & ~(0xC000 << 48)) | (0x8000 << 48)  # RFC 4122 variant
    h = f"{bits:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@lru_cache(maxsize=8_192)
def _iso_second(epoch_s: int) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def iso_millis(epoch_ms: int) -> str:
    """ISO-8601 UTC text of an epoch-milliseconds time (cached per second: it is a hot path)."""
    seconds, millis = divmod(epoch_ms, 1_000)
    return f"{_iso_second(seconds)}.{millis:03d}Z"


def _money(cents: int) -> float:
    # Whole cents divided by 100 print as their exact two-decimal text (shortest repr).
    return cents / 100


def _line(product: Product, quantity: int) -> dict[str, Any]:
    return {
        "sku": product.sku,
        "category": product.category,
        "quantity": quantity,
        "unit_price": _money(product.price_cents),
    }


class SessionFactory:
    """Builds the events of one shopping session for one merchant at a time."""

    def __init__(
        self,
        rng: random.Random,
        *,
        producer_id: str = "generator-1",
        v2_share: float = 0.3,
        late_share: float = 0.0,
    ) -> None:
        self._rng = rng
        self._producer_id = producer_id
        self._v2_share = v2_share
        self._late_share = late_share

    def session(self, merchant: Merchant, end: datetime) -> list[Event]:
        """All events of one session, in time order, the last one at ``end``.

        A late session (``late_share``) is shifted back by 1 hour to 3 days, as events from a
        device that was offline would be.
        """
        rng = self._rng
        random_ = rng.random
        end_ms = int(end.timestamp() * 1_000)
        if self._late_share and random_() < self._late_share:
            end_ms -= int((3_600 + random_() * 2 * 86_400) * 1_000)
        steps = self._funnel(merchant)
        gaps = [1_000 + int(random_() * 39_000) for _ in steps]
        at_ms = end_ms - (sum(gaps) - gaps[-1])
        context = self._session_context(merchant)
        schema_version = 2 if random_() < self._v2_share else 1
        marketing = None
        if schema_version == 2:
            campaign, source, medium = rng.choice(_CAMPAIGNS)
            marketing = {"campaign": campaign, "utm_source": source, "utm_medium": medium}
        tenant_id = merchant.tenant_id
        events: list[Event] = []
        for (event_type, items, order), gap in zip(steps, gaps, strict=True):
            fraud = random_()
            event: Event = {
                "event_id": _uuid4(rng),
                "schema_version": schema_version,
                "tenant_id": tenant_id,
                "event_type": event_type,
                "event_time": iso_millis(at_ms),
                "session_id": context["session_id"],
                "customer": context["customer"],
                "device": context["device"],
                "items": items,
                "order": order,
                "ml_context": {
                    "model_version": MODEL_VERSION,
                    # Skewed towards 0 like a real fraud model's scores.
                    "model_scores": {
                        "fraud": round(fraud * fraud * fraud * fraud, 4),
                        "churn": round(random_(), 4),
                    },
                },
                "processing_flags": context["processing_flags"],
                "lineage": {
                    "source": "generator",
                    "producer_id": self._producer_id,
                    "produced_at": iso_millis(at_ms + 5 + int(random_() * 900)),
                    "trace_id": f"{rng.getrandbits(64):016x}",
                },
            }
            if marketing is not None:
                event["marketing"] = marketing
            events.append(event)
            at_ms += gap
        return events

    def _session_context(self, merchant: Merchant) -> dict[str, Any]:
        rng = self._rng
        n = rng.randrange(CUSTOMERS_PER_TENANT)
        has_email = rng.random() < 0.7
        customer = {
            "customer_id": f"c_{n:06d}",
            "email": f"shopper{n}@example.com" if has_email else None,
            "country": _COUNTRIES[n % len(_COUNTRIES)],
            "segment": _SEGMENTS[n % len(_SEGMENTS)],
        }
        device = dict(rng.choice(_DEVICES))
        device["ip"] = f"198.51.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        return {
            "session_id": f"s_{rng.getrandbits(64):016x}",
            "customer": customer,
            "device": device,
            "processing_flags": {"pii_contains": True, "gdpr_consent": rng.random() < 0.8},
        }

    def _funnel(
        self, merchant: Merchant
    ) -> list[tuple[str, list[dict[str, Any]], dict[str, Any] | None]]:
        """(event_type, items, order) of each step the shopper takes."""
        rng = self._rng
        products = merchant.products
        steps: list[tuple[str, list[dict[str, Any]], dict[str, Any] | None]] = []
        steps += [("page_view", [], None)] * rng.randint(1, 3)
        viewed = [rng.choice(products) for _ in range(rng.randint(1, 5))]
        steps += [("product_view", [_line(p, 1)], None) for p in viewed]
        if rng.random() >= 0.35:
            return steps
        cart: list[tuple[Product, int]] = []
        for product in rng.sample(viewed, k=rng.randint(1, len(viewed))):
            quantity = rng.randint(1, 3)
            cart.append((product, quantity))
            steps.append(("add_to_cart", [_line(product, quantity)], None))
        if len(cart) > 1 and rng.random() < 0.1:
            removed = cart.pop(rng.randrange(len(cart)))
            steps.append(("remove_from_cart", [_line(*removed)], None))
        if rng.random() >= 0.6:
            return steps
        lines = [_line(p, q) for p, q in cart]
        steps.append(("checkout_started", lines, None))
        if rng.random() >= 0.7:
            return steps
        order = {
            "order_id": f"o_{rng.getrandbits(64):016x}",
            "total_amount": _money(sum(p.price_cents * q for p, q in cart)),
            "currency": merchant.currency,
            "payment_method": rng.choice(_PAYMENT_METHODS),
        }
        steps.append(("purchase", lines, order))
        if rng.random() < 0.05:
            steps.append(("refund", lines, order))
        return steps
