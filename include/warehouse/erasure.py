"""GDPR erasure on the PostgreSQL side: what loads must skip once a customer is erased, and
the steps of an erasure request after the API's part (the ``erase_customer`` DAG runs them as
the schema owner, so row-level security does not apply).

A request's life: the API deletes the customer's PostgreSQL rows and inserts the request
(``lake_pending``); ``mark_running`` (``lake_running``); the lake erasure
(``include.lake.erasure``); ``complete`` (``completed``, the customer id forgotten) or ``fail``
(``failed``, the customer id kept for a retry).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING
from uuid import UUID

import psycopg
from psycopg.pq import TransactionStatus

from include.privacy import CUSTOMER_HASH_SQL, customer_hash
from include.warehouse import distinct
from include.warehouse.distinct import minute_expr

if TYPE_CHECKING:
    # Only a type here: the loader and the API import this module without the lake libraries.
    from include.lake.erasure import LakeErasure

log = logging.getLogger(__name__)

# Staged rows (alias ``s``) that belong to an erased customer; loads and replays skip them, so
# erased data never comes back from the lake or the archive.
ERASED_ROWS: dict[str, str] = {
    "events": (
        "EXISTS (SELECT 1 FROM erased_customers e WHERE e.tenant_id = s.tenant_id AND "
        f"e.customer_hash = {CUSTOMER_HASH_SQL.format(column='s.customer_customer_id')})"
    ),
    "event_items": (
        "EXISTS (SELECT 1 FROM erased_events e WHERE e.tenant_id = s.tenant_id AND "
        "e.event_id = s.event_id)"
    ),
}

# First in a load's commit of ``events``: the staged events of erased customers leave the
# staging table (so the statements after it need no filter: the customer hash is computed for
# every staged row once, not once per statement), are remembered by id, and any item lines of
# them already loaded are deleted. Item lines carry no customer id, so without this the lines
# of an erased customer's event that reached the lake after the erasure would be loaded.
FORGET_SKIPPED_EVENTS = f"""
WITH skipped AS (
    DELETE FROM load_staging_events s WHERE {ERASED_ROWS["events"]}
    RETURNING s.tenant_id, s.event_id
), distinct_skipped AS (
    SELECT DISTINCT tenant_id, event_id FROM skipped
), remembered AS (
    INSERT INTO erased_events (tenant_id, event_id)
    SELECT tenant_id, event_id FROM distinct_skipped
    ON CONFLICT DO NOTHING
)
DELETE FROM event_items i USING distinct_skipped k
WHERE i.tenant_id = k.tenant_id AND i.event_id = k.event_id
"""


class ErasureRequestError(LookupError):
    """An erasure request that cannot run: unknown, or already completed."""


class UnknownErasureRequestError(ErasureRequestError):
    """No erasure request has this id."""


class ErasureAlreadyCompletedError(ErasureRequestError):
    """The request completed before: its customer id is gone, there is nothing left to run."""


@dataclass(frozen=True)
class ErasureTarget:
    """Whom a running erasure request erases."""

    tenant_id: str
    customer_id: str


@dataclass(frozen=True)
class Sweep:
    """PostgreSQL rows ``complete`` deleted (a load between the API's delete and the lake's)."""

    events: int
    event_items: int

    @property
    def rows(self) -> int:
        """All rows the sweep deleted."""
        return self.events + self.event_items


def _require_idle(conn: psycopg.Connection) -> None:
    # conn.transaction() inside an open transaction is only a savepoint, and nothing would be
    # committed when it ends: these steps must commit on their own.
    if conn.info.transaction_status != TransactionStatus.IDLE:
        raise RuntimeError("erasure steps need a connection with no transaction open")


def mark_running(conn: psycopg.Connection, request_id: UUID) -> ErasureTarget:
    """Set request ``request_id`` to ``lake_running`` and return whom it erases (committed).

    Raises ``UnknownErasureRequestError`` for an unknown request and
    ``ErasureAlreadyCompletedError`` for a completed one (its customer id is gone then). A
    ``failed`` request runs again.
    """
    _require_idle(conn)
    with conn.transaction():
        row = conn.execute(
            "SELECT tenant_id, customer_id, customer_hash, status FROM erasure_requests "
            "WHERE request_id = %s FOR UPDATE",
            (request_id,),
        ).fetchone()
        if row is None:
            raise UnknownErasureRequestError(f"no erasure request {request_id}")
        tenant_id, customer_id, hashed, status = row
        if customer_id is None:
            raise ErasureAlreadyCompletedError(
                f"erasure request {request_id} is {status} and no longer holds a customer id"
            )
        # Loads skip customers by this hash: a request whose hash and id disagree would erase
        # the lake and let PostgreSQL take the customer back. Refuse before touching anything.
        if bytes(hashed) != customer_hash(customer_id):
            raise ErasureRequestError(f"erasure request {request_id}: hash and id disagree")
        conn.execute(
            "UPDATE erasure_requests SET status = 'lake_running', detail = NULL, "
            "updated_at = now() WHERE request_id = %s",
            (request_id,),
        )
    log.info(
        "erasure request running", extra={"request_id": str(request_id), "tenant_id": tenant_id}
    )
    return ErasureTarget(tenant_id=tenant_id, customer_id=customer_id)


_SWEEP_EVENTS = f"""
    WITH gone AS (
        DELETE FROM events AS s
        WHERE s.tenant_id = %(tenant)s AND {ERASED_ROWS["events"]}
        RETURNING s.event_id, s.event_time, s.session_id, s.customer_customer_id
    ), recorded AS (
        INSERT INTO erased_events (tenant_id, event_id)
        SELECT DISTINCT %(tenant)s, event_id FROM gone
        ON CONFLICT DO NOTHING
    )
    SELECT count(*),
           coalesce(array_agg(DISTINCT {minute_expr("event_time")}), '{{}}'),
           coalesce(array_agg(DISTINCT session_id) FILTER (WHERE session_id IS NOT NULL), '{{}}'),
           coalesce(array_agg(DISTINCT customer_customer_id)
                    FILTER (WHERE customer_customer_id IS NOT NULL), '{{}}')
    FROM gone
"""


def complete(conn: psycopg.Connection, request_id: UUID, lake: LakeErasure) -> Sweep:
    """Finish request ``request_id`` after the lake erasure, in one transaction.

    Records the lake's event ids in ``erased_events``; sweeps PostgreSQL again, because a load
    may have inserted the customer's rows between the API's delete and the lake erasure (the
    tenant's ``events`` of every erased customer, by hash; ``event_items`` of every erased
    event, and the distinct-count bitmaps of what they held); then sets the request
    ``completed`` with the lake and archive row counts, adds the swept rows to
    ``postgres_rows``, and forgets the
    customer id (only its hash stays).
    """
    _require_idle(conn)
    with conn.transaction():
        row = conn.execute(
            "SELECT tenant_id, customer_id, customer_hash FROM erasure_requests "
            "WHERE request_id = %s FOR UPDATE",
            (request_id,),
        ).fetchone()
        if row is None:
            raise UnknownErasureRequestError(f"no erasure request {request_id}")
        tenant_id, customer_id, hashed = row
        if customer_id is None:
            raise ErasureAlreadyCompletedError(f"erasure request {request_id} is already completed")
        if bytes(hashed) != customer_hash(customer_id):
            raise ErasureRequestError(f"erasure request {request_id}: hash and id disagree")
        # The API inserted it; a request written by other means still must stop future loads.
        conn.execute(
            "INSERT INTO erased_customers (tenant_id, customer_hash) VALUES (%s, %s) "
            "ON CONFLICT DO NOTHING",
            (tenant_id, hashed),
        )
        conn.execute(
            "INSERT INTO erased_events (tenant_id, event_id) "
            "SELECT %s, unnest(%s::uuid[]) ON CONFLICT DO NOTHING",
            (tenant_id, list(lake.event_ids)),
        )
        swept = conn.execute(_SWEEP_EVENTS, {"tenant": tenant_id}).fetchone()
        events = _count(swept)
        assert swept is not None
        items = conn.execute(
            f"DELETE FROM event_items AS s WHERE s.tenant_id = %s AND {ERASED_ROWS['event_items']}",
            (tenant_id,),
        ).rowcount
        # Distinct-count bitmaps (issue #16): the swept events' keys, where they were.
        distinct.repair_sync(
            conn, tenant_id, sorted(set(swept[2])), sorted(set(swept[3]) | {customer_id}), swept[1]
        )
        distinct.run_sync(conn, distinct.FORGET_CUSTOMERS, tenant_id, [customer_id])
        sweep = Sweep(events=events, event_items=items)
        conn.execute(
            "UPDATE erasure_requests SET status = 'completed', customer_id = NULL, detail = NULL, "
            "postgres_rows = postgres_rows + %s, lake_rows = %s, archive_rows = %s, "
            "completed_at = now(), updated_at = now() WHERE request_id = %s",
            (sweep.rows, lake.lake_rows, lake.archive_rows, request_id),
        )
    log.info(
        "erasure request completed",
        extra={
            "request_id": str(request_id),
            "tenant_id": tenant_id,
            "lake_rows": lake.lake_rows,
            "archive_rows": lake.archive_rows,
            "swept_events": sweep.events,
            "swept_event_items": sweep.event_items,
        },
    )
    return sweep


def fail(conn: psycopg.Connection, request_id: UUID, detail: str) -> None:
    """Set request ``request_id`` to ``failed`` with ``detail`` (committed).

    The customer id stays, so a new run of the DAG can retry; a completed request is left
    as it is.
    """
    _require_idle(conn)
    with conn.transaction():
        conn.execute(
            "UPDATE erasure_requests SET status = 'failed', detail = %s, updated_at = now() "
            "WHERE request_id = %s AND status <> 'completed'",
            (detail[:2000], request_id),
        )
    log.warning("erasure request failed", extra={"request_id": str(request_id)})


def _count(row: tuple[object, ...] | None) -> int:
    assert row is not None
    value = row[0]
    assert isinstance(value, int)
    return value
