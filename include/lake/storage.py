"""Where the lake and the archive live: a local folder or a prefix in an S3-compatible bucket.

Every Delta and Parquet read or write of the platform goes through a ``Location``: delta-rs gets
its URI and ``storage_options``, pyarrow gets a filesystem and the path inside it. So one code
path serves a folder (``make run``, the tests) and S3, MinIO or any S3-compatible store
(``LAKEHOUSE_LAKE_URI=s3://bucket/lake`` with the ``LAKEHOUSE_S3_*`` settings).

Commits on S3 are safe with concurrent writers: delta-rs writes each commit file with a
conditional put (``If-None-Match: *``), so of two writers racing for the same version exactly one
wins and the other retries on the next version; ``aws_conditional_put=etag`` also makes its
overwrites conditional (``If-Match``). ``AWS_S3_ALLOW_UNSAFE_RENAME`` is never set.

S3 has no rename: a written object appears whole or not at all, so where the local code writes a
temporary file and renames it, the S3 code writes the object in one put.

Heavy libraries are imported inside the functions: the settings (imported by every DAG while
parsing) build ``Location`` values.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import pyarrow.fs as pafs
    from deltalake import DeltaTable

S3_SCHEMES = ("s3", "s3a")


@dataclass(frozen=True)
class S3Connection:
    """How to reach an S3-compatible store (credentials from the environment if unset)."""

    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)

    @property
    def allow_http(self) -> bool:
        """Plain HTTP only when the endpoint says so (a MinIO or test server on a private net)."""
        return bool(self.endpoint_url and self.endpoint_url.startswith("http://"))

    def delta_options(self) -> dict[str, str]:
        """delta-rs (object_store) storage options; conditional put for safe concurrent commits."""
        options = {"AWS_REGION": self.region, "aws_conditional_put": "etag"}
        if self.endpoint_url:
            options["AWS_ENDPOINT_URL"] = self.endpoint_url
        if self.allow_http:
            options["AWS_ALLOW_HTTP"] = "true"
        if self.access_key_id and self.secret_access_key:
            options["AWS_ACCESS_KEY_ID"] = self.access_key_id
            options["AWS_SECRET_ACCESS_KEY"] = self.secret_access_key
        return options

    def hadoop_options(self) -> dict[str, str]:
        """``spark.hadoop.fs.s3a.*`` settings for Spark's own S3 access (needs hadoop-aws)."""
        options = {"spark.hadoop.fs.s3a.endpoint.region": self.region}
        if self.endpoint_url:
            endpoint = urlsplit(self.endpoint_url)
            options["spark.hadoop.fs.s3a.endpoint"] = endpoint.netloc
            options["spark.hadoop.fs.s3a.connection.ssl.enabled"] = str(not self.allow_http).lower()
            options["spark.hadoop.fs.s3a.path.style.access"] = "true"
        if self.access_key_id and self.secret_access_key:
            options["spark.hadoop.fs.s3a.access.key"] = self.access_key_id
            options["spark.hadoop.fs.s3a.secret.key"] = self.secret_access_key
        return options

    def filesystem(self) -> pafs.FileSystem:
        """A pyarrow S3 filesystem on this store."""
        import pyarrow.fs as pafs

        endpoint = urlsplit(self.endpoint_url) if self.endpoint_url else None
        return pafs.S3FileSystem(
            access_key=self.access_key_id,
            secret_key=self.secret_access_key,
            region=self.region,
            endpoint_override=endpoint.netloc if endpoint else None,
            scheme=endpoint.scheme if endpoint else "https",
            force_virtual_addressing=False,
        )


@dataclass(frozen=True)
class Location:
    """A folder of the lake or the archive: an absolute local path or ``s3://bucket/prefix``.

    Picklable (Spark ships it to the executors), and cheap: nothing connects until used.
    """

    uri: str
    s3: S3Connection | None = None

    @classmethod
    def of(cls, uri: str | Path, s3: S3Connection | None = None) -> Location:
        """The location of ``uri``: ``s3://`` or ``s3a://`` URIs need ``s3``; anything else is a
        local folder (made absolute)."""
        text = str(uri)
        scheme = urlsplit(text).scheme
        if scheme in S3_SCHEMES:
            if s3 is None:
                raise ValueError(f"{text} is on S3: the S3 settings are needed to reach it")
            return cls("s3://" + text.split("://", 1)[1].rstrip("/"), s3)
        if scheme and scheme != "file":
            raise ValueError(f"unsupported storage URI {text!r} (a folder or s3://bucket/prefix)")
        return cls(str(Path(text.removeprefix("file://")).expanduser().resolve()))

    @property
    def is_local(self) -> bool:
        """Whether this is a folder of the local filesystem."""
        return self.s3 is None

    @property
    def path(self) -> Path:
        """The local folder (only for a local location)."""
        if self.s3 is not None:
            raise ValueError(f"{self.uri} is not a local folder")
        return Path(self.uri)

    @property
    def name(self) -> str:
        """Last component of the path."""
        return posixpath.basename(self.uri)

    def __truediv__(self, child: str) -> Location:
        return Location(posixpath.join(self.uri, child), self.s3)

    def __str__(self) -> str:
        return self.uri

    # -- delta-rs ----------------------------------------------------------------------------
    @property
    def storage_options(self) -> dict[str, str] | None:
        """delta-rs storage options (None for a local folder)."""
        return None if self.s3 is None else self.s3.delta_options()

    def is_delta_table(self) -> bool:
        """Whether a Delta table lives here."""
        from deltalake import DeltaTable

        return bool(DeltaTable.is_deltatable(self.uri, storage_options=self.storage_options))

    def delta_table(self) -> DeltaTable:
        """The Delta table living here, at its latest version."""
        from deltalake import DeltaTable

        return DeltaTable(self.uri, storage_options=self.storage_options)

    # -- pyarrow filesystem ------------------------------------------------------------------
    def filesystem(self) -> tuple[pafs.FileSystem, str]:
        """A pyarrow filesystem and this location's path inside it."""
        if self.s3 is None:
            import pyarrow.fs as pafs

            return pafs.LocalFileSystem(), self.uri
        return self.s3.filesystem(), self.uri.removeprefix("s3://")

    def exists(self) -> bool:
        """Whether a file or folder (for S3: any object under the prefix) is here."""
        import pyarrow.fs as pafs

        fs, path = self.filesystem()
        return bool(fs.get_file_info(path).type != pafs.FileType.NotFound)

    def read_bytes(self) -> bytes:
        """The whole file."""
        fs, path = self.filesystem()
        with fs.open_input_stream(path) as stream:
            return bytes(stream.read())

    def write_bytes(self, data: bytes) -> None:
        """Write the whole file atomically: readers see the old content or the new, never part.

        Locally through a temporary file in the same folder and a rename; on S3 in one put."""
        if self.s3 is None:
            target = self.path
            target.parent.mkdir(parents=True, exist_ok=True)
            temporary = target.with_name(f".{target.name}.tmp")
            temporary.write_bytes(data)
            temporary.replace(target)
            return
        fs, path = self.filesystem()
        with fs.open_output_stream(path) as stream:
            stream.write(data)

    def files(self, suffix: str = "") -> Iterator[tuple[str, int]]:
        """``(path relative to here, size)`` of every file below, whose name ends in ``suffix``
        (hidden and temporary files, starting with ``.`` or ``_``, skipped), sorted."""
        import pyarrow.fs as pafs

        fs, root = self.filesystem()
        selector = pafs.FileSelector(root, recursive=True, allow_not_found=True)
        found = []
        for info in fs.get_file_info(selector):
            relative = posixpath.relpath(info.path, root)
            if info.type != pafs.FileType.File or not info.base_name.endswith(suffix):
                continue
            if any(part.startswith((".", "_")) for part in relative.split("/")):
                continue
            found.append((relative, int(info.size or 0)))
        return iter(sorted(found))

    def sha256(self) -> str:
        """Hex SHA-256 of the file's bytes."""
        digest = hashlib.sha256()
        fs, path = self.filesystem()
        with fs.open_input_stream(path) as stream:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
        return digest.hexdigest()


def as_location(where: Location | Path | str) -> Location:
    """``where`` as a location; a path or a plain string is a local folder."""
    return where if isinstance(where, Location) else Location.of(where)


def partition_values(relative: str) -> dict[str, str]:
    """The Hive-style partition values in a data file's relative path
    (``tenant_id=acme/event_date=2026-11-20/part-0.parquet`` gives both)."""
    from urllib.parse import unquote

    values = {}
    for part in relative.split("/")[:-1]:
        key, sep, value = part.partition("=")
        if sep:
            values[key] = unquote(value)
    return values
