"""The SparkSession of the streaming job (and of the tests that exercise it)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pyspark.sql import SparkSession

REPO_ROOT = Path(__file__).resolve().parents[2]


def create_session(master: str, app_name: str, driver_memory: str = "1g") -> SparkSession:
    """A session whose Python workers can import ``include`` and ``jobs``.

    ``driver_memory`` applies when this call starts the JVM (spark-submit sets its own)."""
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
        .getOrCreate()
    )
    session.dataSource.register(PulsarDataSource)
    return session
