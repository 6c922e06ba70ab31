"""Validation of the time ranges and bucket counts of analytics queries (pure)."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from api.errors import Problem
from api.models import Granularity

_UNIT = {
    Granularity.MINUTE: timedelta(minutes=1),
    Granularity.HOUR: timedelta(hours=1),
    Granularity.DAY: timedelta(days=1),
}
SLOT = timedelta(minutes=15)
_EPOCH = datetime.fromisoformat("2000-01-01T00:00:00+00:00")
# Ranges must lie within these bounds. No event lies outside them (the stream refuses event
# times ten years before or a day after their publication), and near year 1 or 9999 the
# routes' date arithmetic (a trailing baseline, a UTC date, a local day) would overflow.
EARLIEST = _EPOCH
LATEST = datetime.fromisoformat("3000-01-01T00:00:00+00:00")


def check_range(start: datetime, end: datetime, max_days: int) -> None:
    """422 unless ``start < end``, both lie within ``EARLIEST``..``LATEST`` and the range
    spans at most ``max_days`` days."""
    for moment in (start, end):
        if not EARLIEST <= moment <= LATEST:
            raise Problem(
                422,
                f"{moment.isoformat()} is out of range: start and end must lie between "
                f"{EARLIEST.isoformat()} and {LATEST.isoformat()}",
            )
    if end <= start:
        raise Problem(422, "end must be after start")
    if end - start > timedelta(days=max_days):
        raise Problem(422, f"the range may span at most {max_days} days")


def check_whole_minutes(*moments: datetime) -> None:
    """422 unless every moment is a whole minute (metrics are kept per minute)."""
    for moment in moments:
        if moment.second or moment.microsecond:
            raise Problem(422, f"{moment.isoformat()} is not a whole minute")


def bucket_count(start: datetime, end: datetime, granularity: Granularity) -> int:
    """Upper bound of the buckets ``start``..``end`` spans (a partial bucket at each end)."""
    return math.ceil((end - start) / _UNIT[granularity]) + 1


def check_buckets(start: datetime, end: datetime, granularity: Granularity, limit: int) -> None:
    """422 when the series would have more than ``limit`` buckets."""
    if bucket_count(start, end, granularity) > limit:
        raise Problem(
            422,
            f"{granularity.value} buckets over this range exceed the limit of {limit}; "
            "use a coarser granularity or a shorter range",
        )


def check_timezone(name: str) -> str:
    """The IANA zone ``name``, or 422."""
    if name not in _ZONES:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise Problem(
                422, f"unknown time zone {name!r}; use an IANA name like Europe/Paris"
            ) from None
        raise Problem(422, f"unsupported time zone {name!r}; use an IANA name like Europe/Paris")
    return name


def on_slot_boundaries(start: datetime, end: datetime, granularity: Granularity) -> bool:
    """Whether buckets of ``granularity`` over ``start``..``end`` are unions of 15-minute slots."""
    if granularity is Granularity.MINUTE:
        return False
    return all((moment - _EPOCH) % SLOT == timedelta(0) for moment in (start, end))


_ZONES = frozenset(available_timezones()) | {"UTC"}
