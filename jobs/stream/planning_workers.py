"""Ending the Python processes that planned the stream's query once it runs.

A Python data source is planned in Python: Spark looks the registered sources up, creates the
source and pickles its reader (``pyspark.sql.worker.lookup_data_sources``,
``create_data_source``, ``plan_data_source_read``), each module in a worker forked from a
``pyspark.daemon`` of its own. A streaming query does this once, when it starts; its batches
then run in the streaming source runner and the task workers. PySpark keeps each idle planning
worker for a minute and each daemon for the life of the application: 0.24 GiB (PSS) in
``make bench-stream`` while the first backlog drains, and three daemons (about 90 MiB) for good.

Spark has no public call for this. Its ``SparkEnv`` keeps one ``PythonWorkerFactory`` per
(interpreter, worker module, daemon module, environment) in the private field
``pythonWorkers``; ``stop_planning_workers`` takes the planning modules' factories out of it and
stops them (what ``SparkEnv.stop`` does to all of them: the daemon and its idle workers end).
Planning again (another query) creates new factories. If a Spark release renames the field,
nothing is stopped and a warning says so; ``tests/integration/test_stream.py`` fails then.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark import SparkContext

log = logging.getLogger(__name__)

PLANNING_MODULES = frozenset(
    {
        "pyspark.sql.worker.lookup_data_sources",
        "pyspark.sql.worker.create_data_source",
        "pyspark.sql.worker.plan_data_source_read",
    }
)


def stop_planning_workers(spark: SparkContext) -> list[str]:
    """Stop the driver's idle Python planning processes; return the worker modules stopped."""
    jvm = spark._jvm
    assert jvm is not None
    try:
        env = jvm.org.apache.spark.SparkEnv.get()
        field = env.getClass().getDeclaredField("pythonWorkers")
        field.setAccessible(True)
        factories = field.get(env)
        # SparkEnv changes the map under its own monitor, which py4j cannot hold: this runs
        # after the query's planning, when nothing else creates a Python worker factory.
        planning = []
        entries = factories.iterator()
        while entries.hasNext():
            entry = entries.next()
            if entry._1().workerModule() in PLANNING_MODULES:
                planning.append(entry)
        for entry in planning:
            factories.remove(entry._1())
    except Exception as error:  # a py4j error: Spark's internals changed
        log.warning("planning workers not stopped", extra={"error": str(error)})
        return []
    stopped = []
    for entry in planning:
        entry._2().stop()
        stopped.append(str(entry._1().workerModule()))
    log.info("planning workers stopped", extra={"modules": sorted(stopped)})
    return stopped
