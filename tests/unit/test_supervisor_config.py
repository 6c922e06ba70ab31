from __future__ import annotations

import configparser
import shlex
from pathlib import Path

import pytest

from include.embedded import prometheus
from include.embedded.paths import StatePaths
from include.embedded.supervisor import render_config
from include.settings import Settings


def test_config_has_one_restarting_program_per_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prometheus, "find_binary", lambda: Path("/usr/bin/prometheus"))
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
        "spark-connect",
        "airflow-api-server",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "prometheus",
    }
    for name in programs:
        assert parser.get(f"program:{name}", "autorestart") == "true"
        assert parser.get(f"program:{name}", "stopasgroup") == "true"
    assert parser.get("program:postgres", "stopsignal") == "INT"
    assert parser.get("program:generator", "autostart") == "false"
    assert parser.get("program:stream", "autostart") == "false"
    assert parser.get("program:prometheus", "autostart") == "false"
    assert "jobs/stream/job.py" in parser.get("program:stream", "command")
    assert "--rate 25.0" in parser.get("program:generator", "command")
    assert str(paths.pulsar_config) in parser.get("program:pulsar", "command")
    assert parser.get("unix_http_server", "file") == str(paths.supervisor_socket)


def test_a_too_deep_state_dir_is_refused(tmp_path: Path) -> None:
    import pytest

    with pytest.raises(ValueError, match="too deep"):
        StatePaths.under(tmp_path / ("x" * 120)).create()


def test_the_spark_connect_server_listens_where_the_settings_say(tmp_path: Path) -> None:
    paths = StatePaths.under(tmp_path)
    settings = Settings(
        state_dir=tmp_path, spark_connect_addr="127.0.0.1:16123", spark_connect_memory="768m"
    )
    parser = configparser.RawConfigParser()
    parser.read_string(render_config(settings, paths, Path("/usr/lib/postgresql/15/bin")))
    section = "program:spark-connect"
    command = parser.get(section, "command").split()
    assert "org.apache.spark.sql.connect.service.SparkConnectServer" in command
    assert "spark.connect.grpc.binding.address=127.0.0.1" in command
    assert "spark.connect.grpc.binding.port=16123" in command
    assert command[command.index("--driver-memory") + 1] == "768m"
    assert parser.get(section, "autostart") == "false"
    # Its Python workers run the load's COPY tasks, which import the project.
    root = str(Path(__file__).resolve().parents[2])
    assert f'PYTHONPATH="{root}"' in parser.get(section, "environment")
    assert settings.spark_connect_url == "sc://127.0.0.1:16123"


def test_the_stream_jvm_starts_with_its_java_options_and_two_malloc_arenas(
    tmp_path: Path,
) -> None:
    paths = StatePaths.under(tmp_path)
    settings = Settings(state_dir=tmp_path, spark_driver_java_options="-XX:+UseSerialGC -Xmn32m")
    parser = configparser.RawConfigParser()
    parser.read_string(render_config(settings, paths, Path("/usr/lib/postgresql/15/bin")))
    command = shlex.split(parser.get("program:stream", "command"))
    assert command[command.index("--driver-java-options") + 1] == "-XX:+UseSerialGC -Xmn32m"
    assert command[-1].endswith("jobs/stream/job.py")
    # glibc reads it when the JVM starts, so it is in spark-submit's environment.
    assert 'MALLOC_ARENA_MAX="2"' in parser.get("program:stream", "environment")
