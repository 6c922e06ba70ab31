"""`make run` end to end: services up under supervision, crash restart, idempotent second run,
and a stop that leaves no process behind."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pulsar

from include.db import connect
from include.embedded import cli, prometheus, supervisor
from include.embedded.paths import StatePaths
from include.pulsar_client import pulsar_client
from include.pulsar_read import last_position
from include.settings import Settings
from include.tenants import topic_for
from tests.services import embedded_platform


def _processes_mentioning(text: str) -> list[int]:
    """Pids whose command line mentions ``text`` (the state directory)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and entry.name != str(os.getpid()):
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmdline:
                pids.append(int(entry.name))
    return pids


def _wait_for(predicate: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def _messages_in(settings: Settings, client: pulsar.Client, tenant: str) -> int:
    position = last_position(client, topic_for(tenant, settings.topic_template))
    return -1 if position is None else position[1]


def test_platform_lifecycle(capsys: object) -> None:
    with embedded_platform(
        apps=("generator",), demo_tenants=["life_shop", "cycle_shop"]
    ) as settings:
        paths = StatePaths.under(settings.state_dir)
        states = {p.name: p.state for p in supervisor.process_info(paths)}
        assert states == {
            "postgres": "RUNNING",
            "pulsar": "RUNNING",
            "generator": "RUNNING",
            "stream": "STOPPED",
            "api": "STOPPED",
            **{name: "STOPPED" for name in supervisor.BATCH_APPS},
            # Supervised when installed (make test-tools installs it), started only as an app.
            **({prometheus.PROGRAM: "STOPPED"} if prometheus.find_binary() else {}),
        }
        assert cli.status(settings) == 0

        # The generator publishes for its tenants and registered them.
        client = pulsar_client(settings.pulsar_url)
        try:
            _wait_for(lambda: _messages_in(settings, client, "life_shop") > 0, 30, "events")
        finally:
            client.close()
        with connect(settings) as conn:
            conn.execute("CREATE TABLE keep_me (id int)")
            conn.execute("INSERT INTO keep_me VALUES (42)")
            conn.commit()
            tenants = {r[0] for r in conn.execute("SELECT tenant_id FROM tenants")}
        assert {"life_shop", "cycle_shop"} <= tenants

        # A crashed broker is restarted by the supervisor.
        broker_pid = {p.name: p.pid for p in supervisor.process_info(paths)}["pulsar"]
        os.kill(broker_pid, signal.SIGKILL)
        _wait_for(
            lambda: any(
                p.name == "pulsar" and p.state == "RUNNING" and p.pid != broker_pid
                for p in supervisor.process_info(paths)
            ),
            30,
            "the broker to be restarted",
        )

        # A second `up` is harmless: same cluster, same data, everything still running.
        pg_version = (paths.pg_data / "PG_VERSION").stat().st_mtime
        cli.up(settings, apps=("generator",))
        assert {p.name: p.state for p in supervisor.process_info(paths)}["generator"] == "RUNNING"
        assert (paths.pg_data / "PG_VERSION").stat().st_mtime == pg_version
        with connect(settings) as conn:
            assert conn.execute("SELECT id FROM keep_me").fetchall() == [(42,)]
        running = _processes_mentioning(str(paths.root))
        assert running, "the services should mention the state directory"

    # `down` (make stop) left nothing behind.
    _wait_for(lambda: not _processes_mentioning(str(paths.root)), 10, "every process to exit")
    assert supervisor.supervisord_pid(paths) is None
