"""TCP helpers for waiting on services."""

from __future__ import annotations

import socket
import time
from pathlib import Path


def wait_for_port(host: str, port: int, timeout_s: float = 30.0) -> None:
    """Block until ``host:port`` accepts TCP connections, or raise ``TimeoutError``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout_s:.0f} s")


def port_in_use(host: str, port: int) -> bool:
    """Whether something already accepts connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


# Linux's default; where /proc is unreadable (another OS) this is the usual answer too.
_DEFAULT_EPHEMERAL = (32768, 60999)
EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def ephemeral_ports(source: Path = EPHEMERAL_RANGE_FILE) -> range:
    """The ports the kernel hands out as the local end of outgoing connections.

    A service told to listen on one of them can find it taken by any client socket of the
    machine (uvicorn then exits with status 3, PostgreSQL with "could not bind"); ports below
    this range are only ever taken by someone who asked for them.
    """
    try:
        low, high = (int(part) for part in source.read_text().split())
    except (OSError, ValueError):
        low, high = _DEFAULT_EPHEMERAL
    return range(low, high + 1)
