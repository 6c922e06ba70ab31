"""Login credentials of the database roles the migrations create (passwords never live in SQL)."""

from __future__ import annotations

import psycopg
from psycopg import sql

from include.settings import Settings

API_ROLE = "lakehouse_api"


def enable_api_role(conn: psycopg.Connection, settings: Settings) -> None:
    """Let the API's role log in with the configured password (idempotent; needs CREATEROLE)."""
    conn.execute(
        sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD {}").format(
            sql.Identifier(API_ROLE), sql.Literal(settings.api_pg_password.get_secret_value())
        )
    )
    conn.commit()
