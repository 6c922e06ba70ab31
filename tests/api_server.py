"""The analytics API served in a background thread of the test process, over real HTTP."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn

from api.main import create_app
from include.settings import Settings
from tests.services import free_port


@contextmanager
def serve_api(settings: Settings, **overrides: object) -> Iterator[tuple[str, Settings]]:
    """Serve ``create_app(settings + overrides)`` on a free port; yield (base URL, settings)."""
    effective = settings.model_copy(
        update={"api_port": free_port(), "api_host": "127.0.0.1", **overrides}
    )
    config = uvicorn.Config(
        create_app(effective),
        host=effective.api_host,
        port=effective.api_port,
        access_log=False,
        log_config=None,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="api-under-test", daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{effective.api_port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the API did not start")
        time.sleep(0.1)
    try:
        yield base, effective
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def wait_until_authenticated(base: str, token: str, timeout_s: float = 30) -> None:
    """Wait until the API's pool is up and its bootstrap tokens are seeded."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = httpx.get(f"{base}/tenants", headers={"Authorization": f"Bearer {token}"})
        if response.status_code == 200:
            return
        time.sleep(0.2)
    raise AssertionError(f"the API never accepted the admin token: {response.text}")


def run_schemathesis(
    base: str, token: str, *, seed: int, max_examples: int, max_seconds: int, workdir: Path
) -> subprocess.CompletedProcess[str]:
    """Fuzz the served OpenAPI schema with ``token``: no 5xx, responses match the schema and
    their content type. ``workdir`` keeps its example database and reports out of the checkout."""
    return subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            f"{base}/openapi.json",
            "--header",
            f"Authorization: Bearer {token}",
            "--checks",
            "not_a_server_error,response_schema_conformance,content_type_conformance",
            "--max-examples",
            str(max_examples),
            "--seed",
            str(seed),
            "--max-time",
            str(max_seconds),
            "--report-dir",
            str(workdir),
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=max_seconds * 4,
        check=False,
        cwd=workdir,
    )
