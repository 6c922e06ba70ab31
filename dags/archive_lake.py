"""
### archive_lake

Daily: moves lake partitions older than the hot retention (`LAKEHOUSE_LAKE_HOT_DAYS`) to a
Parquet archive, then keeps every Delta table healthy.

1. **archive** (one task per table: bronze, silver, event_items, quarantine): each old
   partition is written to `<state>/archive/<table>/<partition>/part-00000.parquet` (zstd) with
   a manifest entry (row count, SHA-256, Delta version); the file is read back and checked
   against the manifest, and **only then** is the partition deleted from the Delta table, at
   the version that was archived (if late rows were appended meanwhile, that delete is refused
   and the retry archives them too).
2. **maintain** (per table): `optimize` compaction, a checkpoint, expired log cleanup, and
   `vacuum` of files unreferenced for `LAKEHOUSE_LAKE_VACUUM_RETENTION_HOURS`.

Safe to run twice: an archived partition is no longer in the lake; a partition archived but
not yet deleted (a crash in between) is archived again and then deleted. `replay` with
`source=archive` brings archived data back into PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import dag, task

from include.lake.tables import LAKE_TABLES
from include.orchestration import DEFAULT_ARGS, EVENT_ITEMS_LAKE, SILVER, START_DATE

LAKE_TABLE_NAMES = [table.name for table in LAKE_TABLES]


@dag(
    dag_id="archive_lake",
    description="Archive old lake partitions to Parquet, verified, then Delta maintenance",
    doc_md=__doc__,
    schedule="@daily",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["lakehouse", "lake", "maintenance"],
)
def archive_lake() -> None:
    @task(outlets=[SILVER, EVENT_ITEMS_LAKE])
    def archive(table: str) -> dict[str, Any]:
        """Archive, verify, then delete the table's partitions past the hot retention."""
        from include.lake.archive import archive_old_partitions
        from include.settings import get_settings

        settings = get_settings()
        before = datetime.now(UTC).date() - timedelta(days=settings.lake_hot_days)
        moved = archive_old_partitions(settings.lake, table, settings.archive, before)
        return {
            "table": table,
            "before": before.isoformat(),
            "partitions": len(moved),
            "rows": sum(entry.rows for entry in moved),
        }

    @task
    def maintain(summary: dict[str, Any]) -> dict[str, Any]:
        """Compact, checkpoint, clean the log and vacuum the table."""
        from include.lake.archive import maintain
        from include.settings import get_settings

        settings = get_settings()
        return {
            "table": summary["table"],
            **maintain(settings.lake, summary["table"], settings.lake_vacuum_retention_hours),
        }

    maintain.expand(summary=archive.expand(table=LAKE_TABLE_NAMES))


archive_lake()
