"""The API's PostgreSQL pool: connect with backoff, and one tenant per transaction.

The API connects as ``lakehouse_api``, a role that owns no table, so the row-level security
policies of the migrations always apply: inside :meth:`Database.tenant` only the named
tenant's rows exist, whatever a query forgets to filter.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from include.settings import Settings

Conn: TypeAlias = "PoolConnectionProxy[asyncpg.Record] | asyncpg.Connection[asyncpg.Record]"

log = logging.getLogger("lakehouse.api.db")

# Errors that mean "the database is not reachable now", as opposed to a bad query.
CONNECTION_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.InterfaceError,
    asyncio.TimeoutError,
)
_RETRY_CONNECT: tuple[type[Exception], ...] = (*CONNECTION_ERRORS, asyncpg.InvalidPasswordError)


class DatabaseUnavailableError(RuntimeError):
    """The pool is not connected (yet, or any more)."""


class Database:
    """An asyncpg pool that (re)connects in the background with exponential backoff."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._pool: asyncpg.Pool | None = None
        self._connected = asyncio.Event()

    @property
    def connected(self) -> bool:
        """Whether the pool exists (its connections may still fail: see ``ping``)."""
        return self._pool is not None

    async def connect_forever(self, first_delay_s: float = 0.5, max_delay_s: float = 10.0) -> None:
        """Create the pool, retrying with exponential backoff until it succeeds."""
        delay, attempt = first_delay_s, 0
        while self._pool is None:
            attempt += 1
            try:
                self._pool = await asyncpg.create_pool(
                    self._settings.api_pg_dsn,
                    min_size=1,
                    max_size=self._settings.api_pool_size,
                    command_timeout=30,
                    server_settings={
                        "application_name": "lakehouse-api",
                        "TimeZone": "UTC",
                        "statement_timeout": "15000",
                        # A generic plan of the /metrics statements cost 3x the custom one.
                        "plan_cache_mode": "force_custom_plan",
                    },
                )
            except _RETRY_CONNECT as exc:
                log.warning(
                    "database not reachable, retrying",
                    extra={"attempt": attempt, "retry_in_s": delay, "error": repr(exc)},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, max_delay_s)
        self._connected.set()
        log.info("database pool ready", extra={"attempts": attempt})

    async def wait_connected(self, timeout_s: float) -> None:
        """Wait until the pool exists, or raise ``TimeoutError``."""
        await asyncio.wait_for(self._connected.wait(), timeout_s)

    async def close(self) -> None:
        """Close every connection."""
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    def _require_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise DatabaseUnavailableError("the database is not connected yet")
        return self._pool

    @asynccontextmanager
    async def platform(self) -> AsyncIterator[Conn]:
        """A connection in a transaction with no tenant: tenant data reads as empty."""
        async with self._require_pool().acquire() as conn, conn.transaction():
            yield conn

    @asynccontextmanager
    async def tenant(self, tenant_id: str, *, timezone: str = "UTC") -> AsyncIterator[Conn]:
        """A connection in a transaction that sees only ``tenant_id``'s rows."""
        async with self._require_pool().acquire() as conn, conn.transaction():
            await conn.execute(
                "SELECT set_config('lakehouse.tenant_id', $1, true), "
                "set_config('TimeZone', $2, true), set_config('work_mem', $3, true)",
                tenant_id,
                timezone,
                self._settings.api_work_mem,
            )
            yield conn

    async def fetchrow(self, query: str, *args: object) -> asyncpg.Record | None:
        """One statement outside a transaction block, with no tenant (platform tables)."""
        async with self._require_pool().acquire() as conn:
            return await conn.fetchrow(query, *args)

    async def ping(self) -> None:
        """Run ``SELECT 1``; raises when the database is unreachable."""
        async with self._require_pool().acquire(timeout=5) as conn:
            await conn.fetchval("SELECT 1")
