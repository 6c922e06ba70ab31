"""Prometheus in the embedded platform: Debian's ``prometheus`` under supervisord, on loopback.

One source with the docker-compose deployment: the scrape config is rendered from
``deploy/prometheus/prometheus.yml`` by putting, in each of its jobs, the loopback address the
settings give that component instead of the compose service name, and the rule file is
``deploy/prometheus/alerts.yml`` itself, named by its path in this repository. Only the targets
(and the interval, when ``LAKEHOUSE_PROMETHEUS_INTERVAL`` is set) differ.

Prometheus is optional: when its binary is missing, ``make run`` starts everything else and
says how to install it.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from include.embedded.paths import StatePaths
from include.settings import Settings

PROGRAM = "prometheus"
INSTALL_HINT = "apt-get install prometheus"
DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
COMPOSE_CONFIG = DEPLOY / "prometheus.yml"
# Compose keeps its TSDB this long (docker-compose.yaml); the embedded one the same.
RETENTION = "15d"


@dataclass(frozen=True)
class Target:
    """Where the embedded platform serves one compose job's metrics."""

    address: str
    # None keeps the compose job's metrics_path.
    metrics_path: str | None = None


def find_binary() -> Path | None:
    """The ``prometheus`` binary (Debian's package puts it in /usr/bin), or None."""
    found = shutil.which("prometheus")
    return Path(found) if found else None


def _loopback(host: str, port: int) -> str:
    # A service bound to every interface is still scraped on loopback.
    return f"{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"  # noqa: S104 - compared, not bound


def targets(settings: Settings) -> dict[str, Target | None]:
    """Each compose job's embedded target, or None where nothing serves that job here."""
    return {
        # pulsar-lite serves /metrics (its /metrics/ is a 404); Apache Pulsar serves /metrics/.
        "pulsar": Target(settings.pulsar_metrics_addr, "/metrics"),
        "stream": Target(settings.stream_metrics_addr),
        "api": Target(_loopback(settings.api_host, settings.api_port)),
        # postgres_exporter does not run in the embedded platform.
        "postgres": None,
        "prometheus": Target(settings.prometheus_addr),
    }


def config_dir(paths: StatePaths) -> Path:
    """The embedded Prometheus' folder in the state directory (its config and its TSDB)."""
    return paths.root / "prometheus"


def config_file(paths: StatePaths) -> Path:
    """The rendered config Prometheus reads."""
    return config_dir(paths) / "prometheus.yml"


def render_config(settings: Settings) -> dict[str, Any]:
    """The embedded config: compose's, with loopback targets and the repository's rule files.

    Raises ``ValueError`` for a compose job ``targets()`` does not know, so a job added to
    compose cannot silently go unscraped here.
    """
    compose = yaml.safe_load(COMPOSE_CONFIG.read_text(encoding="utf-8"))
    wanted = targets(settings)
    jobs = []
    for job in compose["scrape_configs"]:
        name = job["job_name"]
        if name not in wanted:
            raise ValueError(
                f"{COMPOSE_CONFIG} has job {name!r} without an embedded target: add it to "
                "targets() in include/embedded/prometheus.py"
            )
        target = wanted[name]
        if target is None:
            continue
        job = {**job, "static_configs": [{"targets": [target.address]}]}
        if target.metrics_path is not None:
            job["metrics_path"] = target.metrics_path
        jobs.append(job)
    global_config = dict(compose["global"])
    if settings.prometheus_interval is not None:
        global_config["scrape_interval"] = settings.prometheus_interval
        global_config["evaluation_interval"] = settings.prometheus_interval
    rules = [DEPLOY / Path(path).name for path in compose["rule_files"]]
    for path in rules:
        if not path.is_file():
            raise ValueError(f"{COMPOSE_CONFIG} names a rule file that is not in {DEPLOY}: {path}")
    return {
        "global": global_config,
        "rule_files": [str(path) for path in rules],
        "scrape_configs": jobs,
    }


def write_config(settings: Settings, paths: StatePaths) -> None:
    """Write the rendered config into the state directory (every ``up``, from the settings)."""
    config_dir(paths).mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(render_config(settings), sort_keys=False)
    config_file(paths).write_text(
        f"# Written by `make run` from {COMPOSE_CONFIG} and the settings; edits are overwritten.\n"
        + text,
        encoding="utf-8",
    )


def server_command(settings: Settings, paths: StatePaths, binary: Path) -> list[str]:
    """The foreground Prometheus command line the supervisor runs."""
    return [
        str(binary),
        f"--config.file={config_file(paths)}",
        f"--storage.tsdb.path={config_dir(paths) / 'data'}",
        f"--storage.tsdb.retention.time={RETENTION}",
        f"--web.listen-address={settings.prometheus_addr}",
    ]
