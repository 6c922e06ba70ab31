"""Stored bytes per tenant, recomputed at most once a minute off the event loop."""

from __future__ import annotations

import asyncio
import logging
import time

from deltalake.exceptions import DeltaError

from include.lake.storage import Location
from include.lake.usage import stored_bytes

log = logging.getLogger("lakehouse.api.lake_usage")


class LakeUsage:
    """A cached ``include.lake.usage.stored_bytes``."""

    def __init__(self, lake: Location, archive: Location, max_age_s: float = 60.0) -> None:
        self._lake = lake
        self._archive = archive
        self._max_age_s = max_age_s
        self._value: dict[str, dict[str, int]] = {}
        self._computed_at = float("-inf")
        self._lock = asyncio.Lock()

    async def of(self, tenant_id: str) -> dict[str, int]:
        """Bytes of ``tenant_id`` per store (empty when nothing is stored)."""
        async with self._lock:
            if time.monotonic() - self._computed_at > self._max_age_s:
                try:
                    self._value = await asyncio.to_thread(stored_bytes, self._lake, self._archive)
                    self._computed_at = time.monotonic()
                except (OSError, DeltaError) as exc:  # a file rewritten mid-read, a store down
                    # keep the last value
                    log.warning("lake usage not refreshed", extra={"error": repr(exc)})
        return dict(self._value.get(tenant_id, {}))
