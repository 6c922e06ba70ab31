"""A Spark standalone cluster for tests: one master and N workers, started from pyspark's own
``bin/spark-class`` (the wheel ships no ``start-master.sh``), on free ports in a temporary
folder.

``standalone_cluster()`` waits until every worker is registered with the master, and on exit
stops every JVM it started (the master, the workers and the executors the workers launched)
by process group, so no JVM outlives the test. The workers get the environment of a cluster
that knows nothing of the project: no ``PYTHONPATH``, no ``PYSPARK_PYTHON``, no
``LAKEHOUSE_*``; what an application's executors need must come from the application.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pyspark

from tests.services import free_port

SPARK_CLASS = Path(pyspark.__file__).parent / "bin" / "spark-class"
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
# The project's settings and paths must reach executors through the application only.
_WITHHELD = ("PYTHONPATH", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON", "SPARK_HOME")


@dataclass(frozen=True)
class Worker:
    """One worker: its folder of application runs (``<app-id>/<executor-id>/stderr``)."""

    work_dir: Path
    webui_port: int

    def executor_dirs(self, app_id: str) -> list[Path]:
        """The folders of the executors ``app_id`` ran on this worker."""
        app_dir = self.work_dir / app_id
        return sorted(p for p in app_dir.iterdir() if p.is_dir()) if app_dir.is_dir() else []

    def log_lines(self, app_id: str) -> list[str]:
        """Every line of ``app_id``'s executors' logs (``stderr``) on this worker."""
        return [
            line
            for d in self.executor_dirs(app_id)
            if (d / "stderr").exists()
            for line in (d / "stderr").read_text(errors="replace").splitlines()
        ]

    def tasks_run(self, app_id: str) -> int:
        """Tasks that ``app_id``'s executors on this worker started (from their logs)."""
        return sum(
            (d / "stderr").read_text(errors="replace").count("Executor: Running task")
            for d in self.executor_dirs(app_id)
            if (d / "stderr").exists()
        )


@dataclass
class SparkCluster:
    """A running standalone cluster."""

    root: Path
    port: int
    webui_port: int
    workers: list[Worker] = field(default_factory=list)
    _processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The master URL applications connect to (``spark://127.0.0.1:PORT``)."""
        return f"spark://127.0.0.1:{self.port}"

    def state(self) -> dict[str, Any]:
        """The master's JSON state (workers, active and completed applications)."""
        response = httpx.get(f"http://127.0.0.1:{self.webui_port}/json/", timeout=10)
        response.raise_for_status()
        state: dict[str, Any] = response.json()
        return state

    def applications(self) -> list[dict[str, Any]]:
        """Every application the master has seen, running or completed."""
        state = self.state()
        return [*state.get("activeapps", []), *state.get("completedapps", [])]

    def wait_workers(self, count: int, timeout_s: float) -> None:
        """Block until ``count`` workers are registered and alive."""
        deadline = time.monotonic() + timeout_s
        last: object = None
        while time.monotonic() < deadline:
            self._assert_alive()
            try:
                alive = [w for w in self.state()["workers"] if w["state"] == "ALIVE"]
                if len(alive) >= count:
                    return
                last = alive
            except httpx.HTTPError as error:
                last = error
            time.sleep(0.5)
        raise AssertionError(f"{count} Spark workers did not register in time: {last}; {self.root}")

    def _assert_alive(self) -> None:
        ended = [p.args for p in self._processes if p.poll() is not None]
        assert not ended, f"a Spark daemon ended early: {ended}; logs in {self.root}"

    def _spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if k not in _WITHHELD}
        env = {k: v for k, v in env.items() if not k.startswith("LAKEHOUSE_")}
        env["SPARK_LOCAL_IP"] = "127.0.0.1"
        log = (self.root / f"{name}.log").open("wb")
        with log:
            # Its own process group: stop() ends the daemon and every executor it launched.
            process = subprocess.Popen(
                [str(SPARK_CLASS), *args],
                cwd=self.root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._processes.append(process)
        return process

    def start_master(self) -> None:
        self._spawn(
            "master",
            MASTER_CLASS,
            *("--host", "127.0.0.1", "--port", str(self.port)),
            *("--webui-port", str(self.webui_port)),
        )

    def start_worker(self, cores: int, memory: str) -> Worker:
        worker = Worker(self.root / f"worker-{len(self.workers) + 1}", free_port())
        worker.work_dir.mkdir()
        self._spawn(
            worker.work_dir.name,
            WORKER_CLASS,
            self.url,
            *("--host", "127.0.0.1", "--cores", str(cores), "--memory", memory),
            *("--work-dir", str(worker.work_dir), "--webui-port", str(worker.webui_port)),
        )
        self.workers.append(worker)
        return worker

    def stop(self, timeout_s: float = 30) -> None:
        """SIGTERM each daemon's process group (workers first), SIGKILL what remains after
        ``timeout_s``; fail if any process of those groups is still there."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for process in reversed(self._processes):
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, sig)
            deadline = time.monotonic() + timeout_s
            while self._groups_left() and time.monotonic() < deadline:
                time.sleep(0.2)
        left = self._groups_left()
        assert not left, f"Spark processes outlived the cluster: process groups {left}"

    def _groups_left(self) -> list[int]:
        for process in self._processes:
            process.poll()  # reap an ended daemon, or its group looks alive
        return [p.pid for p in self._processes if _group_alive(p.pid)]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@contextmanager
def standalone_cluster(
    workers: int = 2, cores: int = 2, memory: str = "2g", timeout_s: float = 120
) -> Iterator[SparkCluster]:
    """A master and ``workers`` workers of ``cores`` cores and ``memory`` each, registered."""
    root = Path(tempfile.mkdtemp(prefix="lakehouse-spark-", dir="/tmp"))
    cluster = SparkCluster(root, free_port(), free_port())
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, root, ignore_errors=True)
        stack.callback(cluster.stop)
        cluster.start_master()
        for _ in range(workers):
            cluster.start_worker(cores, memory)
        cluster.wait_workers(workers, timeout_s)
        yield cluster
