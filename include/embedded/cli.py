"""``python -m include.embedded up|down|reset|status|logs``: the embedded platform of ``make run``.

``up`` is idempotent: a second call keeps every byte of data, re-applies pending migrations and
starts whatever is not running.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
from pathlib import Path

from include.db import connect, wait_for_postgres
from include.embedded import airflow, broker, postgres, prereqs, prometheus, supervisor
from include.embedded.net import ephemeral_ports, port_in_use, wait_for_port
from include.embedded.paths import StatePaths
from include.log import configure_logging
from include.settings import Settings, get_settings
from include.sql.migrate import apply_migrations
from include.sql.roles import enable_api_role

log = logging.getLogger("lakehouse.embedded")
# STOPPED is a program nobody started (e.g. `up --without generator`), not a failure.
_HEALTHY_STATES = {"RUNNING", "STARTING", "STOPPED"}


def listen_addresses(settings: Settings) -> list[tuple[str, str, int, str]]:
    """Where each service listens: (what, host, port, the variable that sets it)."""
    pulsar_host, pulsar_port = broker.broker_address(settings)
    metrics_host, _, metrics_port = settings.pulsar_metrics_addr.rpartition(":")
    stream_host, _, stream_port = settings.stream_metrics_addr.rpartition(":")
    connect_host, _, connect_port = settings.spark_connect_addr.rpartition(":")
    wanted = [
        ("PostgreSQL", settings.pg_host, settings.pg_port, "LAKEHOUSE_PG_PORT"),
        ("pulsar-lite", pulsar_host, pulsar_port, "LAKEHOUSE_PULSAR_URL"),
        ("pulsar-lite metrics", metrics_host, int(metrics_port), "LAKEHOUSE_PULSAR_METRICS_ADDR"),
        ("stream metrics", stream_host, int(stream_port), "LAKEHOUSE_STREAM_METRICS_ADDR"),
        ("Spark Connect", connect_host, int(connect_port), "LAKEHOUSE_SPARK_CONNECT_ADDR"),
        ("the Airflow UI", "127.0.0.1", settings.airflow_port, "LAKEHOUSE_AIRFLOW_PORT"),
        ("the analytics API", settings.api_host, settings.api_port, "LAKEHOUSE_API_PORT"),
    ]
    if prometheus.find_binary() is not None:
        prom_host, _, prom_port = settings.prometheus_addr.rpartition(":")
        wanted.append(("Prometheus", prom_host, int(prom_port), "LAKEHOUSE_PROMETHEUS_ADDR"))
    return wanted


def _check_ports_free(settings: Settings) -> None:
    ephemeral = ephemeral_ports()
    for what, host, port, variable in listen_addresses(settings):
        if port in ephemeral:
            # Not an error: it works until a client socket happens to hold the port when the
            # service (re)starts, which then fails to bind and is restarted until it is free.
            log.warning(
                "port in the ephemeral range",
                extra={
                    "service": what,
                    "port": port,
                    "ephemeral": f"{ephemeral.start}-{ephemeral.stop - 1}",
                    "hint": f"any outgoing connection can hold it; set {variable} below "
                    f"{ephemeral.start}",
                },
            )
        if port_in_use(host, port):
            raise prereqs.MissingPrerequisiteError(
                f"{host}:{port}, wanted by {what}, is already in use by another process: "
                f"stop that process or set {variable}."
            )


def up(settings: Settings, *, apps: tuple[str, ...] = supervisor.APPS) -> None:
    """Start (or complete) the embedded platform and wait until it is ready.

    ``apps`` are the programs started once the services are ready and migrated.
    """
    prereqs.check_python()
    prereqs.check_java()
    prereqs.check_privilege_drop()
    if prometheus.PROGRAM in apps and prometheus.find_binary() is None:
        # Optional: everything else runs without it (the summary says how to install it).
        log.warning("prometheus is not installed", extra={"install": prometheus.INSTALL_HINT})
        apps = tuple(app for app in apps if app != prometheus.PROGRAM)
    bindir = prereqs.find_postgres_bindir(settings.pg_bindir)
    paths = StatePaths.under(settings.state_dir)
    paths.create()
    already_running = supervisor.supervisord_pid(paths) is not None
    if not already_running:
        _check_ports_free(settings)
    created = postgres.ensure_cluster(settings, paths, bindir)
    broker.write_config(settings, paths)
    prometheus.write_config(settings, paths)
    # The config carries the services' environment, secrets included: owner-only.
    paths.supervisor_config.touch(mode=0o600)
    paths.supervisor_config.chmod(0o600)
    paths.supervisor_config.write_text(supervisor.render_config(settings, paths, bindir))
    supervisor.start(paths)
    log.info(
        "supervisor up",
        extra={
            "state_dir": str(paths.root),
            "pgdata": str(postgres.data_dir(settings, paths)),
            "new_cluster": created,
            "was_running": already_running,
        },
    )
    wait_for_postgres_server(settings)
    postgres.ensure_database(settings)
    with connect(settings) as conn:
        applied = apply_migrations(conn)
        enable_api_role(conn, settings)
    log.info("migrations", extra={"applied_now": applied})
    wait_for_port(*broker.broker_address(settings), timeout_s=60)
    if any(app in supervisor.AIRFLOW_APPS for app in apps):
        postgres.ensure_database(settings, airflow.AIRFLOW_DATABASE)
        airflow.migrate(settings, paths)
        log.info("airflow metadata migrated", extra={"database": airflow.AIRFLOW_DATABASE})
    for app in apps:
        supervisor.ctl(paths, "start", app)
    supervisor.wait_running(paths, {"postgres", "pulsar", *apps})
    if supervisor.SPARK_CONNECT in apps:
        # RUNNING only says the JVM lives; a load needs its port open.
        host, _, port = settings.spark_connect_addr.rpartition(":")
        wait_for_port(host, int(port), timeout_s=180)
    if prometheus.PROGRAM in apps:
        host, _, port = settings.prometheus_addr.rpartition(":")
        wait_for_port(host, int(port), timeout_s=60)


def wait_for_postgres_server(settings: Settings) -> None:
    """Wait until the server answers (before the platform database may exist)."""
    admin = settings.model_copy(update={"pg_database": "postgres"})
    wait_for_postgres(admin, timeout_s=90)


def down(settings: Settings) -> bool:
    """Stop every process of the embedded platform; return whether anything was running."""
    return supervisor.shutdown(StatePaths.under(settings.state_dir))


def reset(settings: Settings) -> list[Path]:
    """Stop the platform and delete its data: the state directory and, when PostgreSQL's cluster
    lives outside it (started as root), that cluster's folder; return what was deleted."""
    down(settings)
    paths = StatePaths.under(settings.state_dir)
    deleted = []
    for folder in (*postgres.outside_homes(settings, paths), paths.root):
        if folder.exists():
            shutil.rmtree(folder)
            deleted.append(folder)
    return deleted


def _print_summary(settings: Settings) -> None:
    paths = StatePaths.under(settings.state_dir)
    print(
        "\nThe lakehouse runs (embedded default):\n"
        f"  PostgreSQL   postgresql://{settings.pg_user}@{settings.pg_host}:{settings.pg_port}/"
        f"{settings.pg_database}   password: {settings.pg_password.get_secret_value()}\n"
        f"  Pulsar       {settings.pulsar_url}   "
        f"metrics: http://{settings.pulsar_metrics_addr}/metrics\n"
        f"  Stream       Spark {settings.spark_master}   "
        f"metrics: http://{settings.stream_metrics_addr}/metrics   lake: {settings.lake}\n"
        f"  Batch        Spark Connect {settings.spark_connect_url} (loads, replays)\n"
        f"  Generator    {settings.generator_rate:g} events/s for "
        f"{', '.join(settings.demo_tenants)}\n"
        f"  Airflow      http://localhost:{settings.airflow_port}   login: {airflow.UI_USER} / "
        f"{airflow.ui_password(paths)}\n"
        f"  API          http://localhost:{settings.api_port}/docs   admin token: "
        f"{settings.admin_token.get_secret_value()}"
        + ("   tenant tokens: <tenant_id>-token (dev only)" if settings.env == "dev" else "")
        + "\n"
        + _prometheus_line(settings)
        + f"  State        {paths.root}   logs: {paths.logs}\n"
        + _pg_data_line(settings, paths)
        + "\n  make status   what runs     make logs   follow the logs     make stop   stop it all"
        + "\n"
    )


def _pg_data_line(settings: Settings, paths: StatePaths) -> str:
    # Said only when it is not where the README's table of the state directory puts it.
    data = postgres.data_dir(settings, paths)
    if data == paths.pg_data:
        return ""
    return f"  PG data      {data}   (OS user {settings.pg_os_user} cannot reach the state dir)\n"


def _prometheus_line(settings: Settings) -> str:
    if prometheus.find_binary() is None:
        return (
            f"  Prometheus   not installed: {prometheus.INSTALL_HINT} (as root), then "
            "make run again\n"
        )
    # Debian's build serves the classic UI: /classic/alerts, where upstream 3.x has /alerts.
    return (
        f"  Prometheus   http://{settings.prometheus_addr}   alerts: "
        f"http://{settings.prometheus_addr}/classic/alerts (deploy/prometheus/alerts.yml)\n"
    )


def status(settings: Settings) -> int:
    """Print each service's state; exit code 0 unless a service failed or is unreachable."""
    paths = StatePaths.under(settings.state_dir)
    infos = supervisor.process_info(paths)
    if not infos:
        print(f"The lakehouse is not running (state directory {paths.root}).")
        return 3
    for info in infos:
        print(f"  {info.name:<12} {info.state:<10} {info.description}")
    pg_ok = port_in_use(settings.pg_host, settings.pg_port)
    pulsar_ok = port_in_use(*broker.broker_address(settings))
    print(
        f"\n  PostgreSQL {settings.pg_host}:{settings.pg_port} "
        f"{'accepts connections' if pg_ok else 'NOT reachable'}"
    )
    pulsar_state = "accepts connections" if pulsar_ok else "NOT reachable"
    print(f"  Pulsar     {settings.pulsar_url} {pulsar_state}")
    print(f"  PostgreSQL data {postgres.data_dir(settings, paths)}")
    healthy = all(i.state in _HEALTHY_STATES for i in infos) and pg_ok and pulsar_ok
    return 0 if healthy else 1


def logs(settings: Settings, service: str | None, follow: bool) -> int:
    """Show the last lines of the services' logs, following them unless told not to."""
    paths = StatePaths.under(settings.state_dir)
    files = sorted(paths.logs.glob(f"{service}.log" if service else "*.log"))
    if not files:
        print(f"No logs under {paths.logs}" + (f" for {service}" if service else ""))
        return 1
    args = ["tail", "-n", "40", *(["-F"] if follow else []), *map(str, files)]
    os.execvp("tail", args)  # noqa: S606 - hands the terminal to tail, arguments are ours


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``make run``, ``stop``, ``reset``, ``status`` and ``logs``."""
    parser = argparse.ArgumentParser(prog="python -m include.embedded", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("up", help="start the embedded platform")
    run.add_argument(
        "--without",
        action="append",
        default=[],
        choices=supervisor.APPS,
        help="do not start this app (repeatable)",
    )
    commands.add_parser("down", help="stop every process")
    commands.add_parser("reset", help="stop every process and delete all local data")
    commands.add_parser("status", help="show what runs")
    show = commands.add_parser("logs", help="show the logs")
    show.add_argument(
        "service", nargs="?", help="one service (postgres, pulsar, stream, generator)"
    )
    show.add_argument("--no-follow", action="store_true")
    args = parser.parse_args(argv)
    try:
        settings = get_settings()
    except ValueError as exc:
        print(f"Invalid configuration: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    try:
        if args.command == "up":
            started = time.monotonic()
            up(settings, apps=tuple(a for a in supervisor.APPS if a not in args.without))
            _print_summary(settings)
            log.info("ready", extra={"seconds": round(time.monotonic() - started, 1)})
            return 0
        if args.command == "down":
            print("Stopped." if down(settings) else "Nothing was running.")
            return 0
        if args.command == "reset":
            print("Stopped." if down(settings) else "Nothing was running.")
            for folder in reset(settings):
                print(f"Deleted {folder}")
            return 0
        if args.command == "status":
            return status(settings)
        return logs(settings, args.service, not args.no_follow)
    except prereqs.MissingPrerequisiteError as exc:
        print(str(exc), file=sys.stderr)
        return 2
