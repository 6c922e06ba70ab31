"""
### stream_watchdog

Checks every few minutes that the streaming job keeps up, and **fails** (red in the UI) when it
does not:

- *stalled*: messages wait on a tenant's topic and no micro-batch committed for
  `LAKEHOUSE_WATCHDOG_STALE_SECONDS` (an idle stream with nothing to read is fine);
- *lagging*: the last micro-batch's lag exceeded `LAKEHOUSE_WATCHDOG_MAX_LAG_SECONDS`.

It reads the `stream_heartbeat` row the job writes with every batch, and the topics' newest
message ids. One quick retry absorbs a passing hiccup (PostgreSQL restarting); a real stall
survives it and turns the run red.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import dag, task

from include.orchestration import DEFAULT_ARGS, START_DATE


@dag(
    dag_id="stream_watchdog",
    description="Fails when the streaming job is stalled or lagging",
    doc_md=__doc__,
    schedule=timedelta(minutes=3),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args={**DEFAULT_ARGS, "retries": 1, "retry_delay": timedelta(seconds=20)},
    tags=["lakehouse", "stream", "monitoring"],
)
def stream_watchdog() -> None:
    @task
    def check_stream() -> dict[str, Any]:
        """Raise when the stream is unhealthy; return what was seen (shown as XCom)."""
        from include.settings import get_settings
        from include.stream_health import check_stream

        health = check_stream(get_settings())
        return {
            "batch_id": health.batch_id,
            "heartbeat_age_seconds": health.heartbeat_age_seconds,
            "lag_seconds": health.lag_seconds,
            "waiting_topics": list(health.waiting_topics),
        }

    check_stream()


stream_watchdog()
