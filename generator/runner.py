"""The publishing loop: one process, or several that split the tenants between them."""

from __future__ import annotations

import logging
import multiprocessing
import random
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from generator.catalog import Merchant
from generator.messages import FaultShares, message_stream
from generator.publisher import Publisher
from generator.sessions import SessionFactory
from include.log import configure_logging
from include.pulsar_client import pulsar_client
from include.tenants import topic_for

log = logging.getLogger("generator")
_PROGRESS_EVERY_S = 1.0
_LOG_EVERY_S = 10.0


@dataclass(frozen=True)
class PublishPlan:
    """What to publish: ``count`` messages as fast as possible, or ``rate`` per second."""

    merchants: tuple[Merchant, ...]
    pulsar_url: str
    topic_template: str
    count: int | None = None
    rate: float | None = None
    duration_s: float | None = None
    seed: int | None = None
    start_time: datetime | None = None
    v2_share: float = 0.3
    late_share: float = 0.0
    faults: FaultShares = field(default_factory=FaultShares)
    producer_id: str = "generator-1"
    pulsar_auth_token: str | None = field(default=None, repr=False)


class _Clock:
    """Session end times: the wall clock, or a simulated one advancing 250 ms per session."""

    def __init__(self, start: datetime | None) -> None:
        self._next = start.astimezone(UTC) if start else None

    def __call__(self) -> datetime:
        if self._next is None:
            return datetime.now(UTC)
        current = self._next
        self._next += timedelta(milliseconds=250)
        return current


class _Progress:
    """A live line on a terminal, or a JSON log line every ten seconds otherwise."""

    def __init__(self, publisher: Publisher, target: int | None) -> None:
        self._publisher = publisher
        self._target = target
        self._tty = sys.stderr.isatty()
        self._last = 0.0

    def tick(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < (_PROGRESS_EVERY_S if self._tty else _LOG_EVERY_S):
            return
        self._last = now
        stats = self._publisher.stats
        if self._tty:
            of = f"/{self._target:,}" if self._target else ""
            sys.stderr.write(
                f"\rsent {stats.sent:,}{of} | failed {stats.failed:,} | "
                f"{stats.rate():,.0f} events/s | in flight {self._publisher.in_flight:,}   "
            )
            sys.stderr.flush()
        else:
            log.info(
                "progress",
                extra={
                    "sent": stats.sent,
                    "failed": stats.failed,
                    "events_per_second": round(stats.rate(), 1),
                },
            )

    def done(self) -> None:
        self.tick(force=True)
        if self._tty:
            sys.stderr.write("\n")


def publish(plan: PublishPlan, should_stop: Callable[[], bool] = lambda: False) -> dict[str, Any]:
    """Publish as ``plan`` says in this process; return the summary."""
    if (plan.count is None) == (plan.rate is None):
        raise ValueError("a plan has either a count (burst) or a rate (continuous)")
    rng = random.Random(plan.seed)
    factory = SessionFactory(
        rng, producer_id=plan.producer_id, v2_share=plan.v2_share, late_share=plan.late_share
    )
    stream = message_stream(
        list(plan.merchants), rng, factory, plan.faults, _Clock(plan.start_time)
    )
    client = pulsar_client(plan.pulsar_url, plan.pulsar_auth_token)
    publisher = Publisher(client, lambda t: topic_for(t, plan.topic_template))
    progress = _Progress(publisher, plan.count)
    tenants = [m.tenant_id for m in plan.merchants]
    log.info(
        "publishing",
        extra={"tenants": tenants, "count": plan.count, "rate": plan.rate, "seed": plan.seed},
    )
    attempts = 0
    started = time.monotonic()
    try:
        for message in stream:
            if should_stop() or (plan.count is not None and attempts >= plan.count):
                break
            if plan.rate is not None:
                elapsed = time.monotonic() - started
                if plan.duration_s is not None and elapsed >= plan.duration_s:
                    break
                ahead = attempts / plan.rate - elapsed
                if ahead > 0.005:
                    time.sleep(ahead)
            publisher.publish(message)
            attempts += 1
            if attempts % 1_000 == 0:
                publisher.resend_failures()
                progress.tick()
        try:
            publisher.drain()
        except TimeoutError as exc:
            log.error("unacknowledged messages at exit", extra={"error": str(exc)})
        progress.done()
    finally:
        publisher.close()
        client.close()
    summary = publisher.stats.summary()
    summary["unacknowledged"] = publisher.in_flight
    return summary


def _init_child(log_level: int) -> None:
    configure_logging(logging.getLevelName(log_level))


def _publish_in_child(plan: PublishPlan) -> dict[str, Any]:
    return publish(plan)


def split_plan(plan: PublishPlan, processes: int) -> list[PublishPlan]:
    """One plan per process: tenants dealt round-robin, count and rate shared by tenant count."""
    groups = [plan.merchants[i::processes] for i in range(min(processes, len(plan.merchants)))]
    total = len(plan.merchants)
    plans = []
    assigned = 0
    for index, group in enumerate(groups):
        share = len(group) / total
        count = None
        if plan.count is not None:
            count = plan.count - assigned if index == len(groups) - 1 else round(plan.count * share)
            assigned += count
        plans.append(
            replace(
                plan,
                merchants=group,
                count=count,
                rate=plan.rate * share if plan.rate is not None else None,
                seed=None if plan.seed is None else plan.seed * 1_000 + index,
                producer_id=f"{plan.producer_id}.{index}",
            )
        )
    return plans


def merge_summaries(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """One summary from the summaries of processes that ran side by side."""
    merged: dict[str, Any] = {"processes": len(summaries), "per_tenant": {}}
    for key in ("sent", "failed", "resent", "unacknowledged"):
        merged[key] = sum(s[key] for s in summaries)
    merged["seconds"] = max(s["seconds"] for s in summaries)
    merged["events_per_second"] = (
        round(merged["sent"] / merged["seconds"], 1) if merged["seconds"] else 0.0
    )
    total_bytes = sum(s["average_payload_bytes"] * s["sent"] for s in summaries)
    merged["average_payload_bytes"] = round(total_bytes / merged["sent"]) if merged["sent"] else 0
    for summary in summaries:
        merged["per_tenant"].update(summary["per_tenant"])
    return merged


def publish_parallel(plan: PublishPlan, processes: int) -> dict[str, Any]:
    """Publish with ``processes`` processes, each owning a share of the tenants."""
    if processes <= 1 or len(plan.merchants) == 1:
        return publish(plan)
    plans = split_plan(plan, processes)
    # spawn, not fork: a forked child can inherit locks held by the Pulsar client library's
    # threads; and an executor (unlike Pool) raises instead of hanging if a child dies.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        len(plans),
        mp_context=context,
        initializer=_init_child,
        initargs=(logging.getLogger().level,),
    ) as pool:
        return merge_summaries(list(pool.map(_publish_in_child, plans)))
