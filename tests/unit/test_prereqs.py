from __future__ import annotations

import pytest

from include.embedded.prereqs import (
    MissingPrerequisiteError,
    find_postgres_bindir,
    parse_java_major,
)


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('java version "1.8.0_392"', 8),
        ('openjdk version "21" 2023-09-19', 21),
        ("no java here", None),
    ],
)
def test_java_major_version_is_parsed(output: str, major: int | None) -> None:
    assert parse_java_major(output) == major


def test_a_missing_postgres_folder_fails_with_one_sentence(tmp_path: object) -> None:
    from pathlib import Path

    with pytest.raises(MissingPrerequisiteError, match="install postgresql"):
        find_postgres_bindir(Path("/nonexistent/bin"))
