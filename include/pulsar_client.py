"""Pulsar clients whose own log lines go to stderr, never to stdout.

The C++ client's ``ConsoleLogger`` writes to stdout, which broke CLIs whose stdout carries a
JSON summary (the generator under load). A Python ``logging.Logger`` is no better: the client's
background threads call into Python while the interpreter shuts down, and the process dies with
SIGABRT ("terminate called without an active exception"), seen once in CI. ``FileLogger`` on
stderr keeps the C++ client's logging in C++.
"""

from __future__ import annotations

import pulsar

_STDERR = "/dev/stderr"


def pulsar_client(
    service_url: str, auth_token: str | None = None, operation_timeout_seconds: int = 30
) -> pulsar.Client:
    """A client for ``service_url`` that logs warnings and errors to stderr.

    ``auth_token``: a token for Pulsar's token authentication (``LAKEHOUSE_PULSAR_AUTH_TOKEN``),
    for a cluster that requires it; None for a broker without authentication."""
    return pulsar.Client(
        service_url,
        authentication=pulsar.AuthenticationToken(auth_token) if auth_token else None,
        operation_timeout_seconds=operation_timeout_seconds,
        logger=pulsar.FileLogger(pulsar.LoggerLevel.Warn, _STDERR),
    )
