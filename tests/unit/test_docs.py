"""The README's configuration table documents exactly the settings that exist."""

from __future__ import annotations

import re
from pathlib import Path

from include.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_setting_is_in_the_configuration_table_and_nothing_else() -> None:
    documented = set(re.findall(r"^\| `(LAKEHOUSE_[A-Z0-9_]+)` \|", README.read_text(), re.M))
    actual = {f"LAKEHOUSE_{name.upper()}" for name in Settings.model_fields}
    assert documented == actual


def test_readme_gives_the_two_commands() -> None:
    text = README.read_text()
    assert "make run" in text and "make test" in text
