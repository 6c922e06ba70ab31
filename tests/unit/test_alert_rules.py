"""The alert rules evaluated by Prometheus' own tool: ``promtool check rules`` parses
``deploy/prometheus/alerts.yml`` and ``promtool test rules`` runs its unit tests
(``deploy/prometheus/alerts_test.yml``: input series, and the alerts that must and must not fire).
Debian's ``prometheus`` package ships promtool (``make test-tools`` installs it)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.prometheus_config import ALERTS, alert_rules

RULE_TESTS = ALERTS.with_name("alerts_test.yml")
COMPOSE_CONFIG = ALERTS.with_name("prometheus.yml")


def _promtool(*args: str, cwd: Path = ALERTS.parent) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail(
            "promtool is missing: `make test-tools` installs it (apt-get install prometheus)"
        )
    return subprocess.run(
        [promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def test_promtool_accepts_the_rules() -> None:
    result = _promtool("check", "rules", ALERTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_accepts_the_compose_scrape_config() -> None:
    # Syntax only: its rule file path is the container's (/etc/prometheus/alerts.yml).
    result = _promtool("check", "config", "--syntax-only", COMPOSE_CONFIG.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rule_unit_tests_pass() -> None:
    result = _promtool("test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_rule_has_a_firing_and_a_silent_case() -> None:
    doc = yaml.safe_load(RULE_TESTS.read_text())
    assert doc["rule_files"] == [ALERTS.name], "the tests must load alerts.yml itself"
    firing: set[str] = set()
    silent: set[str] = set()
    for case in doc["tests"]:
        for check in case["alert_rule_test"]:
            (firing if check["exp_alerts"] else silent).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert firing == names, f"no firing case for {sorted(names - firing)}"
    assert silent == names, f"no silent case for {sorted(names - silent)}"


def test_a_wrong_expectation_fails(tmp_path: Path) -> None:
    """The rule tests are not vacuous: promtool fails when StreamStalled is expected silent
    where it fires."""
    shutil.copy(ALERTS, tmp_path / ALERTS.name)
    doc = yaml.safe_load(RULE_TESTS.read_text())
    for case in doc["tests"]:
        for check in case["alert_rule_test"]:
            if check["alertname"] == "StreamStalled" and check["exp_alerts"]:
                check["exp_alerts"] = []
    (tmp_path / RULE_TESTS.name).write_text(yaml.safe_dump(doc))
    result = _promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert result.returncode != 0
    assert "alertname: StreamStalled" in result.stdout + result.stderr
