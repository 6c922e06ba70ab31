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
never interleaves with `load_postgres`; it does not move the load watermark. It runs on the
platform's Spark Connect server (connection `spark_connect_default`), like the load.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from airflow.sdk import DAG, Param, get_current_context, task

from include.orchestration import DEFAULT_ARGS, START_DATE, spark_connect_url
from include.tenants import TENANT_ID_PATTERN


@task(task_id="reload_range")
def reload_range() -> list[dict[str, Any]]:
    """Run the replay on the Spark Connect server; return one summary per table."""
    # Imported here, when the task runs: parsing this file imports neither Spark nor jobs/.
    from jobs.load.job import replay

    params = get_current_context()["params"]
    return replay(
        params["tenant"],
        date.fromisoformat(params["date_from"]),
        date.fromisoformat(params["date_to"]),
        params["source"],
        remote=spark_connect_url(),
    )


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
    reload_range()
