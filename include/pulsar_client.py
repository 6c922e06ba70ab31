"""Pulsar clients whose own log lines go through Python logging (JSON on stderr), not stdout.

The C++ client's ``ConsoleLogger`` writes to stdout, which broke CLIs whose stdout carries a
JSON summary (the generator under load).
"""

from __future__ import annotations

import logging

import pulsar

_LOGGER = logging.getLogger("pulsar")
# The client logs every connect and lookup at INFO: only warnings are worth a line.
_LOGGER.setLevel(logging.WARNING)


def pulsar_client(service_url: str, operation_timeout_seconds: int = 30) -> pulsar.Client:
    """A client for ``service_url`` that logs warnings and errors through ``logging``."""
    return pulsar.Client(
        service_url, operation_timeout_seconds=operation_timeout_seconds, logger=_LOGGER
    )
