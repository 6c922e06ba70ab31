"""GDPR erasure: ``DELETE /tenants/{tenant_id}/customers/{customer_id}`` and its progress."""

from __future__ import annotations

import logging
import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Request

from api import distinct
from api.db import Conn
from api.deps import TENANT_PATTERN, Caller, Ctx, resolve_tenant
from api.errors import Problem
from api.models import ErasureOut
from include.privacy import CUSTOMER_HASH_SQL, CUSTOMER_ID_PATTERN, customer_hash
from include.warehouse.distinct import minute_expr

router = APIRouter(tags=["privacy"])
log = logging.getLogger("lakehouse.api.erasure")
ERASE_DAG = "erase_customer"

_REQUEST_COLUMNS = (
    "request_id, tenant_id, status, postgres_rows, lake_rows, archive_rows, dag_run_id, detail, "
    "requested_at, updated_at, completed_at"
)
_ERASE_SQL = f"""
WITH gone AS (
    DELETE FROM events WHERE tenant_id = $1 AND customer_customer_id = $2
    RETURNING event_id, event_time, session_id
), remembered AS (
    INSERT INTO erased_events (tenant_id, event_id) SELECT DISTINCT $1, event_id FROM gone
    ON CONFLICT DO NOTHING
), items AS (
    DELETE FROM event_items i USING gone
    WHERE i.tenant_id = $1 AND i.event_id = gone.event_id
    RETURNING 1
)
SELECT (SELECT count(*) FROM gone) + (SELECT count(*) FROM items) AS rows_deleted,
       (SELECT coalesce(array_agg(DISTINCT session_id), '{{}}') FROM gone
        WHERE session_id IS NOT NULL) AS sessions,
       (SELECT coalesce(array_agg(DISTINCT {minute_expr("event_time")}), '{{}}') FROM gone)
           AS minutes,
       {CUSTOMER_HASH_SQL.format(column="$2::text")} AS hash_check
"""


async def erase_in_postgres(conn: Conn, tenant_id: str, customer_id: str) -> int:
    """Delete the customer's rows and remember the customer; return the rows deleted."""
    hashed = customer_hash(customer_id)
    await conn.execute(
        "INSERT INTO erased_customers (tenant_id, customer_hash) VALUES ($1, $2) "
        "ON CONFLICT DO NOTHING",
        tenant_id,
        hashed,
    )
    row = await conn.fetchrow(_ERASE_SQL, tenant_id, customer_id)
    assert row is not None
    # The loader recognises erased customers by the SQL twin of customer_hash: they must agree.
    if bytes(row["hash_check"]) != hashed:
        raise RuntimeError("customer hash of Python and PostgreSQL differ")
    # The distinct-count bitmaps (issue #16), in the same transaction: exact at commit. (A
    # separate statement: the deletes above are invisible to the rest of their own statement.)
    await distinct.repair(conn, tenant_id, sorted(row["sessions"]), [customer_id], row["minutes"])
    return int(row["rows_deleted"])


async def trigger_lake_erasure(ctx: Ctx, request_id: uuid.UUID) -> None:
    """Start the lake and archive erasure in Airflow; on failure a retry loop tries again."""
    try:
        run_id = await ctx.airflow.trigger(ERASE_DAG, {"request_id": str(request_id)})
    except Exception as exc:  # any failure leaves the request pending, to be retried
        log.warning(
            "erasure not triggered yet", extra={"request_id": str(request_id), "error": repr(exc)}
        )
        async with ctx.db.platform() as conn:  # the retry loop waits a while before the next try
            await conn.execute(
                "UPDATE erasure_requests SET updated_at = now() WHERE request_id = $1", request_id
            )
        return
    async with ctx.db.platform() as conn:
        await conn.execute(
            "UPDATE erasure_requests SET dag_run_id = $2, updated_at = now() WHERE request_id = $1",
            request_id,
            run_id,
        )
    log.info("erasure triggered", extra={"request_id": str(request_id), "dag_run_id": run_id})


@router.delete(
    "/tenants/{tenant_id}/customers/{customer_id}",
    status_code=202,
    summary="Erase a customer (GDPR)",
)
async def erase_customer(
    request: Request,
    ctx: Ctx,
    caller: Caller,
    tenant_id: Annotated[str, Path(pattern=TENANT_PATTERN)],
    customer_id: Annotated[str, Path(pattern=CUSTOMER_ID_PATTERN.pattern)],
) -> ErasureOut:
    """Removes the customer's rows from PostgreSQL at once and starts their erasure from the
    Delta tables and the Parquet archive (Airflow DAG ``erase_customer``). Follow it with
    ``GET /erasures/{request_id}``. Later loads and replays skip the customer for good."""
    tenant = await resolve_tenant(request, ctx, caller, tenant_id)
    request_id = uuid.uuid4()
    async with ctx.db.tenant(tenant) as conn:
        deleted = await erase_in_postgres(conn, tenant, customer_id)
        row = await conn.fetchrow(
            "INSERT INTO erasure_requests (request_id, tenant_id, customer_hash, customer_id, "
            "status, postgres_rows) VALUES ($1, $2, $3, $4, 'lake_pending', $5) "
            f"RETURNING {_REQUEST_COLUMNS}",
            request_id,
            tenant,
            customer_hash(customer_id),
            customer_id,
            deleted,
        )
    log.info(
        "customer erased from postgres",
        extra={"tenant_id": tenant, "request_id": str(request_id), "rows": deleted},
    )
    await trigger_lake_erasure(ctx, request_id)
    return await _request(ctx, request_id, tenant) or ErasureOut(**dict(row or {}))


async def _request(ctx: Ctx, request_id: uuid.UUID, tenant: str | None) -> ErasureOut | None:
    async with ctx.db.platform() as conn:
        row = await conn.fetchrow(
            f"SELECT {_REQUEST_COLUMNS} FROM erasure_requests "
            "WHERE request_id = $1 AND ($2::text IS NULL OR tenant_id = $2)",
            request_id,
            tenant,
        )
    return ErasureOut(**dict(row)) if row else None


@router.get("/erasures/{request_id}", summary="Progress of an erasure request")
async def erasure_status(ctx: Ctx, caller: Caller, request_id: uuid.UUID) -> ErasureOut:
    """Status ``lake_pending`` -> ``lake_running`` -> ``completed`` (or ``failed``).
    A tenant token sees only its own tenant's requests."""
    found = await _request(ctx, request_id, None if caller.is_admin else caller.tenant_id)
    if found is None:
        raise Problem(404, "no such erasure request")
    return found
