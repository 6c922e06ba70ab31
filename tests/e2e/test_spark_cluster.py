"""The streaming job and the load job, unchanged, on a Spark standalone cluster.

A master and two workers start from pyspark's own ``spark-class`` (``tests.spark_cluster``),
with an environment that knows nothing of the project. The platform starts as ``make run``
does with ``LAKEHOUSE_SPARK_MASTER`` set to that master: supervisord's ``spark-submit`` of the
stream and of the Spark Connect server ``load_postgres`` runs on both submit there. The seeded
mix of ``test_end_to_end`` then must produce the same exact end state as in ``local`` mode,
and the master and the workers' folders must show that the stream and every load had an
executor on each worker, and that executors ran their tasks.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import orjson
import pytest

from include.embedded import supervisor
from jobs.stream.sink import TABLES
from tests.e2e.harness import MixRun, Platform, assert_end_state, run_mix
from tests.spark_cluster import SparkCluster, standalone_cluster

SEED = 707
COUNT = 3_000
# Each application takes one core of each worker: the stream and the Spark Connect server the
# loads run on hold their executors side by side (neither gives them back).
WORKER_CORES = 2
CORES_PER_APP = 2
LOGS = Path(__file__).resolve().parents[2] / "test-artifacts" / "spark-cluster-logs"
# One run for the module, set up inside its first test: the cluster's JVMs start on top of
# the platform's (about 6 minutes on a busy 2-core machine).
pytestmark = pytest.mark.timeout(2_400)


@dataclass
class ClusterRun:
    """The cluster and the platform after the run."""

    cluster: SparkCluster
    platform: Platform
    mix: MixRun

    def apps(self, name: str) -> list[dict[str, Any]]:
        """The master's applications called ``name`` (running or completed)."""
        return [a for a in self.cluster.applications() if a["name"] == name]


@pytest.fixture(scope="module")
def run() -> Iterator[ClusterRun]:
    with standalone_cluster(workers=2, cores=WORKER_CORES) as cluster:
        overrides = {"spark_master": cluster.url, "spark_cores_max": CORES_PER_APP}
        with Platform.start(**overrides) as platform:
            try:
                yield ClusterRun(cluster, platform, run_mix(platform, SEED, COUNT))
            finally:
                # Both folders go with the run: keep the services', daemons' and executors' logs.
                shutil.rmtree(LOGS, ignore_errors=True)
                shutil.copytree(platform.paths.logs, LOGS / "platform", dirs_exist_ok=True)
                shutil.copytree(cluster.root, LOGS / "cluster", dirs_exist_ok=True)


def test_the_end_state_is_exactly_the_one_of_local_mode(run: ClusterRun) -> None:
    assert_end_state(run.platform, run.mix.tokens, run.mix.expected)


def test_the_stream_runs_on_the_cluster_with_executors_on_both_workers(run: ClusterRun) -> None:
    # One application per start of the stream: supervisord restarts a stream that failed (on a
    # starved machine a Python worker can time out), and the restarted one resumes.
    streams = run.apps("lakehouse-stream")
    assert [a["state"] for a in streams].count("RUNNING") == 1, streams
    assert {a["cores"] for a in streams} == {CORES_PER_APP}
    for stream in streams:
        for worker in run.cluster.workers:
            assert worker.executor_dirs(stream["id"]), f"no stream executor on {worker.work_dir}"
    # The Pulsar reads and the validation are the stream's tasks: the executors of both workers
    # ran them (each batch has a task per tenant with new messages, over many batches).
    tasks = {
        w.work_dir.name: sum(w.tasks_run(a["id"]) for a in streams) for w in run.cluster.workers
    }
    assert all(n > 0 for n in tasks.values()), tasks


def _files_written_by_executors(run: ClusterRun) -> dict[str, set[str]]:
    """Worker folder name -> ``table/path`` of every Delta file the stream's executors there
    logged as written (``delta files written`` lines of ``jobs.stream.job._file_writer``)."""
    written: dict[str, set[str]] = {}
    for worker in run.cluster.workers:
        paths = written.setdefault(worker.work_dir.name, set())
        for app in run.apps("lakehouse-stream"):
            for line in worker.log_lines(app["id"]):
                if '"delta files written"' in line:
                    paths.update(orjson.loads(line[line.index("{") :])["files"])
    return written


def _stream_committed_files(lake: Path) -> set[str]:
    """Every data file a commit of the stream added, read from the Delta logs by hand: the
    stream's commits carry its app transaction (``txn``), maintenance's compactions (the
    ``archive_lake`` DAG also runs at start, and may compact the stream's first files) do not."""
    files = set()
    for table in TABLES:
        for commit in sorted((lake / table / "_delta_log").glob("*.json")):
            actions = [orjson.loads(line) for line in commit.read_bytes().splitlines() if line]
            if any("txn" in action for action in actions):
                # The log URL-encodes the paths once more than the files' own (Hive-escaped)
                # names, which is what the executors log.
                files |= {f"{table}/{unquote(a['add']['path'])}" for a in actions if "add" in a}
    return files


def test_the_stream_executors_wrote_every_delta_file_and_the_driver_none(
    run: ClusterRun,
) -> None:
    # Every data file the stream's commits added was written by an executor on a worker: the
    # driver commits files, it writes none. (A repair at a restart would write its batch's
    # files on the driver and fail this; the run has none.)
    by_worker = _files_written_by_executors(run)
    written = set().union(*by_worker.values())
    committed = _stream_committed_files(run.platform.settings.lake_dir)
    assert committed, "the stream committed no file"
    assert committed <= written, sorted(committed - written)[:5]
    assert {t.split("/")[0] for t in committed} == set(TABLES)


def test_each_load_ran_on_the_cluster_with_executors_on_both_workers(run: ClusterRun) -> None:
    # The loads are clients of one long-lived application, the Spark Connect server (one more
    # per restart of it by supervisord): its executors ran the loads' tasks.
    assert run.mix.load_runs
    servers = run.apps(supervisor.CONNECT_APP_NAME)
    assert [a["state"] for a in servers].count("RUNNING") == 1, servers
    assert {a["cores"] for a in servers} == {CORES_PER_APP}
    for server in servers:
        for worker in run.cluster.workers:
            assert worker.executor_dirs(server["id"]), f"no load executor on {worker.work_dir}"
    # The Parquet reads and the COPY into PostgreSQL are the loads' tasks: the executors of both
    # workers ran them (a load's file list is split into two tasks, one per executor core).
    tasks = {
        w.work_dir.name: sum(w.tasks_run(a["id"]) for a in servers) for w in run.cluster.workers
    }
    assert all(n > 0 for n in tasks.values()), tasks
