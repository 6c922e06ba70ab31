"""The stream of messages to publish: sessions round-robin over tenants, with injected faults.

Faults are shares of all messages. Each message carries its ``kind`` so that a test (or the
summary) knows exactly what was sent: ``valid`` (a distinct valid event), ``duplicate`` (an
exact resend of an earlier valid event), ``malformed`` (not JSON), ``unsupported_version``
(a schema version no consumer knows) and ``tenant_mismatch`` (a payload naming another tenant).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

import orjson

from generator.catalog import Merchant
from generator.sessions import Event, SessionFactory

VALID = "valid"
DUPLICATE = "duplicate"
MALFORMED = "malformed"
UNSUPPORTED_VERSION = "unsupported_version"
TENANT_MISMATCH = "tenant_mismatch"
KINDS = (VALID, DUPLICATE, MALFORMED, UNSUPPORTED_VERSION, TENANT_MISMATCH)
UNSUPPORTED_SCHEMA_VERSION = 99
_RECENT_FOR_DUPLICATES = 1_000


@dataclass(frozen=True)
class FaultShares:
    """Share (0 to 1) of all messages that carry each fault."""

    duplicate: float = 0.0
    malformed: float = 0.0
    unsupported_version: float = 0.0
    tenant_mismatch: float = 0.0

    def __post_init__(self) -> None:
        shares = (self.duplicate, self.malformed, self.unsupported_version, self.tenant_mismatch)
        if any(s < 0 for s in shares) or sum(shares) >= 1:
            raise ValueError("fault shares must be non-negative and add up to less than 1")


class OutgoingMessage(NamedTuple):
    """One message for one tenant's topic (a tuple: it is built 100,000 times a second)."""

    tenant_id: str
    key: str
    payload: bytes
    kind: str
    event_id: str | None


def message_stream(
    merchants: list[Merchant],
    rng: random.Random,
    factory: SessionFactory,
    faults: FaultShares,
    clock: Callable[[], datetime],
) -> Iterator[OutgoingMessage]:
    """Endless messages; sessions rotate over ``merchants``, each ending at ``clock()``."""
    recent: dict[str, deque[OutgoingMessage]] = {
        m.tenant_id: deque(maxlen=_RECENT_FOR_DUPLICATES) for m in merchants
    }
    cut_duplicate = faults.duplicate
    cut_malformed = cut_duplicate + faults.malformed
    cut_version = cut_malformed + faults.unsupported_version
    cut_mismatch = cut_version + faults.tenant_mismatch
    any_faults = cut_mismatch > 0
    turn = 0
    while True:
        merchant = merchants[turn % len(merchants)]
        turn += 1
        for event in factory.session(merchant, clock()):
            roll = rng.random() if any_faults else 1.0
            tenant = merchant.tenant_id
            if roll < cut_duplicate and recent[tenant]:
                original = rng.choice(recent[tenant])
                yield OutgoingMessage(
                    tenant, original.key, original.payload, DUPLICATE, original.event_id
                )
            elif roll < cut_malformed:
                yield OutgoingMessage(
                    tenant, event["session_id"], _malformed(event, rng), MALFORMED, None
                )
            elif roll < cut_version:
                event["schema_version"] = UNSUPPORTED_SCHEMA_VERSION
                yield OutgoingMessage(
                    tenant,
                    event["session_id"],
                    orjson.dumps(event),
                    UNSUPPORTED_VERSION,
                    event["event_id"],
                )
            elif roll < cut_mismatch:
                event["tenant_id"] = _other_tenant(tenant, merchants, rng)
                yield OutgoingMessage(
                    tenant,
                    event["session_id"],
                    orjson.dumps(event),
                    TENANT_MISMATCH,
                    event["event_id"],
                )
            else:
                message = OutgoingMessage(
                    tenant, event["session_id"], orjson.dumps(event), VALID, event["event_id"]
                )
                if any_faults:
                    recent[tenant].append(message)
                yield message


def _malformed(event: Event, rng: random.Random) -> bytes:
    payload = orjson.dumps(event)
    # A truncated object is never valid JSON: its closing brace is gone.
    return payload[: rng.randint(1, len(payload) - 1)]


def _other_tenant(tenant_id: str, merchants: list[Merchant], rng: random.Random) -> str:
    others = [m.tenant_id for m in merchants if m.tenant_id != tenant_id]
    return rng.choice(others) if others else "intruder_tenant"
