"""The Python worker daemon of the platform's Spark sessions' tasks: PySpark's own, with the
modules every task needs imported once, before it forks the workers.

PySpark's daemon forks a worker per task slot, and each worker then imports ``pyspark.worker``,
pyarrow, and (from the pickled function) this project's modules: about 1.5 s of CPU and 150 MB
of private memory per worker, every time the stream starts or a worker is replaced. Imported
here, the forks share those pages with the daemon (copy-on-write) and start at once. Set as
``spark.python.daemon.module`` by ``jobs.stream.session.create_session``. (The planning steps of
a Python data source, ``create_data_source`` and the like, always fork from ``pyspark.daemon``.)
"""

from __future__ import annotations

import contextlib
import gc
import os

# Arrow's default allocator (mimalloc) keeps what a task freed: a landing task of 28,000
# messages peaked 40 MiB higher with it than with the system allocator, and its freed pages
# stayed with the worker. With the system allocator one ``release_unused`` after a task returns
# Arrow's and Python's freed pages alike (``jobs.stream.worker_gc.returning_freed_memory``).
# Read when Arrow first allocates, so it is set before anything is imported or forked.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")

# Imported for their side effect (loaded modules), before any fork. A module that fails to
# import here fails again, with its error, in the task that needs it.
with contextlib.suppress(Exception):
    import pulsar  # noqa: F401
    import pyarrow.compute
    import pyarrow.parquet  # noqa: F401
    import pyspark.worker  # noqa: F401

    import jobs.stream.landing
    import jobs.stream.sink
    import jobs.stream.validate  # noqa: F401

from pyspark.daemon import manager

from jobs.stream.pandas_probe import answer_pandas_probes

if __name__ == "__main__":
    answer_pandas_probes()
    # Everything alive now lives as long as the daemon. Frozen, it is never walked by a forked
    # worker's collector, which writes to each object it visits (the GC header) and so would
    # copy every page of the shared heap into the worker.
    gc.freeze()
    manager()
