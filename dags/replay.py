"""
### replay

Reloads one tenant's date range into PostgreSQL, from the lake (`source=delta`) or from the
Parquet archive (`source=archive`): the disaster-recovery path ("PostgreSQL lost: rebuild it
from the lake"). Trigger it with parameters:

| param | what |
| --- | --- |
| `tenant` | the tenant id |
| `date_from`, `date_to` | the event dates to reload, inclusive (`YYYY-MM-DD`) |
| `source` | `delta` (the hot lake) or `archive` (partitions `archive_lake` moved out) |

Idempotent: rows already in PostgreSQL are skipped (`ON CONFLICT DO NOTHING`), so a replay can
run twice, or over a range that is partly loaded. It shares the load's per-table lock, so it
never interleaves with `load_postgres`; it does not move the load watermark.
"""

from __future__ import annotations

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import DAG, Param

from include.orchestration import DEFAULT_ARGS, START_DATE, job_path
from include.settings import get_settings
from include.tenants import TENANT_ID_PATTERN

settings = get_settings()

with DAG(
    dag_id="replay",
    description="Reload a tenant's date range into PostgreSQL from the lake or the archive",
    doc_md=__doc__,
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["lakehouse", "postgres", "recovery"],
    params={
        "tenant": Param(type="string", pattern=TENANT_ID_PATTERN.pattern, title="Tenant id"),
        "date_from": Param(type="string", format="date", title="First event date"),
        "date_to": Param(type="string", format="date", title="Last event date"),
        "source": Param("delta", enum=["delta", "archive"], title="Read from"),
    },
):
    SparkSubmitOperator(
        task_id="reload_range",
        application=job_path("load", "job.py"),
        conn_id="spark_default",
        name="lakehouse-replay",
        driver_memory=settings.spark_driver_memory,
        application_args=[
            "replay",
            "--tenant",
            "{{ params.tenant }}",
            "--from",
            "{{ params.date_from }}",
            "--to",
            "{{ params.date_to }}",
            "--source",
            "{{ params.source }}",
        ],
    )
