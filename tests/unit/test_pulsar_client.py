"""The project's Pulsar client sends the configured token in its CONNECT command.

A plain socket stands in for the broker and keeps the first frame the real client library sends,
so the test sees the bytes on the wire (pulsar-lite has no authentication to refuse a client)."""

from __future__ import annotations

import socket
import threading

import pytest
from pulsar.exceptions import PulsarException

from include.pulsar_client import pulsar_client
from include.settings import Settings


def _connect_frame(token: str | None) -> bytes:
    """The first frame the client sends to a broker on a fresh connection."""
    received: list[bytes] = []
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]

        def accept() -> None:
            conn, _ = server.accept()
            with conn:
                conn.settimeout(10)
                data = b""
                # A frame is its 4-byte big-endian size, then that many bytes.
                while len(data) < 4 or len(data) < 4 + int.from_bytes(data[:4], "big"):
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                received.append(data)
            server.close()  # a reconnect is refused at once instead of waiting for a timeout

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        client = pulsar_client(f"pulsar://127.0.0.1:{port}", token, operation_timeout_seconds=2)
        try:
            with pytest.raises(PulsarException):  # the stand-in never answers
                client.create_producer("persistent://public/default/auth-check")
        finally:
            client.close()
        thread.join(10)
    assert received, "the client sent nothing"
    return received[0]


def test_the_token_goes_into_the_connect_command() -> None:
    token = "eyJhbGciOiJIUzI1NiJ9.test-token-7f3a"
    frame = _connect_frame(token)
    assert b"token" in frame and token.encode() in frame


def test_without_a_token_no_credentials_are_sent() -> None:
    frame = _connect_frame(None)
    assert len(frame) > 8 and b"token" not in frame


def test_the_setting_is_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAKEHOUSE_PULSAR_AUTH_TOKEN", "s3cr3t-token")
    settings = Settings()
    assert settings.pulsar_token == "s3cr3t-token"
    assert "s3cr3t-token" not in repr(settings)
    monkeypatch.delenv("LAKEHOUSE_PULSAR_AUTH_TOKEN")
    assert Settings().pulsar_token is None
