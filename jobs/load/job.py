"""The load job: what silver and event_items gained since the last load, into PostgreSQL.

Run by the ``load_postgres`` DAG through ``SparkSubmitOperator``, or by hand::

    spark-submit --master 'local[2]' jobs/load/job.py [--table events|event_items]

Settings come from ``LAKEHOUSE_*`` (see the README). Prints one JSON summary per table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# spark-submit puts only this file's folder on sys.path; the job imports the project's packages.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``spark-submit jobs/load/job.py``."""
    import orjson

    from include.log import configure_logging
    from include.settings import get_settings
    from include.warehouse.tables import ANALYTICS_TABLES, table_named
    from jobs.load.loader import load_table
    from jobs.stream.session import create_session

    parser = argparse.ArgumentParser(prog="jobs/load/job.py", description=__doc__.splitlines()[0])
    parser.add_argument("--table", choices=[t.name for t in ANALYTICS_TABLES], action="append")
    args = parser.parse_args(argv)
    settings = get_settings()
    configure_logging(settings.log_level)
    spark = create_session(settings.spark_master, "lakehouse-load", settings.spark_driver_memory)
    spark.sparkContext.setLogLevel("WARN")
    tables = [table_named(n) for n in args.table] if args.table else list(ANALYTICS_TABLES)
    for table in tables:
        result = load_table(spark, settings, table)
        sys.stdout.write(orjson.dumps(result.__dict__).decode() + "\n")
    spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
