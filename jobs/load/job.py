"""The load job: the lake into the PostgreSQL analytics tables.

The ``load_postgres`` and ``replay`` DAGs call ``load`` and ``replay`` in their task, as clients
of the platform's Spark Connect server (``remote``). One-off runs and clusters use
``spark-submit``::

    spark-submit --master 'local[2]' jobs/load/job.py load [--table events|event_items]
    spark-submit --master 'local[2]' jobs/load/job.py replay --tenant acme_shop \\
        --from 2026-11-01 --to 2026-11-30 --source delta|archive

or, without a JVM of their own, ``python jobs/load/job.py --remote sc://127.0.0.1:15002 load``.

``load`` moves what silver and event_items gained since the last load; ``replay`` reloads one
tenant's date range. Settings come from ``LAKEHOUSE_*`` (see the README). Prints one JSON
summary line per table.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast, get_args

# spark-submit puts only this file's folder on sys.path; the job imports the project's packages.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

if TYPE_CHECKING:
    from include.settings import Settings
    from jobs.load.loader import Session

# What `ps` shows while a load or replay runs in a process (an Airflow task, a script): the
# process to find when it must be watched or stopped.
PROCESS_TITLE = "lakehouse-load"


def shared_session_url(url: str, now: datetime) -> str:
    """``url`` (``sc://host:port[/;params]``) naming the server-side session every load and
    replay of this UTC hour shares.

    The server keeps a session's Python workers for its next operations: the first query of a
    new session takes 2.2-2.6 s here (workers started for it), a query of a session that ran
    one before 0.2-0.3 s. One session per hour keeps that for all but one load an hour, and a
    session is never reused after the server dropped it (an hour without a load closes it;
    the server refuses a closed session's id)."""
    if "session_id=" in url:
        return url
    hour = now.astimezone(UTC).strftime("%Y-%m-%dT%H")
    session = uuid.uuid5(uuid.NAMESPACE_URL, f"lakehouse-load/{hour}")
    base = url if "/;" in url or url.endswith("/") else url + "/"
    return f"{base};session_id={session}"


class SessionOnDemand:
    """The job's Spark session, started on first use: a load with nothing new to stage never
    connects to Spark (or starts a JVM), so an idle run costs a few database round trips."""

    def __init__(self, settings: Settings, remote: str | None) -> None:
        self._settings = settings
        self._remote = remote
        self._session: Session | None = None

    def __call__(self) -> Session:
        if self._session is None:
            if self._remote is not None:
                from pyspark.sql import SparkSession
                from pyspark.sql.connect.session import SparkSession as RemoteSession

                url = shared_session_url(self._remote, datetime.now(UTC))
                remote = cast(RemoteSession, SparkSession.builder.remote(url).getOrCreate())
                # Closing the client must leave the shared session to the next load.
                remote.release_session_on_close = False
                self._session = remote
            else:
                from jobs.stream.session import create_session

                s = self._settings
                self._session = create_session(
                    s.spark_master, "lakehouse-load", s.spark_driver_memory, s.spark_cores_max
                )
                self._session.sparkContext.setLogLevel("WARN")
        return self._session

    def stop(self) -> None:
        """Stop the session if one was started (a remote one only closes its connection)."""
        if self._session is not None:
            self._session.stop()
            self._session = None


@contextmanager
def _titled(what: str) -> Iterator[None]:
    from setproctitle import getproctitle, setproctitle

    before = getproctitle()
    setproctitle(f"{PROCESS_TITLE}: {what}")
    try:
        yield
    finally:
        setproctitle(before)


def load(
    tables: Sequence[str] | None = None,
    *,
    remote: str | None = None,
    settings: Settings | None = None,
) -> list[dict[str, Any]]:
    """Load what the lake's tables gained since the last load (all analytics tables unless
    ``tables`` names some); one summary per table. ``remote`` is a Spark Connect URL; without
    it the job runs its own Spark (under ``spark-submit``, the one it was submitted to).
    ``settings`` default to the environment's."""
    from include.settings import get_settings
    from include.warehouse.tables import ANALYTICS_TABLES, table_named
    from jobs.load.loader import load_table

    settings = settings or get_settings()
    names = list(tables or [t.name for t in ANALYTICS_TABLES])
    spark = SessionOnDemand(settings, remote)
    with _titled("load"):
        try:
            return [load_table(spark, settings, table_named(n)).__dict__ for n in names]
        finally:
            spark.stop()


def replay(
    tenant: str,
    start: date,
    end: date,
    source: str = "delta",
    *,
    remote: str | None = None,
    settings: Settings | None = None,
) -> list[dict[str, Any]]:
    """Reload ``tenant``'s events dated ``start``..``end`` from ``source`` (``delta`` or
    ``archive``) into every analytics table; one summary per table."""
    from include.settings import get_settings
    from jobs.load.replay import Source, replay_range

    if source not in get_args(Source):
        raise ValueError(f"source must be one of {get_args(Source)}, not {source!r}")
    settings = settings or get_settings()
    spark = SessionOnDemand(settings, remote)
    with _titled(f"replay {tenant}"):
        try:
            results = replay_range(spark, settings, tenant, start, end, cast(Source, source))
            return [result.__dict__ for result in results]
        finally:
            spark.stop()


def _parser() -> argparse.ArgumentParser:
    from include.warehouse.tables import ANALYTICS_TABLES

    parser = argparse.ArgumentParser(prog="jobs/load/job.py", description=__doc__.splitlines()[0])
    parser.add_argument("--remote", help="a Spark Connect URL to run on (sc://host:port)")
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("load", help="load what the lake gained since the last load")
    one.add_argument("--table", choices=[t.name for t in ANALYTICS_TABLES], action="append")
    again = commands.add_parser("replay", help="reload one tenant's date range")
    again.add_argument("--tenant", required=True)
    again.add_argument("--from", dest="start", required=True, type=date.fromisoformat)
    again.add_argument("--to", dest="end", required=True, type=date.fromisoformat)
    again.add_argument("--source", choices=["delta", "archive"], default="delta")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``spark-submit jobs/load/job.py`` (and ``python jobs/load/job.py``)."""
    import orjson

    from include.log import configure_logging
    from include.settings import get_settings

    args = _parser().parse_args(argv)
    configure_logging(get_settings().log_level)
    if args.command == "load":
        results = load(args.table, remote=args.remote)
    else:
        results = replay(args.tenant, args.start, args.end, args.source, remote=args.remote)
    for result in results:
        sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
