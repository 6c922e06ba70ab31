"""One-shot init of the docker-compose deployment (the ``migrate`` service).

Waits for PostgreSQL, creates the platform database and Airflow's ``airflow`` database if
missing, applies the schema migrations and sets the API role's password: what ``make run`` does
for the embedded PostgreSQL. Idempotent; settings come from ``LAKEHOUSE_*``::

    python docker/migrate.py
"""

from __future__ import annotations

import logging

from include.db import connect, wait_for_postgres
from include.embedded.postgres import ensure_database
from include.log import configure_logging
from include.settings import get_settings
from include.sql.migrate import apply_migrations
from include.sql.roles import enable_api_role

AIRFLOW_DATABASE = "airflow"
log = logging.getLogger("lakehouse.migrate")


def main() -> int:
    """Prepare PostgreSQL for every other service; exit 0 when done."""
    settings = get_settings()
    configure_logging(settings.log_level)
    wait_for_postgres(settings.model_copy(update={"pg_database": "postgres"}), timeout_s=120)
    ensure_database(settings)
    ensure_database(settings, AIRFLOW_DATABASE)
    with connect(settings) as conn:
        applied = apply_migrations(conn)
        enable_api_role(conn, settings)
    log.info("migrations", extra={"applied_now": applied})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
