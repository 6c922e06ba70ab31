"""
### erase_customer

The lake half of a GDPR erasure. The API (`DELETE /tenants/{tenant}/customers/{customer}`)
deletes the customer's PostgreSQL rows, records an `erasure_requests` row (`lake_pending`) and
triggers this DAG with one parameter:

| param | what |
| --- | --- |
| `request_id` | the erasure request (a UUID) |

The task `erase` then, as the schema owner:

1. marks the request `lake_running` and reads whom it erases;
2. deletes the customer's rows from silver, bronze, event_items and quarantine (delta-rs
   deletes) and rewrites every archived Parquet file that holds them, manifests included
   (`include/lake/erasure.py`);
3. in one PostgreSQL transaction: records the erased event ids, sweeps the rows a load may have
   inserted meanwhile, marks the request `completed` and forgets the customer id (only its
   SHA-256 stays, in `erased_customers`, so loads and replays skip the customer for good).

When the task fails for good (after its retries) the request is marked `failed` with the error;
its customer id is kept, so triggering the DAG again with the same `request_id` retries it. A
run for a request that already completed is skipped; one for an unknown request fails at once.
Idempotent: a second run erases nothing more. Delta keeps the replaced files for time travel
until `archive_lake`'s vacuum removes them (`LAKEHOUSE_LAKE_VACUUM_RETENTION_HOURS`).
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Context, Param, dag, task

from include.orchestration import DEFAULT_ARGS, START_DATE

UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"


def record_failure(context: Context) -> None:
    """Mark the request ``failed`` with the task's error (runs once the retries are spent)."""
    from uuid import UUID

    from include.db import connect
    from include.settings import get_settings
    from include.warehouse.erasure import fail

    request_id = UUID(str(context["params"]["request_id"]))
    error = context.get("exception")
    detail = f"{type(error).__name__}: {error}" if error is not None else "the erase task failed"
    with connect(get_settings()) as conn:
        fail(conn, request_id, detail)


@dag(
    dag_id="erase_customer",
    description="GDPR erasure of one customer from the lake, the archive and PostgreSQL",
    doc_md=__doc__,
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    # Erasures rewrite the same tables: one at a time avoids commit conflicts between them.
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["lakehouse", "privacy", "lake", "postgres"],
    params={
        "request_id": Param(type="string", pattern=UUID_PATTERN, title="Erasure request id"),
    },
)
def erase_customer() -> None:
    @task(on_failure_callback=record_failure)
    def erase(request_id: str) -> dict[str, Any]:
        """Erase the request's customer from the lake and the archive, then complete it."""
        from uuid import UUID

        from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

        from include.db import connect
        from include.lake.erasure import erase_customer_from_lake
        from include.settings import get_settings
        from include.warehouse.erasure import (
            ErasureAlreadyCompletedError,
            ErasureRequestError,
            complete,
            mark_running,
        )

        settings = get_settings()
        request = UUID(request_id)
        with connect(settings) as conn:
            try:
                target = mark_running(conn, request)
            except ErasureAlreadyCompletedError as error:
                # A second trigger of a finished request (the API retries triggers): no-op.
                raise AirflowSkipException(str(error)) from error
            except ErasureRequestError as error:
                # Unknown, or inconsistent: retrying cannot help.
                raise AirflowFailException(str(error)) from error
            lake = erase_customer_from_lake(
                settings.lake, settings.archive, target.tenant_id, target.customer_id
            )
            sweep = complete(conn, request, lake)
        # Counts only: the customer id never reaches XCom or the logs.
        return {
            "request_id": request_id,
            "tenant_id": target.tenant_id,
            "events": len(lake.event_ids),
            "silver_rows": lake.silver_rows,
            "bronze_rows": lake.bronze_rows,
            "event_items_rows": lake.event_items_rows,
            "quarantine_rows": lake.quarantine_rows,
            "archive_rows": lake.archive_rows,
            "postgres_rows_swept": sweep.rows,
        }

    erase(request_id="{{ params.request_id }}")


erase_customer()
