"""The Prometheus side of the deployment as data: the dashboards, alert rules and the allow-list
of third-party metrics under ``deploy/``, the metric names a PromQL expression selects, and the
samples of a text exposition. Shared by the static checks (``tests/unit``) and the live one
(``tests/integration/test_observability.py``)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
EXTERNAL = DEPLOY / "prometheus" / "external-metrics.yml"
DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
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


def dashboard_exprs() -> list[tuple[str, str]]:
    out = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            out += [(f"{path.name}: {panel['title']}", t["expr"]) for t in panel["targets"]]
    return out


def variable_metrics() -> set[str]:
    names = set()
    for path in DASHBOARDS:
        for variable in json.loads(path.read_text())["templating"]["list"]:
            match = _LABEL_VALUES.match(variable["query"]["query"])
            assert match, f"{path.name}: unexpected variable query {variable['query']}"
            names.add(match.group(1))
    return names


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def used_metric_names() -> set[str]:
    """Every metric name the dashboards and alert rules use."""
    names = variable_metrics()
    for _where, expr in dashboard_exprs():
        names |= metric_names(expr)
    for rule in alert_rules():
        names |= metric_names(rule["expr"])
    return names


def external_metrics() -> dict[str, set[str]]:
    """The documented allow-list: source -> metric names."""
    doc = yaml.safe_load(EXTERNAL.read_text())
    return {name: set(source["metrics"]) for name, source in doc["sources"].items()}


def exported(text: str) -> set[str]:
    """Names of the samples in a Prometheus text exposition."""
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


def sample(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    raise AssertionError(f"no sample {name}{labels}")
