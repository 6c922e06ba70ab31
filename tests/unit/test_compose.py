"""docker-compose.yaml, checked without a Docker engine (there is none here).

What can be checked statically is: the YAML parses; every image is pinned; every build context,
Dockerfile, file copied into an image and bind-mounted path exists; every variable is documented
and every secret is required (``${VAR:?...}``) and shipped empty in ``.env.example``; every
service has a health check; ``depends_on`` waits on conditions that can be met; every named
volume is declared; Prometheus and Grafana point at what compose provides.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from include.settings import Settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yaml"
ENV_EXAMPLE = REPO / ".env.example"
DEPLOYMENT_DOC = REPO / "docs" / "deployment.md"
README = REPO / "README.md"

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}; $$ escapes.
_VARIABLE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
_BARE_VARIABLE = re.compile(r"(?<!\$)\$(?!\{)[A-Za-z_]")
_SECRET = re.compile(r"PASSWORD|SECRET|TOKEN|FERNET|_KEY$")
_ONE_SHOT = "service_completed_successfully"
_CONDITIONS = {"service_healthy", _ONE_SHOT}


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return loaded


def _services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = _compose()["services"]
    return services


def _documented(path: Path) -> set[str]:
    return set(re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \|", path.read_text(), re.M))


def _env_example() -> dict[str, str]:
    out = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            out[name.strip()] = value.strip()
    return out


def test_the_file_parses_into_the_expected_services() -> None:
    services = _services()
    expected = {
        "postgres",
        "pulsar",
        "migrate",
        "spark-master",
        "spark-worker-1",
        "spark-worker-2",
        "stream",
        "spark-connect",
        "api",
        "generator",
        "airflow-init",
        "airflow-api-server",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "postgres-exporter",
        "prometheus",
        "grafana",
        "minio",
        "minio-init",
    }
    assert set(services) == expected
    assert services["generator"]["profiles"] == ["generator"]
    assert all("profiles" not in s for n, s in services.items() if n != "generator")


def test_every_image_is_pinned() -> None:
    for name, service in _services().items():
        image = service.get("image")
        assert image, f"{name}: no image (a built service names its image too)"
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{name}: {image} has no tag"
        assert tag != "latest" and re.search(r"\d", tag), f"{name}: {image} is not pinned"
    for dockerfile in (REPO / "docker").glob("*.Dockerfile"):
        for line in dockerfile.read_text().splitlines():
            if line.startswith("FROM "):
                image = line.split()[1]
                assert re.fullmatch(r"[\w./-]+:[\w.-]*\d[\w.-]*", image), f"{dockerfile}: {line}"
                assert not image.endswith(":latest")
            if "pip install" in line and "uv" in line.split():
                pytest.fail(f"{dockerfile}: unpinned uv: {line}")


def _copy_sources(dockerfile: Path) -> list[str]:
    sources = []
    for line in dockerfile.read_text().splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            parts = [p for p in line.split()[1:] if not p.startswith("--")]
            sources += parts[:-1]
    return sources


def test_every_build_context_dockerfile_and_copied_file_exists() -> None:
    built = 0
    for name, service in _services().items():
        build = service.get("build")
        if build is None:
            continue
        built += 1
        context = (REPO / build["context"]).resolve()
        assert context.is_dir(), f"{name}: build context {build['context']} is missing"
        dockerfile = context / build.get("dockerfile", "Dockerfile")
        assert dockerfile.is_file(), f"{name}: {dockerfile} is missing"
        for source in _copy_sources(dockerfile):
            assert (context / source).exists(), f"{dockerfile.name}: COPY {source} is missing"
    assert built >= 2


def _mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for volume in service.get("volumes", []):
        source, target = [*volume.split(":"), ""][:2]
        out.append((source, target))
    return out


def test_every_bind_mount_exists_and_every_named_volume_is_declared() -> None:
    declared = set(_compose()["volumes"])
    used = set()
    for name, service in _services().items():
        for source, target in _mounts(service):
            assert target.startswith("/"), f"{name}: {source}:{target}"
            if source.startswith((".", "/")):
                assert source.startswith("./"), f"{name}: bind mount outside the repo: {source}"
                assert (REPO / source).exists(), f"{name}: bind-mounted {source} is missing"
            else:
                assert source in declared, f"{name}: named volume {source} is not declared"
                used.add(source)
    assert used == declared, f"declared but unused volumes: {sorted(declared - used)}"


def test_state_lives_in_named_volumes() -> None:
    services = _services()

    def named(service: str) -> dict[str, str]:
        return {t: s for s, t in _mounts(services[service]) if not s.startswith(".")}

    assert named("postgres")["/var/lib/postgresql/data"] == "pg-data"
    assert named("pulsar")["/pulsar/data"] == "pulsar-data"
    for service in ("stream", "spark-worker-1", "spark-worker-2", "airflow-scheduler", "api"):
        assert named(service)["/data"] == "lake", service
        assert services[service]["environment"]["LAKEHOUSE_STATE_DIR"] == "/data"
    assert named("prometheus")["/prometheus"] == "prometheus-data"
    assert named("grafana")["/var/lib/grafana"] == "grafana-data"
    assert named("minio")["/data"] == "minio-data"


def _compose_text() -> str:
    """The compose file without its comment lines (they may quote ``${VAR}`` as prose)."""
    lines = COMPOSE_FILE.read_text().splitlines()
    return "\n".join(line for line in lines if not line.lstrip().startswith("#"))


def _variables() -> list[tuple[str, str, str]]:
    return [(m[1], m[2] or "", m[3] or "") for m in _VARIABLE.finditer(_compose_text())]


def test_every_variable_is_documented() -> None:
    text = _compose_text()
    assert not _BARE_VARIABLE.search(text), "use ${VAR} (or $$VAR for the container's shell)"
    readme, deployment = _documented(README), _documented(DEPLOYMENT_DOC)
    example = _env_example()
    for name, _operator, _rest in _variables():
        table = readme if name.startswith("LAKEHOUSE_") else deployment
        where = "the README configuration table" if table is readme else "docs/deployment.md"
        assert name in table, f"${{{name}}} is not documented in {where}"
        assert name in example or name in ENV_EXAMPLE.read_text(), f"{name} not in .env.example"
    used = {name for name, _, _ in _variables()}
    assert set(example) <= used, f".env.example lists unused {sorted(set(example) - used)}"
    # The compose variables table; LAKEHOUSE_* rows elsewhere in the guide are settings (README).
    listed = {name for name in deployment if not name.startswith("LAKEHOUSE_")}
    assert listed <= used, f"docs/deployment.md lists unused {sorted(listed - used)}"


def test_every_secret_is_required_and_shipped_empty() -> None:
    secrets = set()
    for name, operator, message in _variables():
        if _SECRET.search(name):
            secrets.add(name)
            assert operator == ":?" and message.strip(), f"${{{name}}} must be ${{{name}:?...}}"
    assert {"PG_PASSWORD", "API_PG_PASSWORD", "ADMIN_TOKEN", "AIRFLOW_FERNET_KEY"} <= secrets
    example = _env_example()
    for name in secrets:
        assert example.get(name) == "", f".env.example must leave {name} empty"
    # Nothing secret-looking is written into the file itself.
    for name, service in _services().items():
        environment = service.get("environment", {})
        for key, value in environment.items():
            if _SECRET.search(key) and not key.endswith(("_FILE", "_USERS")):
                assert "${" in str(value), f"{name}: {key} is not from .env"


def test_the_env_file_is_git_ignored() -> None:
    ignored = (REPO / ".gitignore").read_text().splitlines()
    assert ".env" in ignored
    assert ".env.example" not in ignored


def test_every_service_has_a_healthcheck() -> None:
    for name, service in _services().items():
        check = service.get("healthcheck")
        assert check, f"{name}: no healthcheck"
        if check.get("disable"):
            assert service.get("restart") == "no", f"{name}: only one-shot services skip checks"
        else:
            assert check["test"][0] in {"CMD", "CMD-SHELL"}, name
            assert check["interval"] and check["retries"], name


def test_depends_on_waits_for_conditions_that_can_be_met() -> None:
    services = _services()
    for name, service in services.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on must name a condition per service"
        for target, spec in depends.items():
            assert target in services, f"{name} depends on unknown {target}"
            condition = spec["condition"]
            assert condition in _CONDITIONS, f"{name} -> {target}: {condition}"
            one_shot = services[target].get("healthcheck", {}).get("disable", False)
            assert (condition == _ONE_SHOT) == one_shot, f"{name} -> {target}: {condition}"
            assert "profiles" not in services[target], f"{name} depends on an optional service"
    # Start order: the apps wait for their services and the migrations.
    assert services["stream"]["depends_on"].keys() >= {"pulsar", "migrate", "spark-worker-1"}
    assert services["airflow-scheduler"]["depends_on"].keys() >= {"airflow-init", "spark-connect"}
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}


def test_apps_read_real_settings() -> None:
    fields = {f"LAKEHOUSE_{name.upper()}" for name in Settings.model_fields}
    for name, service in _services().items():
        for key in service.get("environment", {}):
            if key.startswith("LAKEHOUSE_"):
                assert key in fields, f"{name}: {key} is no setting of include/settings.py"
    stream = _services()["stream"]["environment"]
    assert stream["LAKEHOUSE_PULSAR_URL"] == "pulsar://pulsar:6650"
    assert stream["LAKEHOUSE_SPARK_MASTER"] == "spark://spark-master:7077"
    assert stream["LAKEHOUSE_ENV"] == "prod"


def test_the_lake_and_the_archive_live_in_the_bucket_minio_init_creates() -> None:
    services = _services()
    init = services["minio-init"]
    script = " ".join(init["command"])
    assert init["image"] == services["minio"]["image"], "mc comes with the pinned MinIO image"
    assert "mc mb --ignore-existing local/lakehouse" in script
    assert init["depends_on"] == {"minio": {"condition": "service_healthy"}}
    policy = (REPO / "deploy" / "minio" / "lake-policy.json").read_text()
    assert "arn:aws:s3:::lakehouse/*" in policy
    for name in ("stream", "api", "airflow-init", "airflow-scheduler"):
        env = services[name]["environment"]
        assert env["LAKEHOUSE_LAKE_URI"] == "s3://lakehouse/lake", name
        assert env["LAKEHOUSE_ARCHIVE_URI"] == "s3://lakehouse/archive", name
        assert env["LAKEHOUSE_S3_ENDPOINT_URL"] == "http://minio:9000", name
        # The apps use their own MinIO user, the one minio-init creates, not the root user.
        assert env["LAKEHOUSE_S3_ACCESS_KEY_ID"] == init["environment"]["LAKE_S3_ACCESS_KEY_ID"]
        secret = init["environment"]["LAKE_S3_SECRET_ACCESS_KEY"]
        assert env["LAKEHOUSE_S3_SECRET_ACCESS_KEY"] == secret, name
        assert "LAKEHOUSE_CHECKPOINT_URI" not in env, "Spark here cannot write s3a://"
    for name in ("stream", "api", "airflow-init"):
        assert services[name]["depends_on"]["minio-init"] == {"condition": _ONE_SHOT}, name


def test_pulsar_runs_standalone_with_broker_deduplication() -> None:
    pulsar = _services()["pulsar"]
    assert pulsar["image"].startswith("apachepulsar/pulsar:")
    assert "bin/pulsar standalone" in " ".join(pulsar["command"])
    assert pulsar["environment"]["PULSAR_PREFIX_brokerDeduplicationEnabled"] == "true"


def test_prometheus_and_grafana_point_at_what_compose_runs() -> None:
    services = _services()
    mounts = {t: s for s, t in _mounts(services["prometheus"])}
    config = yaml.safe_load((REPO / mounts["/etc/prometheus/prometheus.yml"]).read_text())
    for rule_file in config["rule_files"]:
        assert rule_file in mounts, f"rule file {rule_file} is not mounted"
    jobs = {}
    for job in config["scrape_configs"]:
        for group in job["static_configs"]:
            for target in group["targets"]:
                host = target.split(":")[0]
                assert host in services or host == "localhost", f"{job['job_name']}: {target}"
                jobs[job["job_name"]] = host
    assert jobs.keys() >= {"pulsar", "stream", "api", "postgres"}
    grafana = {t: s for s, t in _mounts(services["grafana"])}
    provisioning = REPO / grafana["/etc/grafana/provisioning"]
    providers = yaml.safe_load((provisioning / "dashboards" / "lakehouse.yml").read_text())
    path = providers["providers"][0]["options"]["path"]
    assert grafana[path] == "./deploy/grafana/dashboards"
    datasource = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
