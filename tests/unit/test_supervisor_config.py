from __future__ import annotations

import configparser
from pathlib import Path

from include.embedded.paths import StatePaths
from include.embedded.supervisor import render_config
from include.settings import Settings


def test_config_has_one_restarting_program_per_service(tmp_path: Path) -> None:
    paths = StatePaths.under(tmp_path)
    settings = Settings(state_dir=tmp_path, generator_rate=25)
    text = render_config(settings, paths, Path("/usr/lib/postgresql/15/bin"))
    parser = configparser.RawConfigParser()
    parser.read_string(text)
    programs = {s.removeprefix("program:") for s in parser.sections() if s.startswith("program:")}
    assert programs == {
        "postgres",
        "pulsar",
        "generator",
        "stream",
        "api",
        "airflow-api-server",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
    }
    for name in programs:
        assert parser.get(f"program:{name}", "autorestart") == "true"
        assert parser.get(f"program:{name}", "stopasgroup") == "true"
    assert parser.get("program:postgres", "stopsignal") == "INT"
    assert parser.get("program:generator", "autostart") == "false"
    assert parser.get("program:stream", "autostart") == "false"
    assert "jobs/stream/job.py" in parser.get("program:stream", "command")
    assert "--rate 25.0" in parser.get("program:generator", "command")
    assert str(paths.pulsar_config) in parser.get("program:pulsar", "command")
    assert parser.get("unix_http_server", "file") == str(paths.supervisor_socket)


def test_a_too_deep_state_dir_is_refused(tmp_path: Path) -> None:
    import pytest

    with pytest.raises(ValueError, match="too deep"):
        StatePaths.under(tmp_path / ("x" * 120)).create()
