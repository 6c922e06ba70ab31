"""The embedded pulsar-lite broker: its config file and command line."""

from __future__ import annotations

from urllib.parse import urlparse

from pulsar_lite.binary_finder import find_pulsar_lite_binary

from include.embedded.paths import StatePaths
from include.settings import Settings


def broker_address(settings: Settings) -> tuple[str, int]:
    """(host, port) of ``pulsar_url``."""
    parsed = urlparse(settings.pulsar_url)
    if parsed.scheme != "pulsar" or parsed.hostname is None or parsed.port is None:
        raise ValueError(
            f"LAKEHOUSE_PULSAR_URL must look like pulsar://host:port: {settings.pulsar_url}"
        )
    return parsed.hostname, parsed.port


def write_config(settings: Settings, paths: StatePaths) -> None:
    """Write the broker's config; metrics stay on loopback (its default binds 0.0.0.0:8080)."""
    host, port = broker_address(settings)
    paths.pulsar_config.write_text(
        f'addr = "{host}:{port}"\n'
        f'db_path = "{paths.pulsar_data}"\n'
        "default_partitions = 0\n"
        'log_level = "info"\n'
        "\n[metrics]\n"
        "enabled = true\n"
        f'addr = "{settings.pulsar_metrics_addr}"\n',
        encoding="utf-8",
    )


def server_command(paths: StatePaths) -> list[str]:
    """The foreground broker command line the supervisor runs."""
    return [find_pulsar_lite_binary(), "--config", str(paths.pulsar_config)]
