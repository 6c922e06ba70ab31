"""Static checks of the deployment's monitoring: the dashboards are provisionable Grafana JSON,
the alert rules are complete, the third-party allow-list is documented and used, the PromQL
name extraction the live check relies on is right, and the API's load series follow the
watermarks. No service runs (the live check is ``tests/integration/test_observability.py``)."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from tests.prometheus_config import (
    DASHBOARDS,
    DATASOURCES,
    EXTERNAL,
    alert_rules,
    assert_balanced,
    external_metrics,
    metric_names,
    sample,
    used_metric_names,
)


def test_metric_name_extraction() -> None:
    expr = (
        'sum by (tenant) (rate(a_total{tenant=~"$tenant", x="y(z"}[$__rate_interval])) '
        "/ on() group_left sum(b_seconds_bucket offset 5m) > 1e3 and time() - c > 0.5"
    )
    assert metric_names(expr) == {"a_total", "b_seconds_bucket", "c"}
    with pytest.raises(AssertionError):
        assert_balanced("sum(rate(x[5m])")


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
    rules = alert_rules()
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


def test_the_load_series_come_from_the_watermarks() -> None:
    from prometheus_client import generate_latest

    from api.observability import ApiMetrics, LoadWatermark

    api = ApiMetrics()
    before = generate_latest(api.registry).decode()
    assert "# TYPE lakehouse_load_rows_total counter" in before  # declared before any load
    assert "lakehouse_load_rows_total{" not in before
    api.loads.update([LoadWatermark("events", 7, 1234, 1_764_000_000.0)])
    after = generate_latest(api.registry).decode()
    assert sample(after, "lakehouse_load_rows_total", target="events") == 1234
    assert sample(after, "lakehouse_load_watermark_version", target="events") == 7
    assert (
        sample(after, "lakehouse_load_last_success_timestamp_seconds", target="events")
        == 1_764_000_000.0
    )
