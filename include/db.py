"""PostgreSQL connections for every component (psycopg 3)."""

from __future__ import annotations

import time

import psycopg

from include.settings import Settings


def connect(settings: Settings, *, autocommit: bool = False) -> psycopg.Connection:
    """Open a connection to the platform database."""
    return psycopg.connect(settings.pg_dsn, autocommit=autocommit, application_name="lakehouse")


def wait_for_postgres(settings: Settings, timeout_s: float = 60.0) -> None:
    """Block until the platform database accepts connections, or raise ``TimeoutError``."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with connect(settings) as conn:
                conn.execute("SELECT 1")
            return
        except psycopg.OperationalError as exc:
            last_error = exc
            time.sleep(0.2)
    raise TimeoutError(
        f"PostgreSQL at {settings.pg_host}:{settings.pg_port} not ready after {timeout_s:.0f} s: "
        f"{last_error}"
    )
