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
    """Mark every test by its folder, so ``-m unit`` and ``-m integration`` select them."""
    for item in items:
        folder = item.path.parent.name
        if folder in ("unit", "integration"):
            item.add_marker(getattr(pytest.mark, folder))


@pytest.fixture(scope="session")
def platform() -> Iterator[Settings]:
    """PostgreSQL (migrated) and pulsar-lite on free ports, shared by the whole session."""
    with embedded_platform() as settings:
        yield settings


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    """One local SparkSession for the whole test session."""
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .appName("lakehouse-tests")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    yield session
    session.stop()
