"""Shared fixtures: one embedded platform and one SparkSession per test session."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from include.settings import Settings
from tests.services import embedded_platform

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test by its folder, so ``-m unit``, ``-m integration`` and ``-m chaos`` select
    them (``chaos`` is deselected by default: ``make test-chaos`` runs it)."""
    for item in items:
        folder = item.path.parent.name
        if folder in ("unit", "integration", "chaos"):
            item.add_marker(getattr(pytest.mark, folder))


@pytest.fixture(scope="session")
def platform() -> Iterator[Settings]:
    """PostgreSQL (migrated) and pulsar-lite on free ports, shared by the whole session."""
    with embedded_platform() as settings:
        yield settings


@pytest.fixture(scope="session")
def spark(platform: Settings) -> Iterator[SparkSession]:
    """One local SparkSession for the whole test session.

    It starts after the platform, whose settings are in the environment by then: the JVM and
    its Python workers inherit that environment.
    """
    from jobs.stream.session import create_session

    session = create_session("local[2]", "lakehouse-tests")
    yield session
    session.stop()
