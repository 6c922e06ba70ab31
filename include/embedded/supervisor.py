"""supervisord for the embedded platform: its config, and start/stop/status through supervisorctl.

Each service is one ``[program:...]`` entry; supervisord restarts a crashed one. Later parts of
the platform (the streaming job, Airflow, the API) add one entry each in ``programs()``.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
import xmlrpc.client
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from supervisor.xmlrpc import SupervisorTransport

from include.embedded import airflow, broker, postgres, prometheus
from include.embedded.paths import StatePaths
from include.jvm import JVM_ENVIRONMENT
from include.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
# Programs started by `up` once the services are ready (autostart is off for them).
AIRFLOW_APPS = tuple(airflow.PROGRAMS)
SPARK_CONNECT = "spark-connect"
# What runs the DAGs and their batch work: Airflow, and the Spark Connect server loads run on.
BATCH_APPS = (SPARK_CONNECT, *AIRFLOW_APPS)
# Prometheus first, so it watches the others come up.
APPS = (prometheus.PROGRAM, "stream", "api", "generator", *BATCH_APPS)
# The Spark Connect server's main class; its jar ships in the pyspark wheel.
CONNECT_SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"
# Its Spark application name (a cluster master lists it).
CONNECT_APP_NAME = "lakehouse-spark-connect"


@dataclass(frozen=True)
class Program:
    """One supervised process."""

    name: str
    command: list[str]
    autostart: bool = True
    stopsignal: str = "TERM"
    stopwaitsecs: int = 30
    startsecs: int = 2
    # supervisord starts low priorities first and stops high ones first.
    priority: int = 500
    env: dict[str, str] = field(default_factory=dict)


def _spark_submit(master: str, driver_memory: str) -> list[str]:
    """``spark-submit`` of this venv with what every supervised Spark application shares."""
    return [
        str(Path(sys.executable).parent / "spark-submit"),
        "--master",
        master,
        "--driver-memory",
        driver_memory,
        "--conf",
        f"spark.pyspark.python={sys.executable}",
        "--conf",
        "spark.ui.enabled=false",
    ]


def programs(settings: Settings, paths: StatePaths, pg_bindir: Path) -> list[Program]:
    """Every service of the embedded platform, in start order."""
    tenants = ",".join(settings.demo_tenants)
    generator = [sys.executable, "-m", "generator", "continuous", "--tenants", tenants]
    generator += ["--rate", str(settings.generator_rate)]
    if settings.generator_seed is not None:
        generator += ["--seed", str(settings.generator_seed)]
    stream = [
        *_spark_submit(settings.spark_master, settings.spark_driver_memory),
        *("--driver-java-options", settings.spark_driver_java_options),
        str(REPO_ROOT / "jobs" / "stream" / "job.py"),
    ]
    connect_host, _, connect_port = settings.spark_connect_addr.rpartition(":")
    confs = {
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": "2",
        "spark.cores.max": str(settings.spark_cores_max),
        # Workers forked from a daemon that imported what a load task needs, once.
        "spark.python.daemon.module": "jobs.load.worker_daemon",
        "spark.executorEnv.PYTHONPATH": str(REPO_ROOT),
        "spark.connect.grpc.binding.address": connect_host,
        "spark.connect.grpc.binding.port": connect_port,
    }
    spark_connect = [
        *_spark_submit(settings.spark_master, settings.spark_connect_memory),
        *(arg for key, value in confs.items() for arg in ("--conf", f"{key}={value}")),
        *("--name", CONNECT_APP_NAME, "--class", CONNECT_SERVER_CLASS, "spark-internal"),
    ]
    # Spark's Python workers run this venv's interpreter and import the project.
    spark_env = {"PYSPARK_PYTHON": sys.executable, "PYTHONPATH": str(REPO_ROOT)}
    # Only when installed: supervisord cannot start a missing binary (cli.up says what to do).
    prometheus_bin = prometheus.find_binary()
    monitoring: list[Program] = []
    if prometheus_bin is not None:
        # Below the apps' priorities: it stops after them, so it sees them go.
        command = prometheus.server_command(settings, paths, prometheus_bin)
        monitoring.append(Program(prometheus.PROGRAM, command, autostart=False, priority=600))
    return [
        # SIGINT is PostgreSQL's "fast shutdown": clean, and quick.
        Program(
            "postgres",
            postgres.server_command(settings, paths, pg_bindir),
            stopsignal="INT",
            stopwaitsecs=60,
            startsecs=3,
            priority=100,
        ),
        Program("pulsar", broker.server_command(paths), priority=100),
        # Apps start once migrations ran; they stop first so they can finish their work.
        Program(
            "stream",
            stream,
            autostart=False,
            priority=800,
            stopwaitsecs=60,
            startsecs=5,
            env=spark_env | JVM_ENVIRONMENT,
        ),
        # The batch work's Spark (loads, replays): one JVM for every run instead of one per
        # run. Its Python workers run the load's COPY tasks, so they import the project.
        Program(
            SPARK_CONNECT,
            spark_connect,
            autostart=False,
            priority=650,
            stopwaitsecs=30,
            startsecs=5,
            env=spark_env,
        ),
        Program(
            "api",
            [sys.executable, "-m", "api"],
            autostart=False,
            priority=750,
            stopwaitsecs=20,
            env={"PYTHONPATH": str(REPO_ROOT)},
        ),
        Program("generator", generator, autostart=False, priority=900),
        *(
            Program(
                name,
                command,
                autostart=False,
                priority=700,
                stopwaitsecs=60,
                startsecs=5,
                env=airflow.airflow_env(settings, paths),
            )
            for name, command in airflow.program_commands().items()
        ),
        *monitoring,
    ]


def _escape(value: str) -> str:
    # supervisord expands %(...)s in values too, and a double quote would end the value.
    if '"' in value:
        raise ValueError(f"a supervised environment value cannot hold a double quote: {value!r}")
    return value.replace("%", "%%")


def render_config(settings: Settings, paths: StatePaths, pg_bindir: Path) -> str:
    """The supervisord.conf text."""
    lines = [
        "; Written by `make run` from the lakehouse settings; edits are overwritten.",
        "[unix_http_server]",
        f"file={paths.supervisor_socket}",
        "chmod=0700",
        "",
        "[supervisord]",
        f"logfile={paths.logs / 'supervisord.log'}",
        f"pidfile={paths.supervisor_pidfile}",
        f"childlogdir={paths.logs}",
        f"directory={REPO_ROOT}",
        "logfile_maxbytes=10MB",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
        "[supervisorctl]",
        f"serverurl=unix://{paths.supervisor_socket}",
        "",
    ]
    for program in programs(settings, paths, pg_bindir):
        env = {"PYTHONUNBUFFERED": "1", **program.env}
        lines += [
            f"[program:{program.name}]",
            # supervisord expands %(...)s; a literal percent sign must be doubled.
            "command=" + shlex.join(program.command).replace("%", "%%"),
            f"directory={REPO_ROOT}",
            f"autostart={str(program.autostart).lower()}",
            f"priority={program.priority}",
            "autorestart=true",
            f"startsecs={program.startsecs}",
            "startretries=10",
            f"stopsignal={program.stopsignal}",
            f"stopwaitsecs={program.stopwaitsecs}",
            "stopasgroup=true",
            "killasgroup=true",
            f"stdout_logfile={paths.logs / (program.name + '.log')}",
            "stdout_logfile_maxbytes=20MB",
            "stdout_logfile_backups=3",
            "redirect_stderr=true",
            "environment=" + ",".join(f'{k}="{_escape(v)}"' for k, v in env.items()),
            "",
        ]
    return "\n".join(lines)


def supervisord_pid(paths: StatePaths) -> int | None:
    """The pid of this state directory's running supervisord, or None."""
    try:
        pid = int(paths.supervisor_pidfile.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid


def ctl(paths: StatePaths, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``supervisorctl`` against this state directory's supervisord."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "supervisor.supervisorctl",
            "-c",
            str(paths.supervisor_config),
            *args,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    # supervisorctl exits non-zero when any program is not RUNNING; callers decide.
    if check and result.returncode not in (0, 3):
        raise RuntimeError(f"supervisorctl {' '.join(args)} failed: {result.stdout}{result.stderr}")
    return result


def start(paths: StatePaths) -> bool:
    """Start supervisord, or reload its config if it runs; return whether it was started now."""
    if supervisord_pid(paths) is not None:
        ctl(paths, "update")
        ctl(paths, "start", "postgres", "pulsar")
        return False
    subprocess.run(
        [sys.executable, "-m", "supervisor.supervisord", "-c", str(paths.supervisor_config)],
        check=True,
    )
    deadline = time.monotonic() + 15
    while not paths.supervisor_socket.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    return True


@dataclass(frozen=True)
class ProcessInfo:
    """What supervisord reports of one program."""

    name: str
    state: str
    pid: int
    description: str


def process_info(paths: StatePaths) -> list[ProcessInfo]:
    """State of every program, through supervisord's XML-RPC interface (empty if it is down)."""
    if supervisord_pid(paths) is None:
        return []
    transport = SupervisorTransport(None, None, f"unix://{paths.supervisor_socket}")
    proxy = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)
    infos: list[dict[str, Any]] = proxy.supervisor.getAllProcessInfo()  # type: ignore[assignment]
    return [ProcessInfo(i["name"], i["statename"], int(i["pid"]), i["description"]) for i in infos]


def wait_running(paths: StatePaths, names: set[str], timeout_s: float = 60.0) -> None:
    """Block until each named program is RUNNING (past its start grace), or raise."""
    deadline = time.monotonic() + timeout_s
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        states = {p.name: p.state for p in process_info(paths)}
        if all(states.get(name) == "RUNNING" for name in names):
            return
        time.sleep(0.2)
    raise TimeoutError(f"not all of {sorted(names)} are running after {timeout_s:.0f} s: {states}")


def shutdown(paths: StatePaths, timeout_s: float = 120.0) -> bool:
    """Stop every program and supervisord itself; return whether anything was running."""
    pid = supervisord_pid(paths)
    if pid is None:
        return False
    ctl(paths, "shutdown", check=False)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    raise TimeoutError(f"supervisord (pid {pid}) did not stop within {timeout_s:.0f} s")
