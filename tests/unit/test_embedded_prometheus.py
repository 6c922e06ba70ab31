"""The embedded Prometheus' config is compose's (deploy/prometheus/prometheus.yml) with loopback
targets from the settings and the repository's alerts.yml itself; Prometheus accepts it."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from include.embedded import prometheus
from include.embedded.paths import StatePaths
from include.embedded.supervisor import render_config
from include.settings import Settings
from tests.prometheus_config import ALERTS


def _settings(tmp_path: Path, **values: object) -> Settings:
    return Settings(
        state_dir=tmp_path,
        pulsar_metrics_addr="127.0.0.1:19650",
        stream_metrics_addr="127.0.0.1:19651",
        api_port=18000,
        prometheus_addr="127.0.0.1:19652",
        **values,  # type: ignore[arg-type]
    )


def test_every_compose_job_is_scraped_on_loopback_with_the_same_rules(tmp_path: Path) -> None:
    compose = yaml.safe_load(prometheus.COMPOSE_CONFIG.read_text())
    config = prometheus.render_config(_settings(tmp_path))
    assert config["rule_files"] == [str(ALERTS)], "the rule file is the repository's own"
    assert config["global"] == compose["global"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert {job: j["static_configs"] for job, j in jobs.items()} == {
        "pulsar": [{"targets": ["127.0.0.1:19650"]}],
        "stream": [{"targets": ["127.0.0.1:19651"]}],
        "api": [{"targets": ["127.0.0.1:18000"]}],
        "prometheus": [{"targets": ["127.0.0.1:19652"]}],
    }
    # Everything else of each job is compose's, but pulsar-lite's path (no trailing slash).
    for job in compose["scrape_configs"]:
        if job["job_name"] in jobs:
            ours = {k: v for k, v in jobs[job["job_name"]].items() if k != "static_configs"}
            theirs = {k: v for k, v in job.items() if k != "static_configs"}
            if job["job_name"] == "pulsar":
                theirs["metrics_path"] = "/metrics"
            assert ours == theirs
    # postgres_exporter does not run in the embedded platform: no target that is always down.
    assert "postgres" not in jobs


def test_the_interval_setting_changes_scrape_and_evaluation_only(tmp_path: Path) -> None:
    config = prometheus.render_config(_settings(tmp_path, prometheus_interval="2s"))
    assert config["global"] == {"scrape_interval": "2s", "evaluation_interval": "2s"}
    with pytest.raises(ValueError, match="prometheus_interval"):
        _settings(tmp_path, prometheus_interval="2 seconds")


def test_a_compose_job_without_an_embedded_target_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compose = yaml.safe_load(prometheus.COMPOSE_CONFIG.read_text())
    compose["scrape_configs"].append({"job_name": "minio", "static_configs": [{"targets": ["m"]}]})
    fake = tmp_path / "prometheus.yml"
    fake.write_text(yaml.safe_dump(compose))
    monkeypatch.setattr(prometheus, "COMPOSE_CONFIG", fake)
    with pytest.raises(ValueError, match="'minio' without an embedded target"):
        prometheus.render_config(_settings(tmp_path))


def test_promtool_accepts_the_written_config(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail(
            "promtool is missing: `make test-tools` installs it (apt-get install prometheus)"
        )
    paths = StatePaths.under(tmp_path)
    prometheus.write_config(_settings(tmp_path, prometheus_interval="2s"), paths)
    result = subprocess.run(
        [promtool, "check", "config", str(prometheus.config_file(paths))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout


def test_supervised_only_when_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = StatePaths.under(tmp_path)
    settings = _settings(tmp_path)
    bindir = Path("/usr/lib/postgresql/15/bin")
    monkeypatch.setattr(prometheus, "find_binary", lambda: Path("/usr/bin/prometheus"))
    parser = configparser.RawConfigParser()
    parser.read_string(render_config(settings, paths, bindir))
    command = parser.get("program:prometheus", "command").split()
    assert command[0] == "/usr/bin/prometheus"
    assert f"--config.file={prometheus.config_file(paths)}" in command
    assert f"--storage.tsdb.path={tmp_path / 'prometheus' / 'data'}" in command
    assert "--web.listen-address=127.0.0.1:19652" in command
    assert parser.get("program:prometheus", "autostart") == "false"
    monkeypatch.setattr(prometheus, "find_binary", lambda: None)
    parser = configparser.RawConfigParser()
    parser.read_string(render_config(settings, paths, bindir))
    assert not parser.has_section("program:prometheus")


def test_make_run_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from include.embedded import cli

    # An explicit address: earlier tests' platforms export theirs into the environment.
    settings = Settings(prometheus_addr="127.0.0.1:19652")
    monkeypatch.setattr(prometheus, "find_binary", lambda: None)
    line = cli._prometheus_line(settings)
    assert "not installed: apt-get install prometheus" in line
    monkeypatch.setattr(prometheus, "find_binary", lambda: Path("/usr/bin/prometheus"))
    assert "http://127.0.0.1:19652/classic/alerts" in cli._prometheus_line(settings)
