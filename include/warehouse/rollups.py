"""Rollups the loader keeps next to the events, for fast exact answers of the API."""

from __future__ import annotations

# Width of a session slot. 15 minutes divides every real UTC offset (+05:45, +12:45 ...), so
# hour and day buckets in any time zone are unions of whole slots.
SLOT_MINUTES = 15
SLOT_ORIGIN = "2000-01-01 00:00:00+00"


def slot_of(column: str) -> str:
    """SQL for the start of the 15-minute slot holding the timestamptz ``column``."""
    return f"date_bin('{SLOT_MINUTES} minutes', {column}, timestamptz '{SLOT_ORIGIN}')"


# From the staged events (alias ``s``), one row per (tenant, slot, session, customer); ``keep``
# is the condition on staged rows (erased customers are not rolled up).
SESSION_SLOTS_UPSERT = f"""
INSERT INTO session_slots AS t (tenant_id, slot, session_id, customer_id, purchased)
SELECT s.tenant_id,
       {slot_of("s.event_time")},
       coalesce(s.session_id, ''),
       coalesce(s.customer_customer_id, ''),
       bool_or(s.event_type = 'purchase')
FROM load_staging_events s
WHERE (s.session_id IS NOT NULL OR s.customer_customer_id IS NOT NULL) AND {{keep}}
GROUP BY 1, 2, 3, 4
ON CONFLICT (tenant_id, slot, session_id, customer_id)
DO UPDATE SET purchased = t.purchased OR excluded.purchased
"""

# After SESSION_SLOTS_UPSERT: recompute the activity rows (and counts) of the staged events'
# sessions and customers, per tenant (migration V0006 defines ``refresh_activity_slots``).
ACTIVITY_REFRESH = """
SELECT refresh_activity_slots(
    s.tenant_id,
    coalesce(array_agg(DISTINCT s.session_id) FILTER (WHERE s.session_id IS NOT NULL), '{{}}'),
    coalesce(array_agg(DISTINCT s.customer_customer_id)
             FILTER (WHERE s.customer_customer_id IS NOT NULL), '{{}}'))
FROM load_staging_events s
WHERE {keep}
GROUP BY s.tenant_id
"""
