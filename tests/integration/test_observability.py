"""Dashboards and alert rules parse, and every metric they use is really exported.

The stream job's and the API's metric names are checked against their live output: the stream
runs (shared ``spark`` fixture) with its exporter served on a free port and is scraped while the
query is active; the load job loads what it wrote; the API serves ``/internal/metrics`` over
HTTP against the session PostgreSQL. Metrics of third-party software (the Pulsar broker,
postgres_exporter, Prometheus' own ``up``) cannot run here; they must be in
``deploy/prometheus/external-metrics.yml`` with the documentation they come from.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from pyspark.sql import SparkSession

from include.db import connect
from include.settings import Settings
from include.tenants import topic_for
from tests.api_server import serve_api, wait_until_authenticated
from tests.integration.stream_fixtures import Reference, publish_mix, register, wait_until_consumed
from tests.services import free_port

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
EXTERNAL = DEPLOY / "prometheus" / "external-metrics.yml"
DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
TENANTS = ["obs_alpha", "obs_beta"]

# PromQL words that are not metric names (aggregations, binary operators and modifiers).
_KEYWORDS = {
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "count_values", "group", "limitk", "limit_ratio", "by", "without", "on", "ignoring",
    "group_left", "group_right", "and", "or", "unless", "bool", "offset", "inf", "nan",
}  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_CLAUSE = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_LABEL_VALUES = re.compile(r"^label_values\(\s*(?:([A-Za-z_:][A-Za-z0-9_:]*)[^,]*,)?\s*\w+\s*\)$")


def assert_balanced(expr: str) -> None:
    """Brackets pair up and strings close (a cheap syntax check; Prometheus parses for real)."""
    text = _STRING.sub('""', expr)
    assert '"' not in text.replace('""', ""), f"unclosed string in {expr!r}"
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    for char in text:
        if char in "([{":
            stack.append(char)
        elif char in pairs:
            assert stack and stack.pop() == pairs[char], f"unbalanced {char!r} in {expr!r}"
    assert not stack, f"unclosed {stack} in {expr!r}"


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects."""
    assert_balanced(expr)
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^{}]*\}", " ", text)  # label matchers (and Grafana's $variables in them)
    text = re.sub(r"\[[^\[\]]*\]", " ", text)  # range and subquery selectors
    text = _CLAUSE.sub(r" \1 ", text)  # grouping label lists
    text = re.sub(r"\boffset\s+\S+", " ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        before = text[match.start() - 1] if match.start() else " "
        if before.isdigit() or before in ".$":
            continue  # part of a number (1e3) or a Grafana variable
        if text[match.end() :].lstrip().startswith("(") or match.group() in _KEYWORDS:
            continue  # a function call or a keyword
        names.add(match.group())
    return names


def test_metric_name_extraction() -> None:
    expr = (
        'sum by (tenant) (rate(a_total{tenant=~"$tenant", x="y(z"}[$__rate_interval])) '
        "/ on() group_left sum(b_seconds_bucket offset 5m) > 1e3 and time() - c > 0.5"
    )
    assert metric_names(expr) == {"a_total", "b_seconds_bucket", "c"}
    with pytest.raises(AssertionError):
        assert_balanced("sum(rate(x[5m])")


def _dashboard_exprs() -> list[tuple[str, str]]:
    out = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            out += [(f"{path.name}: {panel['title']}", t["expr"]) for t in panel["targets"]]
    return out


def _variable_metrics() -> set[str]:
    names = set()
    for path in DASHBOARDS:
        for variable in json.loads(path.read_text())["templating"]["list"]:
            match = _LABEL_VALUES.match(variable["query"]["query"])
            assert match, f"{path.name}: unexpected variable query {variable['query']}"
            names.add(match.group(1))
    return names


def _alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def used_metric_names() -> set[str]:
    """Every metric name the dashboards and alert rules use."""
    names = _variable_metrics()
    for _where, expr in _dashboard_exprs():
        names |= metric_names(expr)
    for rule in _alert_rules():
        names |= metric_names(rule["expr"])
    return names


def external_metrics() -> dict[str, set[str]]:
    """The documented allow-list: source -> metric names."""
    doc = yaml.safe_load(EXTERNAL.read_text())
    return {name: set(source["metrics"]) for name, source in doc["sources"].items()}


def test_dashboards_are_provisionable_grafana_json() -> None:
    assert {p.stem for p in DASHBOARDS} >= {
        "lakehouse-stream",
        "lakehouse-load",
        "lakehouse-api",
        "lakehouse-services",
    }
    datasource_uids = {d["uid"] for d in yaml.safe_load(DATASOURCES.read_text())["datasources"]}
    uids = set()
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        assert board["uid"] == path.stem and board["uid"] not in uids
        uids.add(board["uid"])
        assert board["title"] and board["panels"]
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] in datasource_uids, panel["title"]
            assert set(panel["gridPos"]) == {"x", "y", "w", "h"}
            assert panel["targets"], panel["title"]
            refs = [target["refId"] for target in panel["targets"]]
            assert len(refs) == len(set(refs))


def test_alert_rules_are_complete() -> None:
    rules = _alert_rules()
    names = {rule["alert"] for rule in rules}
    assert names >= {"StreamStalled", "StreamLagHigh", "QuarantineSpike", "LoadFailing"}
    assert "ApiErrorRate" in names
    for rule in rules:
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert metric_names(rule["expr"]), rule["alert"]


def test_the_external_allow_list_is_documented() -> None:
    doc = yaml.safe_load(EXTERNAL.read_text())
    assert set(doc) == {"sources"}
    for name, source in doc["sources"].items():
        assert set(source) == {"doc", "what", "metrics"}, name
        assert source["doc"].startswith("https://"), name
        assert source["what"], name
        assert source["metrics"] == sorted(set(source["metrics"]), key=source["metrics"].index)
        for metric in source["metrics"]:
            assert re.fullmatch(r"[a-z_:][a-z0-9_:]*", metric), metric
            assert not metric.startswith("lakehouse_"), "our own metrics are checked live"


def test_every_external_metric_is_used() -> None:
    used = used_metric_names()
    for name, metrics in external_metrics().items():
        assert metrics <= used, f"{name}: listed but unused: {sorted(metrics - used)}"


def _exported(text: str) -> set[str]:
    """Names of the samples in a Prometheus text exposition."""
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


def _sample(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    raise AssertionError(f"no sample {name}{labels}")


def test_the_load_series_come_from_the_watermarks() -> None:
    from prometheus_client import generate_latest

    from api.observability import ApiMetrics, LoadWatermark

    api = ApiMetrics()
    before = generate_latest(api.registry).decode()
    assert "# TYPE lakehouse_load_rows_total counter" in before  # declared before any load
    assert "lakehouse_load_rows_total{" not in before
    api.loads.update([LoadWatermark("events", 7, 1234, 1_764_000_000.0)])
    after = generate_latest(api.registry).decode()
    assert _sample(after, "lakehouse_load_rows_total", target="events") == 1234
    assert _sample(after, "lakehouse_load_watermark_version", target="events") == 7
    assert (
        _sample(after, "lakehouse_load_last_success_timestamp_seconds", target="events")
        == 1_764_000_000.0
    )


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

    live = _exported(stream_text) | _exported(api_text)
    external = set().union(*external_metrics().values())
    missing = used_metric_names() - live - external
    assert not missing, f"used by dashboards/alerts but exported by nothing: {sorted(missing)}"
    assert not (live & external), "an allow-listed metric is ours: check it live instead"

    # The values are the real ones, not just the names.
    distinct = sum(len(reference.silver_ids[t]) for t in TENANTS)
    assert _sample(api_text, "lakehouse_load_rows_total", target="events") == distinct
    assert _sample(api_text, "lakehouse_load_last_success_timestamp_seconds", target="events") > 0
    for tenant, reason in reference.quarantine:
        assert (
            _sample(
                stream_text, "lakehouse_stream_quarantined_rows_total", tenant=tenant, reason=reason
            )
            >= reference.quarantine[(tenant, reason)]
        )
    for tenant in TENANTS:
        assert _sample(stream_text, "lakehouse_stream_lag_seconds", tenant=tenant) > 0
    assert _sample(stream_text, "lakehouse_stream_last_batch_timestamp_seconds") > 0
    assert (
        _sample(
            api_text, "lakehouse_api_requests_total", route="/tenants", method="GET", status="401"
        )
        >= 1
    )
