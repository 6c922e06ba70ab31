"""Pure logic of the API: anomaly scores, masking, cursors, ranges, rate limit, OpenAPI."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from api.anomalies import hourly_outliers, robust_z
from api.cursor import decode_cursor, encode_cursor
from api.errors import Problem
from api.main import create_app
from api.models import Granularity
from api.ranges import bucket_count, check_buckets, check_timezone, on_slot_boundaries
from api.ratelimit import RateLimiter, retry_after_header
from api.security import is_usable, new_token, same_hash, token_hash
from include.privacy import customer_hash, mask_email, mask_ip, valid_customer_id
from include.settings import Settings


def test_robust_z_uses_median_and_mad() -> None:
    baseline = [10.0, 11.0, 9.0, 10.0, 12.0, 8.0, 10.0]  # median 10, MAD 1
    assert robust_z(10.0, baseline) == 0.0
    assert robust_z(20.0, baseline) == pytest.approx(0.6745 * 10)
    assert robust_z(5.0, baseline) == pytest.approx(-0.6745 * 5)


def test_robust_z_falls_back_to_mean_absolute_deviation_and_then_gives_up() -> None:
    mostly_flat = [5.0] * 10 + [7.0]  # MAD 0, mean absolute deviation 2/11
    assert robust_z(9.0, mostly_flat) == pytest.approx(0.7979 * 4 / (2 / 11))
    assert robust_z(9.0, [5.0] * 10) is None
    assert robust_z(9.0, []) is None


def test_hourly_outliers_flag_only_the_spike_and_need_history() -> None:
    values = [10.0 + (i % 3) for i in range(60)]
    values[50] = 60.0
    found = hourly_outliers(values, first=24, baseline_hours=24, threshold=3.5)
    assert [o.index for o in found] == [50]
    assert found[0].baseline_median == 11.0 and found[0].z_score > 3.5
    # An hour with less than half a baseline of history is not scored.
    assert hourly_outliers([1.0, 1.0, 100.0], first=2, baseline_hours=24, threshold=3.5) == []


def test_pii_masks_keep_only_what_analytics_needs() -> None:
    assert mask_email("alice@example.com") == "a***@example.com"
    assert mask_email("not-an-email") == "***"
    assert mask_email(None) is None
    assert mask_ip("198.51.100.23") == "198.51.100.0/24"
    assert mask_ip("2001:db8:85a3::8a2e:370:7334") == "2001:db8:85a3::/48"
    assert mask_ip("garbage") == "***"


def test_customer_ids_that_could_break_a_predicate_are_refused() -> None:
    assert valid_customer_id("c_000123") and valid_customer_id("user@example.com")
    for bad in ("", "x' OR '1'='1", "a b", "%", "_x", "a\x00"):
        assert not valid_customer_id(bad), bad
    assert customer_hash("c_1") != customer_hash("c_10") and len(customer_hash("c_1")) == 32


def test_cursor_round_trips_and_rejects_anything_else() -> None:
    moment, event_id = datetime(2026, 11, 20, 12, 0, 7, 123000, tzinfo=UTC), uuid.uuid4()
    assert decode_cursor(encode_cursor(moment, event_id)) == (moment, event_id)
    for bad in ("", "!!!", "bm90LWpzb24", encode_cursor(moment, event_id)[:-3] + "AAA"):
        with pytest.raises(Problem) as caught:
            decode_cursor(bad)
        assert caught.value.status == 422


def test_bucket_limits_and_slot_alignment() -> None:
    start = datetime(2026, 11, 1, tzinfo=UTC)
    assert bucket_count(start, start + timedelta(days=30), Granularity.HOUR) == 721
    check_buckets(start, start + timedelta(days=30), Granularity.HOUR, 2000)
    with pytest.raises(Problem):
        check_buckets(start, start + timedelta(days=2), Granularity.MINUTE, 2000)
    assert on_slot_boundaries(start, start + timedelta(minutes=45), Granularity.HOUR)
    assert not on_slot_boundaries(start, start + timedelta(minutes=50), Granularity.HOUR)
    assert not on_slot_boundaries(start, start + timedelta(hours=1), Granularity.MINUTE)
    assert check_timezone("Asia/Kolkata") == "Asia/Kolkata"
    for bad in ("Mars/Olympus", "../etc/passwd", "UTC'; DROP TABLE events; --"):
        with pytest.raises(Problem):
            check_timezone(bad)


def test_rate_limiter_refills_over_time() -> None:
    now = [0.0]
    limiter = RateLimiter(per_minute=2, clock=lambda: now[0])
    assert limiter.acquire("t") == 0 and limiter.acquire("t") == 0
    wait = limiter.acquire("t")
    assert wait == pytest.approx(30.0) and retry_after_header(wait) == "30"
    assert limiter.acquire("other") == 0, "limits are per token"
    now[0] = 30.0
    assert limiter.acquire("t") == 0


def test_tokens_are_random_and_compared_by_hash() -> None:
    first, second = new_token(), new_token()
    assert first != second and first.startswith("lh_") and len(first) > 40
    assert same_hash(token_hash(first), token_hash(first))
    assert not same_hash(token_hash(first), token_hash(second))
    now = datetime.now(UTC)
    assert is_usable(None, None, now) and is_usable(now + timedelta(seconds=1), None, now)
    assert not is_usable(now, None, now) and not is_usable(None, now, now)


def test_openapi_declares_problem_documents_for_errors() -> None:
    spec = create_app(Settings()).openapi()
    metrics = spec["paths"]["/metrics"]["get"]["responses"]
    assert set(metrics["422"]["content"]) == {"application/problem+json"}
    assert set(metrics["200"]["content"]) == {"application/json"}
    assert "/internal/metrics" not in spec["paths"]


def test_hours_before_a_tenant_existed_are_not_its_history() -> None:
    # A tenant whose first event came at hour 30, steady at 5 orders an hour ever since.
    values = [0.0] * 30 + [5.0 + (i % 2) for i in range(40)]
    # Against zero-filled history every early hour would look like a spike...
    assert hourly_outliers(values, first=30, baseline_hours=24, threshold=3.5)
    # ...against its own history none is, and no hour with under 12 hours of it is scored.
    found = hourly_outliers(values, first=30, baseline_hours=24, threshold=3.5, history_from=30)
    assert found == []
    values[60] = 50.0
    found = hourly_outliers(values, first=30, baseline_hours=24, threshold=3.5, history_from=30)
    assert [o.index for o in found] == [60]
