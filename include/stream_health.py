"""Is the streaming job keeping up? Read by the ``stream_watchdog`` DAG (and the API).

The job writes a heartbeat row with every batch it commits. An idle stream commits no batches,
so an old heartbeat alone is no alarm: the job is **stalled** only when messages are waiting on
some tenant's topic beyond the last committed offsets *and* no batch committed for
``watchdog_stale_seconds``. It is **lagging** when its last batch's lag (now minus the oldest
publish time in it) exceeded ``watchdog_max_lag_seconds``.
"""

from __future__ import annotations

from dataclasses import dataclass

from include.db import connect
from include.pulsar_client import pulsar_client
from include.pulsar_read import covers, last_position
from include.settings import Settings
from include.tenants import list_tenants, topic_for


class StreamUnhealthyError(RuntimeError):
    """The streaming job is stalled or too far behind."""


@dataclass(frozen=True)
class StreamHealth:
    """What the heartbeat and the topics say."""

    batch_id: int | None
    heartbeat_age_seconds: float | None
    lag_seconds: float | None
    waiting_topics: tuple[str, ...]

    def problems(self, settings: Settings) -> list[str]:
        """Why the stream is unhealthy; empty when it is healthy."""
        out = []
        idle_for = self.heartbeat_age_seconds
        if self.waiting_topics and (idle_for is None or idle_for > settings.watchdog_stale_seconds):
            since = "ever" if idle_for is None else f"{idle_for:.0f} s"
            out.append(
                f"stalled: messages wait on {len(self.waiting_topics)} topic(s) "
                f"({', '.join(self.waiting_topics[:3])}) and no batch committed for {since}"
            )
        if self.lag_seconds is not None and self.lag_seconds > settings.watchdog_max_lag_seconds:
            out.append(
                f"lagging: the last batch was {self.lag_seconds:.0f} s behind "
                f"(limit {settings.watchdog_max_lag_seconds:.0f} s)"
            )
        return out


def stream_health(settings: Settings) -> StreamHealth:
    """The heartbeat, and the topics holding messages past the last committed offsets."""
    with connect(settings) as conn:
        beat = conn.execute(
            "SELECT batch_id, extract(epoch FROM now() - updated_at), lag_seconds "
            "FROM stream_heartbeat WHERE job = 'stream'"
        ).fetchone()
        row = conn.execute(
            "SELECT end_offset FROM stream_batches ORDER BY committed_at DESC LIMIT 1"
        ).fetchone()
        tenants = list_tenants(conn)
    done: dict[str, list[int]] = {} if row is None else dict(row[0])
    waiting = []
    client = pulsar_client(settings.pulsar_url, settings.pulsar_token)
    try:
        for tenant in tenants:
            topic = topic_for(tenant.tenant_id, settings.topic_template)
            position = done.get(topic)
            committed = None if position is None else (position[0], position[1], position[2])
            if not covers(committed, last_position(client, topic)):
                waiting.append(topic)
    finally:
        client.close()
    return StreamHealth(
        batch_id=None if beat is None else int(beat[0]),
        heartbeat_age_seconds=None if beat is None else float(beat[1]),
        lag_seconds=None if beat is None or beat[2] is None else float(beat[2]),
        waiting_topics=tuple(waiting),
    )


def check_stream(settings: Settings) -> StreamHealth:
    """The stream's health; raise ``StreamUnhealthyError`` naming every problem found."""
    health = stream_health(settings)
    problems = health.problems(settings)
    if problems:
        raise StreamUnhealthyError("; ".join(problems))
    return health
