"""``GET /anomalies``: fraud-scored events and hourly order/revenue outliers of a tenant."""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AwareDatetime

from api.anomalies import hourly_outliers
from api.deps import Ctx, TenantScope
from api.models import AnomaliesResponse, FraudAnomaly, Granularity, HourlyAnomaly
from api.ranges import check_buckets, check_range

router = APIRouter(tags=["anomalies"])
HOUR = timedelta(hours=1)

# UTC hours are unions of the speed layer's 15-minute slots.
HOURLY_SQL = """
SELECT h AS hour,
       coalesce(sum(m.events), 0)::double precision AS orders,
       coalesce(sum(m.amount), 0)::double precision AS revenue
FROM generate_series($2::timestamptz, $3::timestamptz - interval '1 hour', interval '1 hour') AS h
LEFT JOIN stream_slot_metrics m
  ON m.tenant_id = $1 AND m.event_type = 'purchase'
 AND m.slot >= h AND m.slot < h + interval '1 hour'
GROUP BY h ORDER BY h
"""
FIRST_SLOT_SQL = "SELECT min(slot) FROM stream_slot_metrics WHERE tenant_id = $1"
FRAUD_SQL = """
SELECT event_id, event_time, event_type, customer_customer_id AS customer_id,
       (ml_context_model_scores ->> 'fraud')::double precision AS fraud_score
FROM events
WHERE tenant_id = $1 AND event_time >= $2 AND event_time < $3
  AND (ml_context_model_scores ->> 'fraud')::double precision >= $4
ORDER BY fraud_score DESC, event_time DESC
LIMIT $5
"""


@router.get("/anomalies", summary="Fraud-scored events and hourly outliers of a tenant")
async def anomalies(
    ctx: Ctx,
    tenant_id: TenantScope,
    start: Annotated[AwareDatetime, Query(description="Inclusive range start.")],
    end: Annotated[AwareDatetime, Query(description="Exclusive range end.")],
    limit: Annotated[int, Query(ge=1, le=1000, description="Most fraud events returned.")] = 100,
) -> AnomaliesResponse:
    """Two detectors over ``start``..``end``:

    * **fraud**: loaded events whose ``fraud`` model score is at or above the tenant's
      ``fraud_score_threshold`` (highest scores first);
    * **hourly**: UTC hours whose purchase count or revenue (speed layer) has a robust z-score
      (``0.6745 * (x - median) / MAD`` over the trailing ``baseline_hours``) at or above the
      configured threshold in absolute value.
    """
    settings = ctx.settings
    check_range(start, end, settings.api_max_range_days)
    check_buckets(start, end, Granularity.HOUR, settings.api_max_buckets)
    first_hour = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    history_start = first_hour - timedelta(hours=settings.anomaly_baseline_hours)
    hours_end = end.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    if hours_end < end:
        hours_end += timedelta(hours=1)
    async with ctx.db.tenant(tenant_id) as conn:
        threshold = float(
            await conn.fetchval(
                "SELECT fraud_score_threshold FROM tenants WHERE tenant_id = $1", tenant_id
            )
        )
        fraud_rows = await conn.fetch(FRAUD_SQL, tenant_id, start, end, threshold, limit)
        hours = await conn.fetch(HOURLY_SQL, tenant_id, history_start, hours_end)
        first_slot = await conn.fetchval(FIRST_SLOT_SQL, tenant_id)
    history = settings.anomaly_baseline_hours
    # The hour of the tenant's first event: hours before it are not its history.
    since = next(
        (
            i
            for i, row in enumerate(hours)
            if first_slot is not None and row["hour"] + HOUR > first_slot
        ),
        len(hours),
    )
    hourly: list[HourlyAnomaly] = []
    for measure in ("orders", "revenue"):
        values = [float(row[measure]) for row in hours]
        for found in hourly_outliers(
            values, history, history, settings.anomaly_z_threshold, history_from=since
        ):
            hourly.append(
                HourlyAnomaly(
                    hour_start=hours[found.index]["hour"],
                    measure=measure,
                    value=found.value,
                    baseline_median=found.baseline_median,
                    z_score=round(found.z_score, 3),
                )
            )
    hourly.sort(key=lambda a: (a.hour_start, a.measure))
    return AnomaliesResponse(
        tenant_id=tenant_id,
        start=start,
        end=end,
        fraud_threshold=threshold,
        z_threshold=settings.anomaly_z_threshold,
        baseline_hours=history,
        fraud=[FraudAnomaly(threshold=threshold, **dict(row)) for row in fraud_rows],
        hourly=hourly,
    )
