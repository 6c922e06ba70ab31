"""Listen ports and the kernel's ephemeral range: what made Airflow's api-server exit with
status 3 in tests (a client socket held the port it was given)."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest

from include.embedded import cli
from include.embedded.net import ephemeral_ports
from include.settings import Settings
from tests.services import free_port, isolated_settings


def test_the_ephemeral_range_is_read_from_the_kernel_file(tmp_path: Path) -> None:
    source = tmp_path / "ip_local_port_range"
    source.write_text("40000\t50000\n")
    assert ephemeral_ports(source) == range(40000, 50001)


def test_an_unreadable_range_falls_back_to_linux_default(tmp_path: Path) -> None:
    assert ephemeral_ports(tmp_path / "missing") == range(32768, 61000)
    garbled = tmp_path / "garbled"
    garbled.write_text("not ports")
    assert ephemeral_ports(garbled) == range(32768, 61000)


def test_free_ports_are_below_the_ephemeral_range_distinct_and_bindable() -> None:
    ephemeral = ephemeral_ports()
    ports = [free_port() for _ in range(40)]
    assert len(set(ports)) == len(ports)
    assert all(1024 <= port < ephemeral.start for port in ports), ports
    for port in ports[:5]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_a_test_platform_is_given_no_port_a_client_socket_can_take(tmp_path: Path) -> None:
    settings = isolated_settings(tmp_path)
    ephemeral = ephemeral_ports()
    taken = [port for *_, port, _ in cli.listen_addresses(settings) if port in ephemeral]
    assert taken == []


def test_starting_on_an_ephemeral_port_warns_and_names_the_variable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ephemeral = ephemeral_ports()
    settings: Settings = isolated_settings(tmp_path, airflow_port=ephemeral.start + 7)
    with caplog.at_level(logging.WARNING, logger="lakehouse.embedded"):
        cli._check_ports_free(settings)
    warned = [r for r in caplog.records if r.getMessage() == "port in the ephemeral range"]
    assert [(r.service, r.port) for r in warned] == [  # type: ignore[attr-defined]
        ("the Airflow UI", ephemeral.start + 7)
    ]
    assert "LAKEHOUSE_AIRFLOW_PORT" in warned[0].hint  # type: ignore[attr-defined]


def test_default_ports_are_below_the_ephemeral_range() -> None:
    settings = Settings.model_construct()  # the defaults, whatever the environment says
    ephemeral = ephemeral_ports()
    taken = [(what, port) for what, _, port, _ in cli.listen_addresses(settings)]
    assert [(what, port) for what, port in taken if port in ephemeral] == []
