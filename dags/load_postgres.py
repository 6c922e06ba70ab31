"""
### load_postgres

Loads what the lake's `silver` and `event_items` Delta tables gained since the last load into
the PostgreSQL analytics tables `events` and `event_items`.

- **Schedule**: every minute by default (`LAKEHOUSE_LOAD_SCHEDULE`, cron, UTC), and whenever
  the silver Asset is updated.
- **How**: the task is a client of the platform's long-lived Spark Connect server (connection
  `spark_connect_default`), so a run starts no JVM. It reads the watermark (the last Delta
  version loaded) and the Delta files added after it; when there are any, the server's
  workers `COPY` them into an unlogged staging table, then one transaction inserts them with
  `ON CONFLICT DO NOTHING` on (`tenant_id`, `event_id`, ...) and moves the watermark. A run
  with nothing new never connects to Spark.
- **Guarantees**: running it twice moves nothing the second time; a crash between any two steps
  (of the task, or of the Spark Connect server) is repaired by the next run, which stages the
  same files again. Runs never overlap.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG, AssetOrTimeSchedule, CronTriggerTimetable, task

from include.orchestration import (
    DEFAULT_ARGS,
    EVENT_ITEMS_TABLE,
    EVENTS_TABLE,
    SILVER,
    START_DATE,
    spark_connect_url,
)
from include.settings import get_settings

settings = get_settings()


@task(task_id="load_lake_into_postgres", outlets=[EVENTS_TABLE, EVENT_ITEMS_TABLE])
def load_lake_into_postgres() -> list[dict[str, Any]]:
    """Run the load job on the Spark Connect server; return one summary per table."""
    # Imported here, when the task runs: parsing this file imports neither Spark nor jobs/.
    from jobs.load.job import load

    return load(remote=spark_connect_url())


with DAG(
    dag_id="load_postgres",
    description="Incremental load of silver and event_items into PostgreSQL",
    doc_md=__doc__,
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable(settings.load_schedule, timezone="UTC"), assets=[SILVER]
    ),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["lakehouse", "load", "postgres"],
):
    load_lake_into_postgres()
