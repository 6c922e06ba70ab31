"""The SparkSession of the streaming job (and of the tests that exercise it)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pyspark.sql import SparkSession

REPO_ROOT = Path(__file__).resolve().parents[2]


def create_session(
    master: str, app_name: str, driver_memory: str = "1g", cores_max: int = 2
) -> SparkSession:
    """A session whose Python workers, local or on a cluster's executors, can import
    ``include`` and ``jobs``.

    ``driver_memory`` applies when this call starts the JVM (spark-submit sets its own).
    ``cores_max`` caps the cores the application takes on a standalone cluster, so the stream
    (which holds its executors for good) leaves cores for the loads."""
    # Python workers inherit the JVM's environment, which inherits ours.
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(REPO_ROOT) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *paths])
    # Workers must run this interpreter (the project's venv), not whatever python3 is on PATH.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from jobs.stream.pulsar_source import PulsarDataSource

    session = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", driver_memory)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        # A cluster's executors inherit their worker's environment, not ours: they find the
        # project at the driver's path (the same path on every host) and run the driver's
        # interpreter (Spark sends its path with each Python function).
        .config("spark.executorEnv.PYTHONPATH", str(REPO_ROOT))
        # Workers forked with pyarrow, pandas and the stream's modules already imported.
        .config("spark.python.daemon.module", "jobs.stream.worker_daemon")
        .config("spark.cores.max", str(cores_max))
        .getOrCreate()
    )
    session.dataSource.register(PulsarDataSource)
    return session
