"""The load job: the lake into the PostgreSQL analytics tables.

Run by the ``load_postgres`` and ``replay`` DAGs through ``SparkSubmitOperator``, or by hand::

    spark-submit --master 'local[2]' jobs/load/job.py load [--table events|event_items]
    spark-submit --master 'local[2]' jobs/load/job.py replay --tenant acme_shop \\
        --from 2026-11-01 --to 2026-11-30 --source delta|archive

``load`` moves what silver and event_items gained since the last load; ``replay`` reloads one
tenant's date range. Settings come from ``LAKEHOUSE_*`` (see the README). Prints one JSON
summary line per table.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path

# spark-submit puts only this file's folder on sys.path; the job imports the project's packages.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def _parser() -> argparse.ArgumentParser:
    from include.warehouse.tables import ANALYTICS_TABLES

    parser = argparse.ArgumentParser(prog="jobs/load/job.py", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    load = commands.add_parser("load", help="load what the lake gained since the last load")
    load.add_argument("--table", choices=[t.name for t in ANALYTICS_TABLES], action="append")
    replay = commands.add_parser("replay", help="reload one tenant's date range")
    replay.add_argument("--tenant", required=True)
    replay.add_argument("--from", dest="start", required=True, type=date.fromisoformat)
    replay.add_argument("--to", dest="end", required=True, type=date.fromisoformat)
    replay.add_argument("--source", choices=["delta", "archive"], default="delta")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``spark-submit jobs/load/job.py``."""
    import orjson

    from include.log import configure_logging
    from include.settings import get_settings
    from include.warehouse.tables import ANALYTICS_TABLES, table_named
    from jobs.load.loader import load_table
    from jobs.load.replay import replay
    from jobs.stream.session import create_session

    args = _parser().parse_args(argv)
    settings = get_settings()
    configure_logging(settings.log_level)
    spark = create_session(
        settings.spark_master,
        "lakehouse-load",
        settings.spark_driver_memory,
        settings.spark_cores_max,
    )
    spark.sparkContext.setLogLevel("WARN")
    try:
        if args.command == "load":
            names = args.table or [t.name for t in ANALYTICS_TABLES]
            results = [load_table(spark, settings, table_named(n)) for n in names]
        else:
            results = replay(spark, settings, args.tenant, args.start, args.end, args.source)
    finally:
        spark.stop()
    for result in results:
        sys.stdout.write(orjson.dumps(result.__dict__).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
