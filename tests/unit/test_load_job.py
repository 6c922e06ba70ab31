"""The load job's Spark Connect URL: one shared server-side session per UTC hour."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from jobs.load.job import shared_session_url

AT = datetime(2026, 12, 3, 9, 59, 59, tzinfo=UTC)


@pytest.mark.parametrize(
    ("url", "prefix"),
    [
        ("sc://127.0.0.1:15002", "sc://127.0.0.1:15002/;session_id="),
        ("sc://127.0.0.1:15002/", "sc://127.0.0.1:15002/;session_id="),
        ("sc://h:1/;user_id=ops;token=t", "sc://h:1/;user_id=ops;token=t;session_id="),
    ],
)
def test_the_session_id_is_added_as_a_url_parameter(url: str, prefix: str) -> None:
    shared = shared_session_url(url, AT)
    assert shared.startswith(prefix)
    assert len(shared) - len(prefix) == 36  # a UUID


def test_loads_of_one_hour_share_a_session_and_the_next_hour_gets_another() -> None:
    url = "sc://127.0.0.1:15002/"
    same_hour = shared_session_url(url, AT - timedelta(minutes=59))
    assert shared_session_url(url, AT) == same_hour
    # The hour is UTC's, whatever the caller's zone.
    assert shared_session_url(url, AT.astimezone(timezone(timedelta(hours=5, minutes=45)))) == (
        same_hour
    )
    assert shared_session_url(url, AT + timedelta(seconds=1)) != same_hour


def test_a_url_naming_its_session_is_kept() -> None:
    url = "sc://h:1/;session_id=6f0e2f3a-1111-4222-8333-944455556666"
    assert shared_session_url(url, AT) == url
