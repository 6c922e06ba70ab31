"""
### load_postgres

Loads what the lake's `silver` and `event_items` Delta tables gained since the last load into
the PostgreSQL analytics tables `events` and `event_items`.

- **Schedule**: every minute by default (`LAKEHOUSE_LOAD_SCHEDULE`, cron, UTC), and whenever
  the silver Asset is updated.
- **How**: a `SparkSubmitOperator` runs `jobs/load/job.py`: Spark reads the Delta files added
  after the watermark (the last Delta version loaded), executors `COPY` them into an unlogged
  staging table, then one transaction inserts them with `ON CONFLICT DO NOTHING` on
  (`tenant_id`, `event_id`, ...) and moves the watermark.
- **Guarantees**: running it twice moves nothing the second time; a crash between any two steps
  is repaired by the next run, which stages the same files again. Runs never overlap.
"""

from __future__ import annotations

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import DAG, AssetOrTimeSchedule, CronTriggerTimetable

from include.orchestration import (
    DEFAULT_ARGS,
    EVENT_ITEMS_TABLE,
    EVENTS_TABLE,
    SILVER,
    START_DATE,
    job_path,
)
from include.settings import get_settings

settings = get_settings()

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
    SparkSubmitOperator(
        task_id="load_lake_into_postgres",
        application=job_path("load", "job.py"),
        conn_id="spark_default",
        name="lakehouse-load",
        application_args=["load"],
        driver_memory=settings.spark_driver_memory,
        outlets=[EVENTS_TABLE, EVENT_ITEMS_TABLE],
    )
