"""Per-tenant API request counts, kept in memory and flushed to ``api_usage`` every few seconds.

Counting every request with its own UPSERT would put a write on every read; a counter lost in
a crash costs a few seconds of cost-allocation figures, never analytics data.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import UTC, date, datetime

from api.db import Database

log = logging.getLogger("lakehouse.api.usage")


class RequestCounter:
    """Requests per (tenant, UTC day) since the last flush."""

    def __init__(self) -> None:
        self._pending: Counter[tuple[str, date]] = Counter()

    def count(self, tenant_id: str) -> None:
        """Count one request against ``tenant_id``."""
        self._pending[(tenant_id, datetime.now(UTC).date())] += 1

    async def flush(self, db: Database) -> int:
        """Add the pending counts to ``api_usage``; return how many requests were written."""
        pending, self._pending = self._pending, Counter()
        written = 0
        try:
            for (tenant_id, day), requests in pending.items():
                async with db.tenant(tenant_id) as conn:
                    await conn.execute(
                        "INSERT INTO api_usage AS u (tenant_id, day, requests) VALUES ($1, $2, $3) "
                        "ON CONFLICT (tenant_id, day) DO UPDATE SET "
                        "requests = u.requests + excluded.requests",
                        tenant_id,
                        day,
                        requests,
                    )
                written += requests
                pending[(tenant_id, day)] = 0
        finally:
            # Whatever did not reach the database is counted again next time.
            self._pending.update({key: n for key, n in pending.items() if n})
        return written
