"""Seeded random micro-batches in ``jobs.stream.validate.OUTPUT_SCHEMA``, made to break row
shaping: duplicate (tenant, event id) keys, nulls where the schema allows them, several topics
with multi-digit ledgers and entries (string order differs from numeric order), quarantined
rows with and without a tenant, publish times a little in the future, strings CSV must quote.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pyarrow as pa

from jobs.stream.validate import ITEM_TYPE, OUTPUT_SCHEMA, QUARANTINED, REASONS, VALID

TOPICS = [f"persistent://public/default/t{k}.events" for k in range(4)]
TENANTS = ["alpha", "beta", "gamma_3", 'odd,"tenant"\nname', "unknown", ""]
EVENT_TYPES = ["page_view", "add_to_cart", "purchase", "", None]
_BASE = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


def _maybe(rng: random.Random, share: float, value: object) -> object:
    return None if rng.random() < share else value


def random_batch(
    rng: random.Random, rows: int, *, now: datetime = _BASE, distinct_events: int | None = None
) -> pa.Table:
    """``rows`` random validated rows; about one in three repeats an earlier event key."""
    events = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(distinct_events or rows)]
    columns: dict[str, list[object]] = {name: [] for name in OUTPUT_SCHEMA.names}
    for _ in range(rows):
        valid = rng.random() < 0.8
        topic = rng.randrange(len(TOPICS))
        row: dict[str, object] = {
            "status": VALID if valid else QUARANTINED,
            "reason": None if valid else _maybe(rng, 0.1, rng.choice(REASONS)),
            "topic": TOPICS[topic],
            "topic_tenant": _maybe(rng, 0.1, TENANTS[topic]),
            "message_id": (
                f"{rng.choice([1, 9, 10, 123, 1000])}:{rng.randrange(0, 2_000)}:"
                f"{rng.choice([-1, 0, 1, 9, 11])}"
            ),
            # Mostly past; some up to 5 s ahead of now (clock skew).
            "publish_time": now - timedelta(microseconds=rng.randrange(-5_000_000, 600_000_000)),
            "ingest_time": now - timedelta(microseconds=rng.randrange(0, 2 * 86_400_000_000)),
            "key": _maybe(rng, 0.2, f"s-{rng.randrange(100)}"),
            "value": b"{}",
            "schema_version": rng.choice([1, 2]),
        }
        if valid or rng.random() < 0.2:  # a quarantined row may carry parsed fields too
            row |= {
                "tenant_id": _maybe(rng, 0.02, rng.choice(TENANTS)),
                "event_id": _maybe(rng, 0.02, rng.choice(events)),
                "event_type": rng.choice(EVENT_TYPES),
                "event_time": _maybe(
                    rng,
                    0.05,
                    now - timedelta(microseconds=rng.randrange(-60_000_000, 3 * 86_400_000_000)),
                ),
                "order_total_amount": _maybe(
                    rng,
                    0.3,
                    rng.choice(
                        [
                            Decimal(rng.randrange(-(10**6), 10**8)) / 100,
                            Decimal("0.00"),
                            Decimal("9999999999999999.99"),
                            Decimal("-0.01"),
                        ]
                    ),
                ),
                "items": rng.choice(
                    [
                        None,
                        [],
                        [
                            {
                                "line_number": n,
                                "sku": f"sku-{rng.randrange(50)}",
                                "category": _maybe(rng, 0.3, "shoes"),
                                "quantity": rng.randrange(1, 10_001),
                                "unit_price": Decimal(rng.randrange(1, 10**6)) / 100,
                            }
                            for n in range(1, rng.randrange(1, 6))
                        ],
                    ]
                ),
            }
        for name in OUTPUT_SCHEMA.names:
            columns[name].append(row.get(name))
    return pa.table(
        {
            name: pa.array(
                columns[name], type=ITEM_TYPE if name == "items" else OUTPUT_SCHEMA.field(name).type
            )
            for name in OUTPUT_SCHEMA.names
        },
        schema=OUTPUT_SCHEMA,
    )


def fresh_keys(rng: random.Random, table: pa.Table, share: float = 0.7) -> set[tuple[str, str]]:
    """A random ``share`` of the valid rows' (tenant, event id) keys, as PostgreSQL's
    ``stream_event_keys`` would return them (no nulls)."""
    keys = {
        (t, e)
        for t, e, s in zip(
            table.column("tenant_id").to_pylist(),
            table.column("event_id").to_pylist(),
            table.column("status").to_pylist(),
            strict=True,
        )
        if s == VALID and t is not None and e is not None
    }
    return {k for k in sorted(keys) if rng.random() < share}
