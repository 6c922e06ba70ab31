"""Every metric the dashboards and alert rules use is really exported (their static checks are
``tests/unit/test_observability_config.py``).

The stream job's and the API's metric names are checked against their live output: the stream
runs (shared ``spark`` fixture) with its exporter served on a free port and is scraped while the
query is active; the load job loads what it wrote; the API serves ``/internal/metrics`` over
HTTP against the session PostgreSQL. Metrics of third-party software (the Pulsar broker,
postgres_exporter, Prometheus' own ``up``) cannot run here; they must be in
``deploy/prometheus/external-metrics.yml`` with the documentation they come from.

The alert rules are evaluated live as well: the embedded platform with its Prometheus (the
config ``make run`` renders from compose's, the same ``alerts.yml``) scrapes every component;
the stream is stopped, ``StreamDown`` goes pending then firing after its ``for: 2m``, and
resolves once the stream is back. Only the scrape and evaluation interval are shortened (2 s).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pyspark.sql import SparkSession

from include.db import connect
from include.embedded import prometheus, supervisor
from include.embedded.paths import StatePaths
from include.settings import Settings
from include.tenants import topic_for
from tests.api_server import serve_api, wait_until_authenticated
from tests.integration.stream_fixtures import Reference, publish_mix, register, wait_until_consumed
from tests.prometheus_config import (
    alert_rules,
    exported,
    external_metrics,
    sample,
    used_metric_names,
)
from tests.services import embedded_platform, free_port

TENANTS = ["obs_alpha", "obs_beta"]


@pytest.fixture
def obs_settings(platform: Settings, tmp_path: Path) -> Iterator[Settings]:
    """The shared services, with empty stream bookkeeping and analytics tables, and a new lake."""
    tables = (
        "stream_event_keys, stream_batches, stream_minute_metrics, stream_slot_metrics, "
        "stream_heartbeat, events, event_items, load_watermarks, load_runs"
    )
    with connect(platform, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {tables}")
    yield platform.model_copy(update={"state_dir": tmp_path, "stream_max_records_per_batch": 1_000})
    with connect(platform, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {tables}")


def test_every_metric_used_is_exported_by_a_live_component(
    spark: SparkSession, obs_settings: Settings
) -> None:
    from include.warehouse.tables import ANALYTICS_TABLES
    from jobs.load.loader import load_table
    from jobs.stream import metrics
    from jobs.stream.job import start_stream

    settings = obs_settings
    reference = Reference()
    publish_mix(settings, register(settings, TENANTS), 1_500, seed=71, reference=reference)
    exporter = f"127.0.0.1:{free_port()}"
    metrics.serve(exporter)  # what jobs/stream/job.py main() does, on a port of this test
    topics = [topic_for(t, settings.topic_template) for t in TENANTS]
    query = start_stream(spark, settings, topics=topics, trigger_seconds=1)
    try:
        wait_until_consumed(settings, reference.published, query)
        stream_text = httpx.get(f"http://{exporter}/metrics", timeout=10).text
        assert query.isActive
    finally:
        query.stop()
    for table in ANALYTICS_TABLES:
        load_table(spark, settings, table)

    with serve_api(settings) as (base, effective):
        token = effective.admin_token.get_secret_value()
        wait_until_authenticated(base, token)
        auth = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{base}/tenants", headers=auth).status_code == 200
        assert httpx.get(f"{base}/tenants").status_code == 401
        assert httpx.get(f"{base}/no-such-route").status_code == 404
        api_text = httpx.get(f"{base}/internal/metrics", timeout=10).text

    live = exported(stream_text) | exported(api_text)
    external = set().union(*external_metrics().values())
    missing = used_metric_names() - live - external
    assert not missing, f"used by dashboards/alerts but exported by nothing: {sorted(missing)}"
    assert not (live & external), "an allow-listed metric is ours: check it live instead"

    # The values are the real ones, not just the names.
    distinct = sum(len(reference.silver_ids[t]) for t in TENANTS)
    assert sample(api_text, "lakehouse_load_rows_total", target="events") == distinct
    assert sample(api_text, "lakehouse_load_last_success_timestamp_seconds", target="events") > 0
    for tenant, reason in reference.quarantine:
        assert (
            sample(
                stream_text, "lakehouse_stream_quarantined_rows_total", tenant=tenant, reason=reason
            )
            >= reference.quarantine[(tenant, reason)]
        )
    for tenant in TENANTS:
        assert sample(stream_text, "lakehouse_stream_lag_seconds", tenant=tenant) > 0
    assert sample(stream_text, "lakehouse_stream_last_batch_timestamp_seconds") > 0
    assert (
        sample(
            api_text, "lakehouse_api_requests_total", route="/tenants", method="GET", status="401"
        )
        >= 1
    )


def _api(base: str, path: str, **params: str) -> Any:
    answer = httpx.get(f"{base}/api/v1/{path}", params=params, timeout=10)
    answer.raise_for_status()
    body = answer.json()
    assert body["status"] == "success", body
    return body["data"]


def _wait(predicate: Callable[[], object], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _alerts(base: str, name: str) -> list[dict[str, Any]]:
    """The active (pending or firing) alerts of one rule."""
    alerts: list[dict[str, Any]] = _api(base, "alerts")["alerts"]
    return [a for a in alerts if a["labels"]["alertname"] == name]


def _state(base: str, name: str) -> str | None:
    states = {a["state"] for a in _alerts(base, name)}
    assert len(states) <= 1, states
    return states.pop() if states else None


def test_stream_down_fires_in_the_live_prometheus_and_resolves_after_the_restart() -> None:
    if prometheus.find_binary() is None:
        pytest.fail("prometheus is missing: `make test-tools` installs it")
    apps = (prometheus.PROGRAM, "stream", "api", "generator")
    overrides: dict[str, Any] = {"prometheus_interval": "2s", "api_workers": 1}
    with embedded_platform(
        apps=apps, demo_tenants=["alert_shop"], generator_rate=20.0, **overrides
    ) as settings:
        base = f"http://{settings.prometheus_addr}"
        paths = StatePaths.under(settings.state_dir)

        def health() -> dict[str, str]:
            targets = _api(base, "targets")["activeTargets"]
            return {t["labels"]["job"]: t["health"] for t in targets}

        # Every component that serves metrics is scraped, on the addresses of its settings.
        jobs = {"pulsar", "stream", "api", "prometheus"}
        _wait(lambda: health() == dict.fromkeys(jobs, "up"), 120, f"{jobs} up")
        # alerts.yml's rules, all of them, evaluate without error against the live series.
        groups = _api(base, "rules", type="alert")["groups"]
        loaded = {rule["name"]: rule for group in groups for rule in group["rules"]}
        assert set(loaded) == {rule["alert"] for rule in alert_rules()}
        assert {rule["health"] for rule in loaded.values()} == {"ok"}, loaded
        # StreamStalled's inputs exist live: pulsar-lite's pulsar_rate_in and the last batch.
        _wait(
            lambda: (
                _api(base, "query", query="sum(pulsar_rate_in) > 0")["result"]
                and _api(base, "query", query="lakehouse_stream_last_batch_timestamp_seconds")[
                    "result"
                ]
            ),
            240,
            "a committed micro-batch while the generator publishes",
        )
        assert _state(base, "StreamDown") is None
        assert not [a for a in _api(base, "alerts")["alerts"] if a["state"] == "firing"]

        supervisor.ctl(paths, "stop", "stream")
        stopped = time.monotonic()
        _wait(lambda: _state(base, "StreamDown") == "pending", 30, "StreamDown pending")
        _wait(lambda: _state(base, "StreamDown") == "firing", 200, "StreamDown firing")
        assert time.monotonic() - stopped >= 115, "fired before the rule's for: 2m"
        (alert,) = _alerts(base, "StreamDown")
        assert alert["labels"] == {
            "alertname": "StreamDown",
            "instance": settings.stream_metrics_addr,
            "job": "stream",
            "severity": "critical",
        }
        assert settings.stream_metrics_addr in alert["annotations"]["description"]
        # The page a person opens shows it: the UI's own link to its Alerts page.
        home = httpx.get(f"{base}/", follow_redirects=True, timeout=10)
        link = re.search(r'href="(/[^"]*alerts)"', home.text)
        assert home.status_code == 200 and link, home.text[:500]
        page = httpx.get(f"{base}{link.group(1)}", timeout=10)
        shown = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page.text))
        assert page.status_code == 200, shown[:2000]
        assert "Firing (1)" in shown and "StreamDown (1 active)" in shown, shown[:2000]

        supervisor.ctl(paths, "start", "stream")
        _wait(lambda: _state(base, "StreamDown") is None, 120, "StreamDown resolved")
        assert health()["stream"] == "up"
