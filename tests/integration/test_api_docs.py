"""The API's documentation pages (/docs, /redoc) in a real browser with every outside host
blocked: they must render, list every operation and run a request from assets the API serves.

The pages are opened under a host name that is neither ``localhost`` nor ``127.0.0.1``
(Chromium resolves it to loopback), as a person on another machine opens them: the UIs' code
may treat loopback addresses specially (Swagger UI's online validator does), and such a
difference must not hide a request.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from include.settings import Settings
from tests.api_server import serve_api

# Resolved to 127.0.0.1 by Chromium's own resolver rules; nothing else knows the name.
API_HOST = "lakehouse-api.test"
LOCAL_HOSTS = {"127.0.0.1", "localhost", API_HOST}
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
# Loads the page's Content-Security-Policy refused (they never reach the network).
RECORD_REFUSED = """
window.refusedLoads = [];
document.addEventListener("securitypolicyviolation",
    (e) => window.refusedLoads.push(e.violatedDirective + " " + e.blockedURI));
"""
# ReDoc's side menu always shows its vendor's logo from the vendor's CDN; the page's policy
# refuses it (the menu then shows the link's text only).
REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"
# Screenshots of the browser tests, kept after the run (not committed).
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture(scope="module")
def docs_api(platform: Settings) -> Iterator[tuple[str, dict[str, Any]]]:
    """The API served over HTTP: (the base URL under ``API_HOST``, its OpenAPI document)."""
    with serve_api(platform) as (base, settings):
        # Fetched outside the browser: the oracle for what the pages must show.
        spec = httpx.get(f"{base}/openapi.json", timeout=10).json()
        yield f"http://{API_HOST}:{settings.api_port}", spec


@pytest.fixture
def browser() -> Iterator[tuple[Any, list[str]]]:
    """A headless Chromium page whose requests to any host but the API's are aborted and
    recorded: (page, the recorded outside URLs)."""
    from playwright.sync_api import Route, sync_playwright

    chromium = shutil.which("chromium")
    assert chromium, "Debian chromium is missing: `make test-tools` installs it"
    outside: list[str] = []

    def local_only(route: Route) -> None:
        url = route.request.url
        if urlsplit(url).hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            outside.append(url)
            route.abort("internetdisconnected")

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium,
            args=[
                "--no-sandbox",
                f"--host-resolver-rules=MAP {API_HOST} 127.0.0.1",
                "--no-proxy-server",
            ],
        )
        try:
            context = launched.new_context(viewport={"width": 1400, "height": 900})
            context.route("**/*", local_only)
            context.add_init_script(RECORD_REFUSED)
            yield context.new_page(), outside
        finally:
            launched.close()


def _wait_rendered(locator: Any, outside: list[str]) -> None:
    """Wait for ``locator``; a page that never renders is failed with what it tried to load."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    try:
        locator.first.wait_for(timeout=30_000)
    except PlaywrightTimeoutError:
        pytest.fail(f"the page did not render; requests to outside hosts: {outside}")


def _assert_nothing_left_the_machine(page: Any, outside: list[str], refused: set[str]) -> None:
    """No request reached an outside host, and the page's policy refused exactly the
    ``refused`` outside loads (never one of the page's own scripts, styles, workers or calls)."""
    assert outside == []
    loads = page.evaluate("window.refusedLoads")
    urls = {load.split(" ", 1)[1] for load in loads}
    assert all(urlsplit(url).hostname not in LOCAL_HOSTS for url in urls), loads
    assert urls == refused, loads


def _operations(spec: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in spec["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


def test_swagger_ui_lists_every_operation_and_tries_health_offline(
    docs_api: tuple[str, dict[str, Any]], browser: tuple[Any, list[str]]
) -> None:
    base, spec = docs_api
    page, outside = browser
    page.goto(f"{base}/docs")
    _wait_rendered(page.locator(".opblock"), outside)
    shown = page.eval_on_selector_all(
        ".opblock .opblock-summary",
        """blocks => blocks.map(b => [
            b.querySelector('.opblock-summary-method').textContent.trim(),
            b.querySelector('.opblock-summary-path').getAttribute('data-path'),
        ])""",
    )
    assert len(shown) == len(set(map(tuple, shown)))  # each operation once
    assert {tuple(op) for op in shown} == _operations(spec)

    health = page.locator(".opblock").filter(
        has=page.locator('.opblock-summary-path[data-path="/health"]')
    )
    health.locator(".opblock-summary").click()
    health.get_by_role("button", name="Try it out").click()
    health.get_by_role("button", name="Execute").click()
    live = health.locator(".live-responses-table .response")
    live.first.wait_for(timeout=30_000)
    assert live.locator(".response-col_status").first.inner_text().strip() == "200"
    assert '"status": "ok"' in health.locator(".live-responses-table").inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "api_docs_swagger_ui.png"), full_page=True)
    _assert_nothing_left_the_machine(page, outside, refused=set())


def test_redoc_renders_every_operation_offline(
    docs_api: tuple[str, dict[str, Any]], browser: tuple[Any, list[str]]
) -> None:
    base, spec = docs_api
    page, outside = browser
    page.goto(f"{base}/redoc")
    expected = {
        op["operationId"]
        for item in spec["paths"].values()
        for method, op in item.items()
        if method in HTTP_METHODS
    }
    sections = page.locator('[data-section-id*="operation/"]')
    _wait_rendered(sections, outside)
    ids = sections.evaluate_all("els => els.map(e => e.getAttribute('data-section-id'))")
    assert {section.rsplit("/", 1)[-1] for section in ids} == expected
    # The rendered text, not only the structure: the /health operation's summary is there.
    health = spec["paths"]["/health"]["get"]
    page.get_by_role("heading", name=health["summary"]).first.wait_for(timeout=10_000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "api_docs_redoc.png"))
    _assert_nothing_left_the_machine(page, outside, refused={REDOC_LOGO})
