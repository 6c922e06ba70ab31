"""GDPR erasure on the PostgreSQL side: what loads must skip once a customer is erased."""

from __future__ import annotations

from include.privacy import CUSTOMER_HASH_SQL

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
