"""The Python worker daemon of the Spark Connect server the loads run on: PySpark's own, with
the modules a load's COPY task needs imported once, before it forks the workers.

A load's task unpickles ``jobs.load.loader``'s copier, which imports pyarrow, psycopg, the
settings and the table catalog: about 0.6 s of CPU in every new worker, and Spark replaces idle
workers after a minute, the interval of ``load_postgres``. Imported here, a forked worker has
them already. Set as ``spark.python.daemon.module`` of the server (``include.embedded``,
``docker-compose.yaml``).
"""

from __future__ import annotations

import contextlib

# Imported for their side effect (loaded modules), before any fork. A module that fails to
# import here fails again, with its error, in the task that needs it.
with contextlib.suppress(Exception):
    import pyarrow.csv
    import pyarrow.parquet  # noqa: F401
    import pyspark.worker  # noqa: F401

    import jobs.load.loader  # noqa: F401

from pyspark.daemon import manager

if __name__ == "__main__":
    manager()
