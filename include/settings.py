"""The one configuration class shared by every component.

Every value comes from an environment variable with the ``LAKEHOUSE_`` prefix or from an
optional ``.env`` file. Dev-only defaults (credentials meant for a laptop) are refused when
``LAKEHOUSE_ENV`` is not ``dev``, so a production deployment cannot start with them.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import quote

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from include.lake.storage import Location, S3Connection

DEV_ADMIN_TOKEN = "admin-token"  # noqa: S105 - the documented dev credential, refused outside dev
DEV_PG_PASSWORD = "lakehouse-dev"  # noqa: S105 - the documented dev credential, refused outside dev
DEV_API_PG_PASSWORD = "lakehouse-api-dev"  # noqa: S105 - the documented dev credential, refused outside dev


class Settings(BaseSettings):
    """Platform configuration. Each field is documented in the README's configuration table."""

    model_config = SettingsConfigDict(
        env_prefix="LAKEHOUSE_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    env: Literal["dev", "test", "prod"] = Field(
        "dev", description="Deployment environment; dev-only credentials are refused unless dev."
    )
    state_dir: Path = Field(
        Path(".lakehouse"), description="Where every embedded service keeps its data and logs."
    )
    log_level: str = Field("INFO", description="Log level for every component.")

    lake_uri: str | None = Field(
        None,
        description="Root of the Delta tables: a folder or `s3://bucket/prefix`; "
        "`<state dir>/lake` if unset.",
    )
    archive_uri: str | None = Field(
        None,
        description="Root of the Parquet archive: a folder or `s3://bucket/prefix`; "
        "`<state dir>/archive` if unset.",
    )
    checkpoint_uri: str | None = Field(
        None,
        description="The streaming job's Spark checkpoint: a folder, or `s3a://bucket/prefix` "
        "where Spark has hadoop-aws; `<state dir>/checkpoints/stream` if unset.",
    )
    s3_endpoint_url: str | None = Field(
        None,
        description="Endpoint of an S3-compatible store (MinIO: `http://minio:9000`; plain HTTP "
        "only with an `http://` endpoint); AWS S3 if unset.",
    )
    s3_region: str = Field("us-east-1", description="Region of the S3 bucket(s).")
    s3_access_key_id: str | None = Field(
        None, description="S3 access key id; the AWS environment's credentials if unset."
    )
    s3_secret_access_key: SecretStr | None = Field(
        None, description="S3 secret access key (with `LAKEHOUSE_S3_ACCESS_KEY_ID`)."
    )

    pg_host: str = Field("127.0.0.1", description="PostgreSQL host.")
    pg_port: int = Field(5433, description="PostgreSQL port (5433 avoids a system server).")
    pg_database: str = Field("lakehouse", description="PostgreSQL database of the platform.")
    pg_user: str = Field("lakehouse", description="PostgreSQL user (owner of the schema).")
    pg_password: SecretStr = Field(
        SecretStr(DEV_PG_PASSWORD),
        description="PostgreSQL password (dev default refused outside dev).",
    )
    pg_bindir: Path | None = Field(
        None, description="Folder of the PostgreSQL server binaries; found automatically if unset."
    )
    pg_os_user: str = Field(
        "postgres", description="OS user that runs the embedded PostgreSQL when started as root."
    )
    pg_fallback_dir: Path = Field(
        Path("/var/lib/lakehouse"),
        description="Where the embedded PostgreSQL keeps its cluster (one folder per state "
        "directory) when started as root and `pg_os_user` cannot reach the state directory.",
    )

    pulsar_url: str = Field("pulsar://127.0.0.1:6650", description="Pulsar service URL.")
    pulsar_auth_token: SecretStr | None = Field(
        None,
        description="Token for Pulsar's token authentication (a JWT the cluster issued); unset "
        "for a broker without authentication (the embedded one).",
    )
    pulsar_metrics_addr: str = Field(
        "127.0.0.1:9650", description="Loopback address of the embedded broker's metrics."
    )
    topic_template: str = Field(
        "persistent://public/default/{tenant_id}.events",
        description="Topic name of a tenant; must contain {tenant_id}.",
    )

    admin_token: SecretStr = Field(
        SecretStr(DEV_ADMIN_TOKEN),
        description="Bootstrap admin API token (dev default refused outside dev).",
    )

    demo_tenants: list[str] = Field(
        default_factory=lambda: ["acme_shop", "globex_store", "initech_mart"],
        description="Tenants the generator publishes for under `make run` (JSON list).",
    )
    generator_rate: float = Field(
        50.0, gt=0, description="Events per second of the generator under `make run`."
    )
    generator_seed: int | None = Field(
        None, description="Seed of the generator under `make run`; random if unset."
    )

    spark_master: str = Field(
        "local[2]",
        description="Spark master URL of the streaming job and the load job (`local[N]` or "
        "`spark://host:port`).",
    )
    spark_driver_memory: str = Field(
        "1g", description="JVM heap of the streaming job's Spark driver (`spark.driver.memory`)."
    )
    spark_driver_java_options: str = Field(
        "-XX:+UseSerialGC -Xms128m -Xmn48m",
        description="JVM options of the streaming job's Spark driver "
        "(`--driver-java-options`). The default keeps the heap near what the stream uses "
        "(about 65 MiB live): G1 grew it to 520 MiB.",
    )
    spark_cores_max: int = Field(
        2,
        ge=1,
        description="Most cores of a Spark cluster one application (the stream, each load) "
        "takes (`spark.cores.max`); ignored in local mode.",
    )
    spark_connect_addr: str = Field(
        "127.0.0.1:15002",
        description="Address of the Spark Connect server that runs the batch work (loads, "
        "replays): `make run` binds it on loopback; clients reach it at this address.",
    )
    spark_connect_memory: str = Field(
        "1g",
        description="JVM heap of the Spark Connect server's driver (`spark.driver.memory`).",
    )
    stream_trigger_seconds: float = Field(
        2.0, gt=0, description="Micro-batch interval of the streaming job."
    )
    stream_max_records_per_batch: int = Field(
        50_000,
        ge=0,
        description="Admission control: about this many messages per micro-batch (0: no limit).",
    )
    stream_max_payload_bytes: int = Field(
        262_144, gt=0, description="Larger messages are quarantined as payload_too_large."
    )
    stream_metrics_addr: str = Field(
        "127.0.0.1:9651", description="Loopback address of the streaming job's Prometheus metrics."
    )

    prometheus_addr: str = Field(
        "127.0.0.1:9652",
        description="Loopback address of the embedded Prometheus (UI and API); not 9090, where "
        "the system service of Debian's package listens.",
    )
    prometheus_interval: str | None = Field(
        None,
        pattern=r"^[1-9][0-9]*(ms|s|m)$",
        description="Scrape and rule evaluation interval of the embedded Prometheus (e.g. `5s`); "
        "that of `deploy/prometheus/prometheus.yml` if unset.",
    )

    airflow_host: str = Field(
        "127.0.0.1", description="Host of the Airflow REST API (the API triggers erasures there)."
    )
    airflow_port: int = Field(8080, description="Port of the Airflow UI and REST API.")
    airflow_parallelism: int = Field(
        4, gt=0, description="Airflow tasks running at once (LocalExecutor)."
    )
    airflow_execution_api_retries: int = Field(
        10,
        ge=1,
        description="Attempts of a running task's call to Airflow's execution API (the "
        "api-server) before the task fails. Airflow's 5, with waits drawn up to 1, 2, 4, 8 s, "
        "can end before a restarted api-server serves again (28 s on a busy 2-core machine).",
    )
    airflow_execution_api_timeout_s: float = Field(
        30.0,
        gt=0,
        description="How long a task waits for one answer of the execution API. A busy "
        "machine's api-server took 6.5 s to start a task (seen in CI): with Airflow's 5 s the "
        "task sent the call again while the first was still being served.",
    )
    load_schedule: str = Field(
        "* * * * *", description="Cron schedule of the load_postgres DAG (UTC)."
    )
    pg_retention_months: int = Field(
        24, ge=1, description="maintain_postgres drops analytics partitions older than this."
    )
    pg_partitions_ahead: int = Field(
        2, ge=0, description="maintain_postgres creates this many coming monthly partitions."
    )
    lake_hot_days: int = Field(
        30, ge=1, description="archive_lake moves lake partitions older than this many days."
    )
    lake_vacuum_retention_hours: int = Field(
        168, ge=0, description="archive_lake vacuums unreferenced Delta files older than this."
    )
    lake_log_retention_days: int = Field(
        30,
        ge=1,
        description="Delta log history the stream's new tables keep (delta.logRetentionDuration): "
        "incremental loads and time travel reach back this far.",
    )
    watchdog_stale_seconds: float = Field(
        180.0,
        gt=0,
        description="stream_watchdog fails when messages wait and no batch committed this long.",
    )
    watchdog_max_lag_seconds: float = Field(
        600.0, gt=0, description="stream_watchdog fails when the last batch's lag exceeds this."
    )

    api_host: str = Field("127.0.0.1", description="Address the analytics API listens on.")
    api_port: int = Field(8000, description="Port of the analytics API.")
    api_pg_password: SecretStr = Field(
        SecretStr(DEV_API_PG_PASSWORD),
        description="Password of the API's PostgreSQL role `lakehouse_api` (dev default refused "
        "outside dev).",
    )
    api_pool_size: int = Field(10, gt=0, description="PostgreSQL connections of the API.")
    api_work_mem: str = Field(
        "64MB",
        pattern=r"^[1-9][0-9]*(kB|MB|GB)$",
        description="`work_mem` of each API query (distinct counts over events sort in it).",
    )
    api_rate_limit_per_minute: int = Field(
        1200, gt=0, description="Requests per minute one API token may make (429 beyond)."
    )
    api_max_page_size: int = Field(
        1000, gt=0, description="Largest `limit` of `GET /events` (default page: 100)."
    )
    api_max_buckets: int = Field(
        2000, gt=0, description="Most buckets one `GET /metrics` may return."
    )
    api_max_range_days: int = Field(
        400, gt=0, description="Longest time range (days) of one API query."
    )
    api_max_request_bytes: int = Field(
        65_536, gt=0, description="Largest request body the API accepts (413 beyond)."
    )
    api_workers: int = Field(
        0, ge=0, description="Worker processes of the analytics API (0: one per core)."
    )
    api_cache_mb: int = Field(
        256,
        ge=0,
        description="MiB of cached `/metrics` answers per API worker, dropped when their data "
        "changes (LISTEN/NOTIFY); 0 disables the cache.",
    )
    api_heartbeat_max_age_seconds: float = Field(
        300.0, gt=0, description="`/ready` fails when the stream's heartbeat is older than this."
    )
    anomaly_z_threshold: float = Field(
        3.5, gt=0, description="Robust z-score at or above which an hourly value is an anomaly."
    )
    anomaly_baseline_hours: int = Field(
        168, ge=6, description="Trailing hours the hourly anomaly detector compares against."
    )
    airflow_api_password: SecretStr | None = Field(
        None,
        description="Password of the Airflow user `admin` the API triggers erasures as; the "
        "embedded platform's generated one if unset.",
    )

    @model_validator(mode="after")
    def _refuse_dev_defaults_outside_dev(self) -> Settings:
        if self.env != "dev":
            if self.admin_token.get_secret_value() == DEV_ADMIN_TOKEN:
                raise ValueError(
                    "LAKEHOUSE_ADMIN_TOKEN still has the dev default; set a secret value "
                    f"when LAKEHOUSE_ENV={self.env}"
                )
            if self.api_pg_password.get_secret_value() == DEV_API_PG_PASSWORD:
                raise ValueError(
                    "LAKEHOUSE_API_PG_PASSWORD still has the dev default; set a secret value "
                    f"when LAKEHOUSE_ENV={self.env}"
                )
            if self.pg_password.get_secret_value() == DEV_PG_PASSWORD:
                raise ValueError(
                    "LAKEHOUSE_PG_PASSWORD still has the dev default; set a secret value "
                    f"when LAKEHOUSE_ENV={self.env}"
                )
        if "{tenant_id}" not in self.topic_template:
            raise ValueError("LAKEHOUSE_TOPIC_TEMPLATE must contain the placeholder {tenant_id}")
        return self

    @property
    def pg_dsn(self) -> str:
        """libpq connection string for the platform database (password included)."""
        return (
            f"host={self.pg_host} port={self.pg_port} dbname={self.pg_database} "
            f"user={self.pg_user} password={self.pg_password.get_secret_value()}"
        )

    @property
    def api_pg_dsn(self) -> str:
        """asyncpg/libpq URL of the API's role ``lakehouse_api`` (password included)."""
        password = quote(self.api_pg_password.get_secret_value(), safe="")
        return (
            f"postgresql://lakehouse_api:{password}@{self.pg_host}:{self.pg_port}/"
            f"{quote(self.pg_database, safe='')}"
        )

    @property
    def airflow_url(self) -> str:
        """Base URL of the Airflow UI and REST API."""
        return f"http://{self.airflow_host}:{self.airflow_port}"

    @property
    def spark_connect_url(self) -> str:
        """The Spark Connect server's client URL (``sc://host:port``)."""
        return f"sc://{self.spark_connect_addr}"

    @property
    def lake_dir(self) -> Path:
        """Root folder of the Delta tables, when the lake is a local folder."""
        return self.lake.path

    @property
    def archive_dir(self) -> Path:
        """Root folder of the Parquet archive, when the archive is a local folder."""
        return self.archive.path

    @property
    def s3(self) -> S3Connection:
        """How to reach the S3-compatible store of any ``s3://`` location."""
        from include.lake.storage import S3Connection

        secret = self.s3_secret_access_key
        return S3Connection(
            endpoint_url=self.s3_endpoint_url,
            region=self.s3_region,
            access_key_id=self.s3_access_key_id,
            secret_access_key=None if secret is None else secret.get_secret_value(),
        )

    def _location(self, uri: str | None, default: Path) -> Location:
        from include.lake.storage import Location

        if uri is None:
            return Location.of(self.state_dir.expanduser().resolve() / default)
        return Location.of(uri, self.s3)

    @property
    def lake(self) -> Location:
        """Root of the Delta tables (``LAKEHOUSE_LAKE_URI``)."""
        return self._location(self.lake_uri, Path("lake"))

    @property
    def archive(self) -> Location:
        """Root of the Parquet archive of old lake partitions (``LAKEHOUSE_ARCHIVE_URI``)."""
        return self._location(self.archive_uri, Path("archive"))

    @property
    def checkpoint(self) -> str:
        """The streaming job's Spark checkpoint location, as Spark takes it."""
        if self.checkpoint_uri is None:
            return str(self.state_dir.expanduser().resolve() / "checkpoints" / "stream")
        return self._location(self.checkpoint_uri, Path()).uri.replace("s3://", "s3a://", 1)

    @property
    def checkpoint_dir(self) -> Path:
        """The streaming job's Spark checkpoint, when it is a local folder."""
        return self._location(self.checkpoint, Path()).path

    @property
    def pulsar_token(self) -> str | None:
        """The Pulsar authentication token in clear, or None."""
        token = self.pulsar_auth_token
        return None if token is None else token.get_secret_value()

    @property
    def pulsar_port(self) -> int:
        """Port part of ``pulsar_url``."""
        return int(self.pulsar_url.rsplit(":", 1)[1].rstrip("/"))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment on first use."""
    return Settings()
