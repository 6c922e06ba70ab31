"""The /metrics body rendered by orjson from JSON-ready values is byte for byte what pydantic's
``MetricsResponse`` makes of the same answer (the documented response model), on seeded
random answers: money, tiny and round rates, empty buckets, offsets and UTC."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

from api.analytics import assemble, iso, render
from api.models import MetricsResponse


def _answer(rng: random.Random) -> dict[str, object]:
    start = datetime(2026, 3, 1, tzinfo=UTC) + timedelta(minutes=rng.randrange(100_000))
    buckets = [start + timedelta(hours=h) for h in range(rng.randrange(1, 60))]
    rows = []
    for b in buckets:
        if rng.random() < 0.3:
            continue
        types = sorted(rng.sample(["page_view", "purchase", "refund", "add_to_cart"], 3))
        events = [rng.randrange(1, 10_000) for _ in types]
        orders = events[types.index("purchase")] if "purchase" in types else 0
        rows.append(
            (
                b,
                types,
                events,
                sum(events),
                orders,
                Decimal(rng.randrange(0, 10**7)).scaleb(-2),  # numeric(20, 2)
                Decimal(rng.choice([0, rng.randrange(0, 10**5)])).scaleb(-2),
                rng.randrange(0, 500),
            )
        )
    counts = []
    for _ in buckets:
        sessions = rng.choice([0, 1, 3, 7, 10**6, rng.randrange(100_000)])
        counts.append((sessions, rng.randrange(0, sessions + 1), rng.randrange(0, 5_000)))
    series, totals = assemble(buckets, rows, counts, (10**7, 1, 42))
    offset = rng.choice(
        [UTC, timezone(timedelta(hours=5, minutes=45)), timezone(-timedelta(hours=3))]
    )
    return {
        "tenant_id": "acme_shop",
        "start": iso(start.astimezone(offset)),
        "end": iso((buckets[-1] + timedelta(hours=1)).astimezone(offset)),
        "granularity": "hour",
        "timezone": "UTC",
        "currency": "EUR",
        "series": series,
        "totals": totals,
        "freshness": {
            "newest_event_time": iso(
                start + timedelta(seconds=rng.randrange(10**6), microseconds=rng.randrange(10**6))
            ),
            "speed_layer_updated_at": None,
            "batch_loaded_at": iso(start),
        },
    }


def test_rendered_bytes_equal_pydantic_serialization() -> None:
    rng = random.Random(16)
    for _ in range(300):
        answer = _answer(rng)
        assert render(answer) == MetricsResponse.model_validate(answer).model_dump_json().encode()
