"""``python -m api``: serve the analytics API with uvicorn (what ``make run`` supervises), in
``LAKEHOUSE_API_WORKERS`` worker processes (default one per core) sharing the port."""

from __future__ import annotations

import os

import uvicorn

from include.log import configure_logging
from include.settings import get_settings


def main() -> None:
    """Serve on the configured host and port, logging JSON lines."""
    settings = get_settings()
    configure_logging(settings.log_level)
    workers = settings.api_workers or os.cpu_count() or 1
    uvicorn.run(
        "api.main:app_from_environment",
        factory=True,
        workers=workers,
        host=settings.api_host,
        port=settings.api_port,
        access_log=False,  # RequestObserver logs one JSON line per request instead
        log_config=None,
        proxy_headers=False,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
