"""The 15-minute slots the speed layer's rollups are kept in (``stream_slot_metrics``)."""

from __future__ import annotations

# Width of a session slot. 15 minutes divides every real UTC offset (+05:45, +12:45 ...), so
# hour and day buckets in any time zone are unions of whole slots.
SLOT_MINUTES = 15
SLOT_ORIGIN = "2000-01-01 00:00:00+00"


def slot_of(column: str) -> str:
    """SQL for the start of the 15-minute slot holding the timestamptz ``column``."""
    return f"date_bin('{SLOT_MINUTES} minutes', {column}, timestamptz '{SLOT_ORIGIN}')"
