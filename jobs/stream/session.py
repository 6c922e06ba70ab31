"""The SparkSession of the streaming job (and of the tests that exercise it)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pyspark.sql import SparkSession

from include.jvm import JVM_ENVIRONMENT

REPO_ROOT = Path(__file__).resolve().parents[2]


def create_session(
    master: str,
    app_name: str,
    driver_memory: str = "1g",
    cores_max: int = 2,
    driver_java_options: str = "",
) -> SparkSession:
    """A session whose Python workers, local or on a cluster's executors, can import
    ``include`` and ``jobs``.

    ``driver_memory`` and ``driver_java_options`` apply when this call starts the JVM
    (spark-submit sets its own).
    ``cores_max`` caps the cores the application takes on a standalone cluster, so the stream
    (which holds its executors for good) leaves cores for the loads."""
    # Python workers inherit the JVM's environment, which inherits ours.
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(REPO_ROOT) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *paths])
    # Workers must run this interpreter (the project's venv), not whatever python3 is on PATH.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    # The JVM (and the Python workers it starts) inherits our environment.
    for name, value in JVM_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    from jobs.stream.pandas_probe import answer_pandas_probes
    from jobs.stream.pulsar_source import PulsarDataSource

    answer_pandas_probes()

    builder = (
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
        # Workers forked with pyarrow and the stream's modules already imported.
        .config("spark.python.daemon.module", "jobs.stream.worker_daemon")
        .config("spark.cores.max", str(cores_max))
    )
    if driver_java_options:
        builder = builder.config("spark.driver.extraJavaOptions", driver_java_options)
    session = builder.getOrCreate()
    session.dataSource.register(PulsarDataSource)
    return session
