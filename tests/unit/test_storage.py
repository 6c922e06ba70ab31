"""Storage locations from the settings: local folders, S3 prefixes and what each engine gets."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from pydantic import SecretStr

from include.lake.storage import Location, S3Connection, partition_values
from include.settings import Settings

SECRET = "not-a-real-secret-0123456789"


def _s3_settings(tmp_path: Path, checkpoint_uri: str | None = None) -> Settings:
    return Settings(
        state_dir=tmp_path,
        lake_uri="s3://bucket/platform/lake/",
        archive_uri="s3a://bucket/platform/archive",
        checkpoint_uri=checkpoint_uri,
        s3_endpoint_url="http://minio:9000",
        s3_access_key_id="lakehouse",
        s3_secret_access_key=SecretStr(SECRET),
    )


def test_the_defaults_are_folders_of_the_state_directory(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    assert settings.lake == Location(str(tmp_path.resolve() / "lake"))
    assert settings.archive.path == tmp_path.resolve() / "archive"
    assert settings.checkpoint == str(tmp_path.resolve() / "checkpoints" / "stream")
    assert settings.lake.storage_options is None
    assert (settings.lake / "silver").uri == str(tmp_path.resolve() / "lake" / "silver")


def test_s3_locations_carry_options_for_safe_concurrent_commits(tmp_path: Path) -> None:
    settings = _s3_settings(tmp_path)
    assert settings.lake.uri == "s3://bucket/platform/lake"
    assert settings.archive.uri == "s3://bucket/platform/archive", "s3a:// is read as s3://"
    options = (settings.lake / "silver").storage_options
    assert options == {
        "AWS_REGION": "us-east-1",
        "aws_conditional_put": "etag",
        "AWS_ENDPOINT_URL": "http://minio:9000",
        "AWS_ALLOW_HTTP": "true",
        "AWS_ACCESS_KEY_ID": "lakehouse",
        "AWS_SECRET_ACCESS_KEY": SECRET,
    }
    with pytest.raises(ValueError, match="not a local folder"):
        _ = settings.lake_dir


def test_https_endpoints_and_aws_credentials_from_the_environment(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, lake_uri="s3://bucket/lake")
    assert settings.lake.storage_options == {
        "AWS_REGION": "us-east-1",
        "aws_conditional_put": "etag",
    }
    https = S3Connection(endpoint_url="https://s3.example.com")
    assert "AWS_ALLOW_HTTP" not in https.delta_options()
    assert https.hadoop_options()["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "true"


def test_the_secret_stays_out_of_reprs_but_travels_to_executors(tmp_path: Path) -> None:
    lake = _s3_settings(tmp_path).lake
    assert SECRET not in repr(lake)
    assert pickle.loads(pickle.dumps(lake)) == lake


def test_an_s3_checkpoint_is_an_s3a_uri_with_hadoop_settings_from_the_same_values(
    tmp_path: Path,
) -> None:
    settings = _s3_settings(tmp_path, checkpoint_uri="s3://bucket/platform/checkpoints/stream")
    assert settings.checkpoint == "s3a://bucket/platform/checkpoints/stream"
    assert settings.s3.hadoop_options() == {
        "spark.hadoop.fs.s3a.endpoint.region": "us-east-1",
        "spark.hadoop.fs.s3a.endpoint": "minio:9000",
        "spark.hadoop.fs.s3a.connection.ssl.enabled": "false",
        "spark.hadoop.fs.s3a.path.style.access": "true",
        "spark.hadoop.fs.s3a.access.key": "lakehouse",
        "spark.hadoop.fs.s3a.secret.key": SECRET,
    }


def test_unknown_schemes_and_s3_without_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        Location.of("gs://bucket/lake")
    with pytest.raises(ValueError, match="S3 settings"):
        Location.of("s3://bucket/lake")


def test_partition_values_come_from_hive_folders() -> None:
    relative = "tenant_id=acme/event_date=2026-11-20/part-0.parquet"
    assert partition_values(relative) == {"tenant_id": "acme", "event_date": "2026-11-20"}
    assert partition_values("part-0.parquet") == {}


def test_local_files_are_written_whole_and_listed_without_hidden_ones(tmp_path: Path) -> None:
    root = Location.of(tmp_path)
    (root / "t/k=v/a.parquet").write_bytes(b"12345")
    (root / "t/_manifest/m.json").write_bytes(b"{}")
    assert (root / "t/k=v/a.parquet").read_bytes() == b"12345"
    assert list((root / "t").files(".parquet")) == [("k=v/a.parquet", 5)]
    assert not list((tmp_path / "t" / "k=v").glob(".*")), "no temporary file left"
    assert list((root / "missing").files()) == []
