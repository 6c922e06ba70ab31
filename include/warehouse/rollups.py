"""Rollups the loader keeps next to the events, for fast exact answers of the API."""

from __future__ import annotations

# Width of a session slot. 15 minutes divides every real UTC offset (+05:45, +12:45 ...), so
# hour and day buckets in any time zone are unions of whole slots.
SLOT_MINUTES = 15
SLOT_ORIGIN = "2000-01-01 00:00:00+00"

# From the staged events (alias ``s``), one row per (tenant, slot, session, customer); ``keep``
# is the condition on staged rows (erased customers are not rolled up).
SESSION_SLOTS_UPSERT = f"""
INSERT INTO session_slots AS t (tenant_id, slot, session_id, customer_id, purchased)
SELECT s.tenant_id,
       date_bin('{SLOT_MINUTES} minutes', s.event_time, timestamptz '{SLOT_ORIGIN}'),
       coalesce(s.session_id, ''),
       coalesce(s.customer_customer_id, ''),
       bool_or(s.event_type = 'purchase')
FROM load_staging_events s
WHERE (s.session_id IS NOT NULL OR s.customer_customer_id IS NOT NULL) AND {{keep}}
GROUP BY 1, 2, 3, 4
ON CONFLICT (tenant_id, slot, session_id, customer_id)
DO UPDATE SET purchased = t.purchased OR excluded.purchased
"""
