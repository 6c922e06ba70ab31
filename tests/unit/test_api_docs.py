"""The API's documentation pages name no outside host: every script, style and icon they load
is served by the API itself (the browser test in tests/integration/test_api_docs.py renders
them with the network blocked)."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest

from api.main import create_app
from include.settings import Settings

PAGES = ["/docs", "/redoc"]
# Every URL an HTML page can make the browser load by itself.
LOADED = re.compile(r"""(?:src|href|spec-url)=["']([^"']+)["']|\burl:\s*["']([^"']+)["']""")


def _get_all(paths: list[str]) -> dict[str, httpx.Response]:
    """GET each path from the app in process (no lifespan: no database is needed)."""

    async def fetch() -> dict[str, httpx.Response]:
        transport = httpx.ASGITransport(app=create_app(Settings()))
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
            return {path: await client.get(path) for path in paths}

    return asyncio.run(fetch())


@pytest.mark.parametrize("page", PAGES)
def test_docs_pages_load_only_what_the_api_serves(page: str) -> None:
    reply = _get_all([page])[page]
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/html")
    html = reply.text
    assert not re.search(r"https?:|//[a-z0-9]", html, re.I), "the page names an outside host"
    urls = [a or b for a, b in LOADED.findall(html)]
    assert all(url.startswith("/") for url in urls), urls
    served = _get_all(urls)
    assert {url: r.status_code for url, r in served.items()} == dict.fromkeys(urls, 200)
    assert all(r.content for r in served.values())
    # The browser itself refuses any load from another host (ReDoc's vendor logo, links).
    policy = reply.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "http" not in policy


def test_docs_pages_are_not_operations_of_the_openapi_document() -> None:
    spec = create_app(Settings()).openapi()
    assert not set(PAGES) & set(spec["paths"])
    assert not any(path.startswith("/docs/") for path in spec["paths"])
