"""Test harness: the embedded platform on free ports in a temporary state directory."""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from include.embedded import cli
from include.embedded.net import ephemeral_ports
from include.settings import Settings

# Ports given out by this process: a platform takes eight at once, before any is bound.
_GIVEN: set[int] = set()
# Seeded from the OS: two test processes on one machine do not walk the same ports.
_CHOOSER = random.SystemRandom()
_BELOW_EPHEMERAL = 12_000


def free_port() -> int:
    """A TCP port nothing listens on right now, below the kernel's ephemeral range.

    A port the kernel handed out (``bind(0)``) is one it hands out again as the local end of
    any outgoing connection: between this choice and the service's bind, seconds later on a
    busy machine, a client socket can take it, and the service fails to start (Airflow's
    api-server exits with status 3). Ports below the range are taken only by a bind.
    """
    ephemeral = ephemeral_ports()
    low = max(1024, ephemeral.start - _BELOW_EPHEMERAL)
    for _ in range(200):
        port = _CHOOSER.randrange(low, ephemeral.start)
        if port in _GIVEN:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _GIVEN.add(port)
        return port
    raise RuntimeError(f"no free port in {low}-{ephemeral.start - 1} after 200 tries")


def isolated_settings(state_dir: Path, **overrides: object) -> Settings:
    """Settings for an isolated platform: free ports, fresh secrets, env=test."""
    values: dict[str, object] = {
        "env": "test",
        "state_dir": state_dir,
        "pg_port": free_port(),
        "pulsar_url": f"pulsar://127.0.0.1:{free_port()}",
        "pulsar_metrics_addr": f"127.0.0.1:{free_port()}",
        "stream_metrics_addr": f"127.0.0.1:{free_port()}",
        "spark_connect_addr": f"127.0.0.1:{free_port()}",
        "airflow_port": free_port(),
        "api_port": free_port(),
        "prometheus_addr": f"127.0.0.1:{free_port()}",
        "api_pg_password": secrets.token_urlsafe(16),
        "pg_password": secrets.token_urlsafe(16),
        "admin_token": secrets.token_urlsafe(16),
        "generator_rate": 200.0,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a subprocess the same settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAKEHOUSE_")}
    for name, value in settings.model_dump(mode="json").items():
        if hasattr(getattr(settings, name), "get_secret_value"):
            value = getattr(settings, name).get_secret_value()
        if value is None:
            continue
        env[f"LAKEHOUSE_{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    return env


def run_generator(settings: Settings, *args: str, timeout_s: float = 300) -> dict[str, Any]:
    """Run ``python -m generator ARGS`` against ``settings``' services; return its summary."""
    result = subprocess.run(
        [sys.executable, "-m", "generator", *args],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"generator failed ({result.returncode}):\n{result.stderr[-3000:]}")
    summary: dict[str, Any] = json.loads(result.stdout)
    return summary


def make_state_dir() -> Path:
    """A temporary state directory the PostgreSQL OS user can traverse (pytest's are 0700)."""
    path = Path(tempfile.mkdtemp(prefix="lakehouse-test-", dir="/tmp"))
    path.chmod(0o755)
    return path


@contextmanager
def embedded_platform(*, apps: tuple[str, ...] = (), **overrides: object) -> Iterator[Settings]:
    """Start PostgreSQL and pulsar-lite (and the named apps) under supervisord."""
    state_dir = make_state_dir()
    settings = isolated_settings(state_dir, **overrides)
    old_env = os.environ.copy()
    # Supervised children inherit supervisord's environment: give them these settings.
    os.environ.update(settings_env(settings))
    try:
        cli.up(settings, apps=apps)
        yield settings
    finally:
        try:
            cli.down(settings)
        finally:
            os.environ.clear()
            os.environ.update(old_env)
            shutil.rmtree(state_dir, ignore_errors=True)
