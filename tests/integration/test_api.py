"""The analytics API against real PostgreSQL, fed by the real stream and loader.

The module streams a known mix for two tenants through pulsar-lite and Spark into the lake and
the speed layer, loads it into PostgreSQL with the real loader, and serves the API over HTTP.
Reference answers come from the published events, computed in Python.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from pydantic import SecretStr
from pyspark.sql import SparkSession

from include.db import connect
from include.privacy import customer_hash
from include.settings import Settings
from include.tenants import topic_for
from include.warehouse import distinct
from include.warehouse.tables import EVENT_ITEMS, EVENTS
from jobs.load.loader import load_table
from tests.api_server import run_schemathesis, serve_api, wait_until_authenticated
from tests.clock import days_ago, iso_z
from tests.integration.api_reference import (
    ZERO_MEASURES,
    as_reference,
    event_time,
    expected_metrics,
)
from tests.integration.stream_fixtures import (
    MIX_START,
    Reference,
    publish_mix,
    publish_valid,
    register,
    run_stream_until_consumed,
)

ALPHA, BETA = "api_alpha", "api_beta"
# The published mix starts on this day (relative to today, see tests.clock); its late sessions
# reach back up to three days.
MIX_DAY = MIX_START.replace(hour=0)


def _days(first: int, end: int) -> dict[str, str]:
    """A range of whole days around the mix: from ``MIX_DAY + first`` to ``MIX_DAY + end``."""
    return {
        "start": iso_z(MIX_DAY + timedelta(days=first)),
        "end": iso_z(MIX_DAY + timedelta(days=end)),
    }


# Every event of the mix, the late ones included.
WHOLE_MIX = _days(-3, 2)
RESET = (
    "TRUNCATE stream_event_keys, stream_batches, stream_minute_metrics, stream_slot_metrics, "
    "stream_heartbeat, stream_quarantine_counts, events, event_items, load_watermarks, "
    "load_runs, api_usage, erased_customers, erased_events, erasure_requests, distinct_ids, "
    "distinct_id_next, distinct_pieces, stream_hour_metrics"
)


@dataclass
class Api:
    """The served API, its settings, tokens and the reference of what was published."""

    base: str
    settings: Settings
    ref: Reference
    admin: str
    tokens: dict[str, str]

    def get(self, path: str, token: str | None, **params: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.get(f"{self.base}{path}", params=params, headers=headers, timeout=30)

    def call(self, method: str, path: str, token: str | None, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        headers.update(kwargs.pop("headers", {}))
        return httpx.request(method, f"{self.base}{path}", headers=headers, timeout=30, **kwargs)

    def span(self, tenant: str) -> tuple[datetime, datetime]:
        """Whole hours around every event of ``tenant``."""
        times = [event_time(e) for e in self.ref.events[tenant]]
        start = min(times).replace(minute=0, second=0, microsecond=0)
        return start, max(times).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)


@pytest.fixture(scope="module")
def api(
    platform: Settings, spark: SparkSession, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Api]:
    settings = platform.model_copy(
        update={"state_dir": tmp_path_factory.mktemp("api"), "stream_max_records_per_batch": 2_500}
    )
    with connect(platform, autocommit=True) as conn:
        conn.execute(RESET)
    ref = Reference()
    merchants = register(settings, [ALPHA, BETA])
    publish_mix(settings, merchants, 2_400, seed=71, reference=ref)
    topics = [topic_for(t, settings.topic_template) for t in (ALPHA, BETA)]
    run_stream_until_consumed(spark, settings, topics, ref)
    load_table(spark, settings, EVENTS)
    load_table(spark, settings, EVENT_ITEMS)
    with serve_api(settings, api_rate_limit_per_minute=1_000_000) as (base, served):
        admin = served.admin_token.get_secret_value()
        wait_until_authenticated(base, admin)
        tokens = {}
        for tenant in (ALPHA, BETA):
            created = httpx.post(
                f"{base}/tenants/{tenant}/tokens",
                json={"role": "tenant", "expires_at": None, "name": "test"},
                headers={"Authorization": f"Bearer {admin}"},
            )
            assert created.status_code == 201, created.text
            tokens[tenant] = created.json()["token"]
        yield Api(base, served, ref, admin, tokens)


def _compare_metrics(api: Api, body: dict[str, Any], start: datetime, end: datetime) -> None:
    buckets, totals = expected_metrics(
        api.ref.events[ALPHA], start, end, body["granularity"], body["timezone"]
    )
    assert as_reference(body["totals"]) == totals
    served = {datetime.fromisoformat(p["bucket_start"]): as_reference(p) for p in body["series"]}
    assert set(buckets) <= set(served), "every bucket with events is in the series"
    empty = as_reference({**body["totals"], **ZERO_MEASURES})
    for bucket, values in served.items():
        assert values == buckets.get(bucket, empty), f"bucket {bucket}"
    starts = sorted(served)
    assert starts == [datetime.fromisoformat(p["bucket_start"]) for p in body["series"]]


def test_hourly_metrics_equal_the_reference_from_raw_events(api: Api) -> None:
    start, end = api.span(ALPHA)
    response = api.get("/metrics", api.tokens[ALPHA], start=start.isoformat(), end=end.isoformat())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["totals"]["events"] == len(api.ref.silver_ids[ALPHA]) > 500
    assert len(body["series"]) == (end - start) / timedelta(hours=1)
    _compare_metrics(api, body, start, end)
    assert body["freshness"]["speed_layer_updated_at"] is not None
    assert body["freshness"]["batch_loaded_at"] is not None
    newest = max(event_time(e) for e in api.ref.events[ALPHA])
    assert datetime.fromisoformat(body["freshness"]["newest_event_time"]) == newest


def test_daily_metrics_in_a_half_hour_zone_and_minute_metrics_from_raw_events(api: Api) -> None:
    start, end = api.span(ALPHA)
    daily = api.get(
        "/metrics",
        api.admin,
        tenant_id=ALPHA,
        start=start.isoformat(),
        end=end.isoformat(),
        granularity="day",
        timezone="Asia/Kolkata",
    )
    assert daily.status_code == 200, daily.text
    for point in daily.json()["series"][1:]:  # buckets start at local midnight, 18:30 UTC
        assert datetime.fromisoformat(point["bucket_start"]).astimezone(UTC).minute == 30
    _compare_metrics(api, daily.json(), start, end)
    # Off the 15-minute grid (and per minute) the distinct counts come from the events table.
    newest = max(event_time(e) for e in api.ref.events[ALPHA])
    sub_start = newest.replace(second=0, microsecond=0) - timedelta(minutes=97)
    sub_end = sub_start + timedelta(minutes=90)
    for granularity in ("minute", "hour"):
        part = api.get(
            "/metrics",
            api.tokens[ALPHA],
            start=sub_start.isoformat(),
            end=sub_end.isoformat(),
            granularity=granularity,
        )
        assert part.status_code == 200, part.text
        assert part.json()["totals"]["events"] > 0
        _compare_metrics(api, part.json(), sub_start, sub_end)


def test_metrics_limits_are_clear_422s(api: Api) -> None:
    token = api.tokens[ALPHA]
    # Fixed dates: each case breaks a rule of the request alone, whatever today is.
    cases = {
        "end must be after start": {"start": "2026-11-20T12:00:00Z", "end": "2026-11-20T11:00:00Z"},
        "at most 400 days": {"start": "2024-01-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"},
        "exceed the limit of 2000": {
            "start": "2026-11-01T00:00:00Z",
            "end": "2026-11-03T00:00:00Z",
            "granularity": "minute",
        },
        "not a whole minute": {"start": "2026-11-20T12:00:30Z", "end": "2026-11-20T13:00:00Z"},
        "unknown time zone": {
            "start": "2026-11-20T12:00:00Z",
            "end": "2026-11-20T13:00:00Z",
            "timezone": "Mars/Olympus",
        },
        "timezone": {"start": "2026-11-20T12:00:00", "end": "2026-11-20T13:00:00Z"},
    }
    for expected, params in cases.items():
        response = api.get("/metrics", token, **params)
        assert response.status_code == 422, (params, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        body = response.json()
        assert body["status"] == 422 and expected in (body["detail"] + str(body.get("errors"))), (
            body
        )


def test_pagination_visits_every_event_once_newest_first(api: Api) -> None:
    seen: list[str] = []
    times: list[datetime] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 97}
        if cursor:
            params["cursor"] = cursor
        response = api.get("/events", api.tokens[ALPHA], **params)
        assert response.status_code == 200, response.text
        body = response.json()
        seen += [item["event_id"] for item in body["items"]]
        times += [datetime.fromisoformat(item["event_time"]) for item in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)), "no event served twice"
    assert set(seen) == api.ref.silver_ids[ALPHA], "every event served"
    assert times == sorted(times, reverse=True)
    assert pages == -(-len(seen) // 97)
    purchases = [e for e in api.ref.events[ALPHA] if e["event_type"] == "purchase"]
    filtered = api.get("/events", api.tokens[ALPHA], event_type="purchase", limit=1000).json()
    assert {i["event_id"] for i in filtered["items"]} == {e["event_id"] for e in purchases}


def test_pii_is_masked_for_tenant_tokens_only(api: Api) -> None:
    with_email = next(e for e in api.ref.events[ALPHA] if e["customer"].get("email"))
    params = {"customer_id": with_email["customer"]["customer_id"], "limit": 1}
    raw = api.get("/events", api.admin, tenant_id=ALPHA, **params).json()["items"][0]
    masked = api.get("/events", api.tokens[ALPHA], **params).json()["items"][0]
    assert raw["customer_email"] == with_email["customer"]["email"]
    assert masked["customer_email"] == raw["customer_email"][0] + "***@example.com"
    assert masked["device_ip"] == raw["device_ip"].rsplit(".", 1)[0] + ".0/24"
    assert masked["event_id"] == raw["event_id"] and masked["customer_id"] == raw["customer_id"]


ENDPOINTS = [
    ("/metrics", _days(0, 1)),
    ("/metrics/funnel", _days(-2, 1)),
    ("/metrics/top-products", _days(-2, 1)),
    ("/events", {"limit": 5}),
    ("/anomalies", _days(0, 1)),
    ("/usage", {}),
]


@pytest.mark.parametrize(("path", "params"), ENDPOINTS, ids=[p for p, _ in ENDPOINTS])
def test_every_endpoint_for_both_roles_and_no_cross_tenant_read(
    api: Api, path: str, params: dict[str, Any]
) -> None:
    own = api.get(path, api.tokens[ALPHA], **params)
    assert own.status_code == 200, own.text
    as_admin = api.get(path, api.admin, tenant_id=ALPHA, **params)
    assert as_admin.status_code == 200, as_admin.text
    if path != "/events":  # /events differs only by masking
        assert own.json() == as_admin.json()
    other = api.get(path, api.tokens[ALPHA], tenant_id=BETA, **params)
    assert other.status_code == 403, other.text
    assert other.headers["content-type"] == "application/problem+json"
    assert BETA not in own.text
    for bad in (None, "not-a-token", api.tokens[ALPHA] + "x"):
        assert api.get(path, bad, **params).status_code == 401
    if path != "/usage":  # an admin must say which tenant it reads
        assert api.get(path, api.admin, **params).status_code == 422
    assert api.get(path, api.admin, tenant_id="no_such_tenant", **params).status_code == 404


def test_endpoint_answers_follow_the_published_data(api: Api) -> None:
    funnel = api.get("/metrics/funnel", api.tokens[ALPHA], **WHOLE_MIX).json()
    steps = {s["step"]: s["sessions"] for s in funnel["steps"]}
    sessions_with: Counter[str] = Counter()
    per_session: dict[str, set[str]] = {}
    for event in api.ref.events[ALPHA]:
        per_session.setdefault(event["session_id"], set()).add(event["event_type"])
    order = ["page_view", "product_view", "add_to_cart", "checkout_started", "purchase"]
    for kinds in per_session.values():
        for i, step in enumerate(order):
            if set(order[: i + 1]) <= kinds:
                sessions_with[step] += 1
    assert steps == {step: sessions_with[step] for step in order}
    assert steps["purchase"] > 0

    top = api.get(
        "/metrics/top-products", api.tokens[ALPHA], **WHOLE_MIX, by="quantity", limit=3
    ).json()
    quantities: Counter[str] = Counter()
    for event in api.ref.events[ALPHA]:
        if event["event_type"] == "purchase":
            for item in event["items"]:
                quantities[item["sku"]] += item["quantity"]
    best = sorted(quantities.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    assert [(p["sku"], p["quantity"]) for p in top["products"]] == best

    # Request counts reach the database every USAGE_FLUSH_S (5 s): wait for the first flush.
    deadline = time.monotonic() + 60
    while True:
        usage = api.get("/usage", api.tokens[ALPHA]).json()["tenants"]
        if (usage and usage[0]["api_requests"] > 0) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert [u["tenant_id"] for u in usage] == [ALPHA]
    quarantined = {r: n for (t, r), n in api.ref.quarantine.items() if t == ALPHA}
    assert usage[0]["events_ingested"] == len(api.ref.silver_ids[ALPHA])
    assert usage[0]["quarantined_by_reason"] == quarantined
    assert usage[0]["quarantined"] == sum(quarantined.values()) > 0
    assert usage[0]["stored_bytes"] > 0 and usage[0]["api_requests"] > 0
    everyone = api.get("/usage", api.admin).json()["tenants"]
    assert {ALPHA, BETA} <= {u["tenant_id"] for u in everyone}


def test_fraud_detector_uses_the_tenant_threshold(api: Api, platform: Settings) -> None:
    with connect(platform) as conn:
        conn.execute(
            "UPDATE tenants SET fraud_score_threshold = 0.3 WHERE tenant_id = %s", (ALPHA,)
        )
        conn.commit()
    try:
        body = api.get("/anomalies", api.tokens[ALPHA], **WHOLE_MIX, limit=1000).json()
    finally:
        with connect(platform) as conn:
            conn.execute("UPDATE tenants SET fraud_score_threshold = 0.9 WHERE tenant_id = %s",
                         (ALPHA,))  # fmt: skip
            conn.commit()
    expected = {
        e["event_id"]
        for e in api.ref.events[ALPHA]
        if e["ml_context"]["model_scores"]["fraud"] >= 0.3
    }
    assert body["fraud_threshold"] == 0.3
    assert {a["event_id"] for a in body["fraud"]} == expected and expected


def test_hourly_outliers_are_found_against_a_trailing_baseline(
    api: Api, platform: Settings
) -> None:
    # A quiet tenant whose speed layer holds 10 days of steady hourly orders and one spike.
    tenant = "api_gamma"
    register(platform, [tenant])
    start = days_ago(60, hour=0)
    spike = start + timedelta(hours=200)
    rows = []
    for hour in range(240):
        at = start + timedelta(hours=hour)
        orders = 40 if at == spike else 8 + hour % 5
        rows.append((tenant, at + timedelta(minutes=7), "purchase", orders, orders * 25, orders))
    with connect(platform) as conn:
        with conn.cursor() as cur:
            # As the sink writes them: per minute and per 15-minute slot.
            slots = [(t, at.replace(minute=at.minute // 15 * 15), *rest) for t, at, *rest in rows]
            for table, column, values in (
                ("stream_minute_metrics", "minute", rows),
                ("stream_slot_metrics", "slot", slots),
            ):
                cur.executemany(
                    f"INSERT INTO {table} (tenant_id, {column}, event_type, events, amount, "
                    "items) VALUES (%s, %s, %s, %s, %s, %s)",
                    values,
                )
        conn.commit()
    body = api.get("/anomalies", api.admin, tenant_id=tenant,
                   start=(start + timedelta(hours=180)).isoformat(),
                   end=(start + timedelta(hours=240)).isoformat()).json()  # fmt: skip
    found = {(datetime.fromisoformat(a["hour_start"]), a["measure"]) for a in body["hourly"]}
    assert found == {(spike, "orders"), (spike, "revenue")}
    assert all(a["z_score"] >= 3.5 for a in body["hourly"])


def test_tokens_expire_are_revoked_and_never_listed_with_secrets(api: Api) -> None:
    expiry = datetime.now(UTC) + timedelta(seconds=5)
    expiring = {"role": "tenant", "expires_at": expiry.isoformat()}
    created = api.call("POST", f"/tenants/{ALPHA}/tokens", api.admin, json=expiring).json()
    revocable = api.call("POST", f"/tenants/{ALPHA}/tokens", api.admin,
                         json={"role": "tenant"}).json()  # fmt: skip
    assert api.get("/events", created["token"], limit=1).status_code == 200
    assert api.get("/events", revocable["token"], limit=1).status_code == 200
    assert api.call("DELETE", f"/tokens/{revocable['token_id']}", api.admin).status_code == 204
    assert (
        api.call("DELETE", f"/tokens/{revocable['token_id']}", api.tokens[ALPHA]).status_code == 403
    )
    # The expiring token works until its time, then is refused (polled: no sleep races it).
    deadline = time.monotonic() + 60
    while api.get("/events", created["token"], limit=1).status_code == 200:
        assert time.monotonic() < deadline, "the token never expired"
        time.sleep(0.2)
    assert datetime.now(UTC) >= expiry
    for token in (created["token"], revocable["token"]):
        refused = api.get("/events", token, limit=1)
        assert refused.status_code == 401 and "expired or revoked" in refused.json()["detail"]
    listed = api.get(f"/tenants/{ALPHA}/tokens", api.admin)
    assert listed.status_code == 200
    assert revocable["token"] not in listed.text and created["token"] not in listed.text
    ids = {t["token_id"]: t for t in listed.json()["tokens"]}
    assert (
        ids[revocable["token_id"]]["revoked_at"] is not None
        and "token" not in ids[created["token_id"]]
    )
    # Admin-only operations refuse tenant tokens; tenant tokens cannot mint tokens.
    assert api.get(f"/tenants/{ALPHA}/tokens", api.tokens[ALPHA]).status_code == 403
    assert (
        api.call("POST", f"/tenants/{ALPHA}/tokens", api.tokens[ALPHA], json={}).status_code == 403
    )
    evil = {"tenant_id": "evil_shop", "name": "x", "currency": "USD"}
    assert api.call("POST", "/tenants", api.tokens[ALPHA], json=evil).status_code == 403
    past = api.call("POST", f"/tenants/{ALPHA}/tokens", api.admin,
                    json={"expires_at": "2020-01-01T00:00:00Z"})  # fmt: skip
    assert past.status_code == 422


def test_tenant_registration_is_admin_only_and_conflicts_are_409(api: Api) -> None:
    body = {"tenant_id": "api_delta", "name": "Delta Shop", "currency": "EUR"}
    first = api.call("POST", "/tenants", api.admin, json=body)
    assert first.status_code == 201 and first.json()["currency"] == "EUR"
    assert api.call("POST", "/tenants", api.admin, json=body).status_code == 409
    bad = api.call("POST", "/tenants", api.admin, json={**body, "tenant_id": "Bad Id"})
    assert bad.status_code == 422
    listed = api.get("/tenants", api.admin).json()["tenants"]
    assert "api_delta" in {t["tenant_id"] for t in listed}


def test_row_level_security_confines_a_query_that_forgets_its_tenant_filter(
    api: Api, platform: Settings
) -> None:
    dsn = platform.api_pg_dsn
    with psycopg.connect(dsn) as conn:
        conn.execute("SELECT set_config('lakehouse.tenant_id', %s, true)", (ALPHA,))
        tenants = {t for (t,) in conn.execute("SELECT DISTINCT tenant_id FROM events")}
        metric_tenants = {
            t for (t,) in conn.execute("SELECT DISTINCT tenant_id FROM stream_minute_metrics")
        }
        deleted = conn.execute("DELETE FROM events WHERE tenant_id = %s", (BETA,)).rowcount
        conn.rollback()
        assert tenants == metric_tenants == {ALPHA}
        assert deleted == 0, "another tenant's rows cannot even be deleted"
        # Without a tenant the tables read as empty.
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (0,)
        conn.rollback()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            partition = conn.execute(
                "SELECT inhrelid::regclass::text FROM pg_inherits "
                "WHERE inhparent = 'events'::regclass LIMIT 1"
            ).fetchone()
            assert partition is not None
            conn.execute(f"SELECT count(*) FROM {partition[0]}")  # partitions are not granted
    with connect(platform) as conn:
        owner = conn.execute("SELECT count(DISTINCT tenant_id) FROM events").fetchone()
    assert owner is not None and owner[0] >= 2, "the data for both tenants is really there"


# Tables the API role reads that hold platform metadata, not one tenant's data (docs/security.md).
NOT_TENANT_DATA = {"tenants", "api_tokens", "erasure_requests"}


def test_every_table_with_tenant_rows_the_api_can_read_is_confined(
    api: Api, platform: Settings
) -> None:
    with connect(platform) as conn:
        readable = {
            name: bool(rls)
            for name, rls in conn.execute(
                "SELECT c.relname, c.relrowsecurity FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public' "
                "WHERE c.relkind IN ('r', 'p', 'v') "
                "AND has_table_privilege('lakehouse_api', c.oid, 'SELECT') "
                "AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid "
                "            AND a.attname = 'tenant_id' AND NOT a.attisdropped)"
            )
        }
        views = {
            name
            for (name,) in conn.execute(
                "SELECT c.relname FROM pg_class c WHERE c.relkind = 'v' "
                "AND 'security_invoker=true' = ANY (c.reloptions)"
            )
        }
    assert {"events", "distinct_pieces", "stream_slot_metrics"} <= readable.keys()
    unconfined = {
        name
        for name, rls in readable.items()
        if not rls and name not in views and name not in NOT_TENANT_DATA
    }
    assert unconfined == set()
    with psycopg.connect(platform.api_pg_dsn) as conn:
        conn.execute("SELECT set_config('lakehouse.tenant_id', %s, true)", (ALPHA,))
        for name in sorted(readable.keys() - NOT_TENANT_DATA):
            seen = {t for (t,) in conn.execute(f'SELECT DISTINCT tenant_id FROM "{name}"')}
            assert seen <= {ALPHA}, name


def test_errors_are_problem_documents_and_limits_hold(api: Api) -> None:
    cases = [
        api.get("/nowhere", api.admin),
        api.call("PUT", "/metrics", api.admin),
        api.get("/events", api.tokens[ALPHA], cursor="not-a-cursor"),
        api.get("/events", api.tokens[ALPHA], limit=5000),
        api.get("/events", api.tokens[ALPHA], customer_id="x' OR '1'='1"),
        api.get("/erasures/00000000-0000-4000-8000-000000000000", api.admin),
        api.call("POST", "/tenants", api.admin, content=b"x" * 70_000,
                 headers={"Content-Type": "application/json"}),
    ]  # fmt: skip
    statuses = [r.status_code for r in cases]
    assert statuses == [404, 405, 422, 422, 422, 404, 413]
    for response in cases:
        assert response.headers["content-type"] == "application/problem+json"
        body = response.json()
        assert body["status"] == response.status_code and body["request_id"]
        assert "Traceback" not in response.text


def test_rate_limit_answers_429_with_retry_after(platform: Settings) -> None:
    with serve_api(platform, api_rate_limit_per_minute=3) as (base, settings):
        token = settings.admin_token.get_secret_value()
        wait_until_authenticated(base, token)  # may use up some of the budget
        headers = {"Authorization": f"Bearer {token}"}
        statuses = [httpx.get(f"{base}/tenants", headers=headers) for _ in range(4)]
    limited = [r for r in statuses if r.status_code == 429]
    assert limited, [r.status_code for r in statuses]
    assert int(limited[0].headers["retry-after"]) >= 1
    assert limited[0].headers["content-type"] == "application/problem+json"


def test_readiness_reflects_the_database(api: Api, platform: Settings) -> None:
    assert api.get("/ready", None).status_code == 200
    with serve_api(platform, pg_port=1) as (base, _settings):  # nothing listens on port 1
        assert httpx.get(f"{base}/health").status_code == 200
        ready = httpx.get(f"{base}/ready")
        assert ready.status_code == 503 and ready.json()["checks"]["database"] == "unreachable"
        data = httpx.get(f"{base}/events", headers={"Authorization": f"Bearer {api.admin}"})
        assert data.status_code == 503 and data.headers["retry-after"]
    metrics = api.get("/internal/metrics", None).text
    assert 'lakehouse_api_requests_total{method="GET",route="/metrics",status="200"}' in metrics
    assert "lakehouse_api_request_duration_seconds_bucket" in metrics


def test_erasure_removes_the_customer_from_postgres_and_loads_never_bring_it_back(
    api: Api, spark: SparkSession
) -> None:
    settings = api.settings
    counts = Counter(e["customer"]["customer_id"] for e in api.ref.events[BETA])
    customer, events = counts.most_common(1)[0]
    assert events >= 2
    with connect(settings) as conn:
        before = conn.execute(
            "SELECT count(*) FROM events WHERE tenant_id = %s", (BETA,)
        ).fetchone()
    assert api.call("DELETE", f"/tenants/{BETA}/customers/{customer}",
                    api.tokens[ALPHA]).status_code == 403  # fmt: skip
    response = api.call("DELETE", f"/tenants/{BETA}/customers/{customer}", api.tokens[BETA])
    assert response.status_code == 202, response.text
    request = response.json()
    assert request["status"] == "lake_pending" and request["postgres_rows"] >= events
    assert api.get(f"/erasures/{request['request_id']}", api.tokens[ALPHA]).status_code == 404
    assert api.get(f"/erasures/{request['request_id']}", api.admin).json()["tenant_id"] == BETA

    def remaining() -> tuple[int, int, int]:
        with connect(settings) as conn:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM events WHERE tenant_id = %(t)s "
                "        AND customer_customer_id = %(c)s),"
                " (SELECT count(*) FROM event_items i WHERE tenant_id = %(t)s AND event_id IN "
                "        (SELECT event_id FROM erased_events WHERE tenant_id = %(t)s)),"
                " (SELECT count(*) FROM events WHERE tenant_id = %(t)s)",
                {"t": BETA, "c": customer},
            ).fetchone()
        assert row is not None
        return row

    gone = remaining()
    assert gone[:2] == (0, 0)
    assert before is not None and gone[2] == before[0] - events
    with connect(settings) as conn:
        stored = conn.execute(
            "SELECT customer_hash FROM erased_customers WHERE tenant_id = %s", (BETA,)
        ).fetchone()
    assert stored is not None and bytes(stored[0]) == customer_hash(customer)
    # The lake still holds the customer until the erase_customer DAG runs; a full reload
    # (watermarks reset) must still skip them.
    with connect(settings) as conn:
        conn.execute("DELETE FROM load_watermarks")
        conn.commit()
    load_table(spark, settings, EVENTS)
    load_table(spark, settings, EVENT_ITEMS)
    assert remaining() == gone
    assert_distinct_bitmaps_consistent(settings)

    # A purchase of the erased customer that reaches the stream after the erasure (a late
    # event): neither it nor its item lines (which carry no customer id) are loaded, in
    # either order of the two loads.
    own = next(e for e in api.ref.events[BETA] if e["customer"]["customer_id"] == customer)
    basket = next(e for e in api.ref.events[BETA] if e["event_type"] == "purchase" and e["items"])
    late = {**basket, "event_id": str(uuid.uuid4()), "customer": own["customer"]}
    publish_valid(settings, BETA, [orjson.dumps(late)], api.ref)
    topics = [topic_for(t, settings.topic_template) for t in (ALPHA, BETA)]
    run_stream_until_consumed(spark, settings, topics, api.ref)
    load_table(spark, settings, EVENT_ITEMS)
    load_table(spark, settings, EVENTS)
    with connect(settings) as conn:
        lines, forgotten = conn.execute(
            "SELECT (SELECT count(*) FROM event_items WHERE tenant_id = %(t)s"
            "        AND event_id = %(e)s),"
            " (SELECT count(*) FROM erased_events WHERE tenant_id = %(t)s AND event_id = %(e)s)",
            {"t": BETA, "e": late["event_id"]},
        ).fetchone() or (None, None)
    assert (lines, forgotten) == (0, 1)
    assert remaining() == gone


def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    api: Api, tmp_path: Path
) -> None:
    result = run_schemathesis(
        api.base, api.admin, seed=20261125, max_examples=10, max_seconds=75, workdir=tmp_path
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def assert_distinct_bitmaps_consistent(settings: Settings) -> None:
    """The distinct-count bitmaps (issue #16), kept incrementally by loads and erasures, equal
    what the loaded events imply."""
    with connect(settings) as conn:
        tenants = [t for (t,) in conn.execute("SELECT DISTINCT tenant_id FROM events")]
        for tenant in tenants:
            stored = distinct.stored_pieces(conn, tenant)
            assert stored and stored == distinct.rebuild_pieces(conn, tenant), tenant


def test_changing_the_admin_token_revokes_the_previous_one(platform: Settings) -> None:
    old = platform.admin_token.get_secret_value()
    new = f"rotated-{uuid.uuid4()}"
    try:
        with serve_api(platform, admin_token=SecretStr(new)) as (base, _settings):
            wait_until_authenticated(base, new)
            refused = httpx.get(f"{base}/tenants", headers={"Authorization": f"Bearer {old}"})
            assert refused.status_code == 401
    finally:
        with serve_api(platform) as (base, _settings):
            wait_until_authenticated(base, old)
            refused = httpx.get(f"{base}/tenants", headers={"Authorization": f"Bearer {new}"})
            assert refused.status_code == 401
