"""A response cache for ``/metrics``: answers by request, valid while their data is unchanged.

Every writer of what ``/metrics`` reads notifies channel ``lakehouse_data`` at commit with the
tenant whose answers changed, or ``*`` for every tenant (triggers of migration V0007: the
stream's minute and slot sums, the distinct-count pieces, erasures, the freshness sources,
the tenants). One connection per worker LISTENs; a notification drops the tenant's answers
and moves its generation on. An answer is stored only if its tenant's generation did not move
while it was computed, so an answer read from a snapshot older than a commit never outlives
that commit's notification. While the listening connection is down nothing is served from or
stored in the cache (and it is flushed), because notifications may be missed meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Hashable
from functools import partial
from typing import Any

import asyncpg

CHANNEL = "lakehouse_data"
ALL = "*"
log = logging.getLogger("lakehouse.api.cache")


class ResponseCache:
    """Least recently used answers up to ``max_bytes``, by tenant and request."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str, Hashable], bytes] = OrderedDict()
        self._bytes = 0
        self._generation: dict[str, int] = {}
        self._epoch = 0  # moves on every flush and every '*'
        self.listening = False
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        """Whether answers may be served and stored now."""
        return self.max_bytes > 0 and self.listening

    def version(self, tenant: str) -> tuple[int, int]:
        """The data version of ``tenant`` now (take it before reading the data)."""
        return self._epoch, self._generation.get(tenant, 0)

    def get(self, tenant: str, key: Hashable) -> bytes | None:
        """The cached answer, if any."""
        if not self.enabled:
            return None
        found = self._entries.get((tenant, key))
        if found is None:
            self.misses += 1
            return None
        self._entries.move_to_end((tenant, key))
        self.hits += 1
        return found

    def put(self, tenant: str, key: Hashable, version: tuple[int, int], body: bytes) -> None:
        """Keep ``body`` unless the tenant's data changed since ``version`` was taken."""
        if not self.enabled or version != self.version(tenant) or len(body) > self.max_bytes:
            return
        old = self._entries.pop((tenant, key), None)
        if old is not None:
            self._bytes -= len(old)
        self._entries[(tenant, key)] = body
        self._bytes += len(body)
        while self._bytes > self.max_bytes:
            _, dropped = self._entries.popitem(last=False)
            self._bytes -= len(dropped)

    def invalidate(self, tenant: str) -> None:
        """Drop ``tenant``'s answers (every answer for ``*``)."""
        if tenant == ALL:
            self.flush()
            return
        self._generation[tenant] = self._generation.get(tenant, 0) + 1
        for key in [k for k in self._entries if k[0] == tenant]:
            self._bytes -= len(self._entries.pop(key))

    def flush(self) -> None:
        """Drop every answer."""
        self._epoch += 1
        self._entries.clear()
        self._bytes = 0

    @property
    def size_bytes(self) -> int:
        """Bytes of the cached answers."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)


def _set(event: asyncio.Event, _conn: Any) -> None:
    event.set()


async def listen_forever(
    dsn: str, cache: ResponseCache, *, check_s: float = 2.0, max_delay_s: float = 10.0
) -> None:
    """LISTEN for data changes and keep ``cache`` in step; reconnect with backoff.

    A lost connection (seen by its termination callback or a failed liveness check every
    ``check_s``) flushes the cache and disables it until listening again."""
    delay = 0.5
    while True:
        conn: asyncpg.Connection[asyncpg.Record] | None = None
        lost = asyncio.Event()
        try:
            conn = await asyncpg.connect(dsn, server_settings={"application_name": "api-cache"})
            conn.add_termination_listener(partial(_set, lost))
            await conn.add_listener(
                CHANNEL, lambda _c, _pid, _channel, payload: cache.invalidate(str(payload))
            )
            cache.flush()  # what changed while not listening is unknown
            cache.listening = True
            delay = 0.5
            log.info("cache listening", extra={"channel": CHANNEL})
            while not lost.is_set():
                try:
                    await asyncio.wait_for(lost.wait(), check_s)
                except TimeoutError:
                    await asyncio.wait_for(conn.execute("SELECT 1"), check_s)
            raise ConnectionError("listening connection terminated")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning(
                "cache listener lost, cache disabled",
                extra={"error": repr(exc), "retry_in_s": delay},
            )
        finally:
            cache.listening = False
            cache.flush()
            if conn is not None and not conn.is_closed():
                conn.terminate()
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_delay_s)
