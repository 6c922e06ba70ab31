"""Everything a request handler may need, created once per app."""

from __future__ import annotations

from dataclasses import dataclass

from api.airflow import AirflowClient
from api.cache import ResponseCache
from api.db import Database
from api.lake_usage import LakeUsage
from api.observability import ApiMetrics
from api.ratelimit import RateLimiter
from api.usage import RequestCounter
from include.settings import Settings


@dataclass
class AppContext:
    """The app's long-lived collaborators."""

    settings: Settings
    db: Database
    limiter: RateLimiter
    requests: RequestCounter
    metrics: ApiMetrics
    lake_usage: LakeUsage
    airflow: AirflowClient
    cache: ResponseCache

    @classmethod
    def create(cls, settings: Settings) -> AppContext:
        """Collaborators for ``settings``; the database connects later, in the lifespan."""
        return cls(
            settings=settings,
            db=Database(settings),
            limiter=RateLimiter(settings.api_rate_limit_per_minute),
            requests=RequestCounter(),
            metrics=ApiMetrics(),
            lake_usage=LakeUsage(settings.lake, settings.archive),
            airflow=AirflowClient(settings),
            cache=ResponseCache(settings.api_cache_mb * 1024 * 1024),
        )
