"""
### maintain_postgres

Daily upkeep of the PostgreSQL analytics tables (`events`, `event_items`):

1. **rotate_partitions**: creates this month's and the next `LAKEHOUSE_PG_PARTITIONS_AHEAD`
   monthly partitions, and drops the partitions whose month is more than
   `LAKEHOUSE_PG_RETENTION_MONTHS` old (the lake keeps the data; `replay` reloads it).
2. **vacuum_analyze**: `VACUUM (ANALYZE)` of both tables, in autocommit mode.
3. **report_sizes**: table and index size of every partition, in the task log.

Safe to run twice or late: every step is idempotent.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from airflow.sdk import dag, task

from include.orchestration import DEFAULT_ARGS, START_DATE

log = logging.getLogger(__name__)


@dag(
    dag_id="maintain_postgres",
    description="VACUUM (ANALYZE), partition rotation and a size report for PostgreSQL",
    doc_md=__doc__,
    schedule="@daily",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["lakehouse", "postgres", "maintenance"],
)
def maintain_postgres() -> None:
    @task
    def rotate_partitions() -> dict[str, Any]:
        """Create the coming partitions, drop the expired ones."""
        from include.db import connect
        from include.settings import get_settings
        from include.warehouse.maintenance import rotate_partitions

        settings = get_settings()
        with connect(settings) as conn:
            rotation = rotate_partitions(
                conn,
                datetime.now(UTC).date(),
                settings.pg_partitions_ahead,
                settings.pg_retention_months,
            )
        log.info("partitions rotated: created %s, dropped %s", rotation.created, rotation.dropped)
        return {"created": rotation.created, "dropped": rotation.dropped}

    @task
    def vacuum_analyze() -> list[str]:
        """VACUUM (ANALYZE) the analytics tables."""
        from include.settings import get_settings
        from include.warehouse.maintenance import vacuum_analyze

        return vacuum_analyze(get_settings().pg_dsn)

    @task
    def report_sizes() -> list[dict[str, Any]]:
        """Log the size of every partition and its indexes."""
        from include.db import connect
        from include.settings import get_settings
        from include.warehouse.maintenance import size_report

        with connect(get_settings()) as conn:
            sizes = size_report(conn)
        for size in sizes:
            log.info(
                "%-28s table %10d bytes  indexes %10d bytes  ~%d rows",
                size.name,
                size.table_bytes,
                size.index_bytes,
                size.rows_estimate,
            )
        return [size.__dict__ for size in sizes]

    rotate_partitions() >> vacuum_analyze() >> report_sizes()


maintain_postgres()
