"""Event times for test data, placed relative to the day the tests run.

The platform's rules are relative to now: the stream quarantines event times more than ten
years before or a day after their publication, archive_lake moves lake partitions older than
``lake_hot_days``, maintain_postgres drops partitions past the retention and creates the next
ones. Data a test means to be "recent" or "old" is therefore placed from today, so the suite
means the same on any day (``make test-clock-shift`` runs it with the clock moved ahead).
Fixed dates stay only where their meaning does not depend on today (a validation case such as
"end before start", or a pure function given its own reference time).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta


def today() -> date:
    """Today's date in UTC."""
    return datetime.now(UTC).date()


def days_ago(days: int, hour: int = 12) -> datetime:
    """``hour`` o'clock UTC, ``days`` days before today (an aware datetime)."""
    return datetime.combine(today() - timedelta(days=days), time(hour), tzinfo=UTC)


def iso_z(moment: datetime) -> str:
    """``2026-11-20T12:00:00Z``: the form the API's examples use."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
