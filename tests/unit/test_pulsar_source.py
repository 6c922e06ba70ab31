"""The source's pure parts: raw Arrow batches from message fields, and the fused validation."""

from __future__ import annotations

import pickle
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from jobs.stream.partition_read import ARROW_SCHEMA, _raw_batch, _validated
from jobs.stream.pulsar_source import TopicRange, Validation
from jobs.stream.validate import OUTPUT_SCHEMA, validate_batch

TOPIC = "persistent://public/default/acme_shop.events"


def test_raw_batches_keep_publish_times_to_the_millisecond() -> None:
    columns: dict[str, list[Any]] = {
        "message_id": ["7:12:-1", "7:13:0"],
        "key": ["k1", None],
        "properties": [[("a", "b")], []],
        "value": [b"{}", b"x"],
    }
    # 2026-11-20T12:00:00.123Z and the epoch itself.
    batch = _raw_batch(TOPIC, columns, [1_795_176_000_123, 0])
    assert batch.schema == ARROW_SCHEMA
    assert batch.to_pylist() == [
        {
            "topic": TOPIC,
            "message_id": "7:12:-1",
            "publish_time": datetime(2026, 11, 20, 12, 0, 0, 123_000, tzinfo=UTC),
            "key": "k1",
            "properties": [("a", "b")],
            "value": b"{}",
        },
        {
            "topic": TOPIC,
            "message_id": "7:13:0",
            "publish_time": datetime(1970, 1, 1, tzinfo=UTC),
            "key": None,
            "properties": [],
            "value": b"x",
        },
    ]


def test_a_validated_read_is_validate_batch_of_the_raw_read() -> None:
    raw = _raw_batch(
        TOPIC,
        {
            "message_id": ["1:0:-1", "1:1:-1"],
            "key": [None, None],
            "properties": [[], []],
            "value": [b"{broken", orjson.dumps({"schema_version": 9})],
        },
        [1_795_176_000_000, 1_795_176_000_001],
    )
    validation = Validation(
        (("acme_shop", "USD"),), "persistent://public/default/{tenant_id}.events", 1_000
    )
    (out,) = list(_validated(iter([raw]), validation))
    assert out.schema == OUTPUT_SCHEMA
    expected = validate_batch(
        raw,
        {"acme_shop": "USD"},
        validation.topic_template,
        1_000,
        out.column("ingest_time")[0].as_py(),
    )
    assert out.equals(expected)
    assert out.column("reason").to_pylist() == ["invalid_json", "unsupported_schema_version"]


def test_the_validation_context_travels_in_the_pickled_partition() -> None:
    validation = Validation((("acme_shop", "USD"),), "{tenant_id}", 10)
    part = TopicRange(TOPIC, None, (1, 2, -1), "pulsar://x", 1_000, "secret", validation)
    back = pickle.loads(pickle.dumps(part))
    assert back.validation == validation
    assert "secret" not in repr(part)


def test_a_python_worker_keeps_one_client_until_a_read_fails() -> None:
    from jobs.stream.partition_read import _drop_worker_client, _worker_client

    # Creating a client connects to nothing until it is used.
    url = "pulsar://127.0.0.1:1"
    first = _worker_client(url, None)
    assert _worker_client(url, None) is first
    assert _worker_client(url, "token") is not first, "one client per credentials"
    _drop_worker_client(url, None)
    _drop_worker_client(url, "token")
    assert _worker_client(url, None) is not first
    _drop_worker_client(url, None)


def test_the_landing_sources_ddl_is_the_landed_arrow_schema() -> None:
    from pyspark.sql.pandas.types import from_arrow_schema

    from jobs.stream.landing_schema import LANDED_SCHEMA
    from jobs.stream.pulsar_source import LANDED_DDL

    expected = [(f.name, f.dataType.simpleString()) for f in from_arrow_schema(LANDED_SCHEMA)]
    assert [tuple(column.split(" ")) for column in LANDED_DDL.split(", ")] == expected
    assert all(f.nullable for f in LANDED_SCHEMA), "DDL columns are nullable"


def test_planning_the_landing_source_imports_no_pyarrow(tmp_path: Path) -> None:
    # Spark unpickles the registered source class in create_data_source and asks its schema;
    # with pyarrow (and numpy) that process held about 45 MiB more.
    from pyspark import cloudpickle

    from include.lake.storage import Location
    from jobs.stream.pulsar_source import Landing, landing_source

    source = landing_source(Landing(Location(str(tmp_path)), "postgresql://nowhere"))
    pickled = tmp_path / "source.pickle"
    pickled.write_bytes(cloudpickle.dumps(source))  # type: ignore[no-untyped-call]
    code = (
        "import pickle, sys\n"
        "import pyspark.sql.worker.create_data_source\n"
        f"source = pickle.loads(open({str(pickled)!r}, 'rb').read())\n"
        "print(source({}).schema().split(',')[0])\n"
        "print('pyarrow' in sys.modules, 'numpy' in sys.modules)\n"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["file_table", "string", "False", "False"]
