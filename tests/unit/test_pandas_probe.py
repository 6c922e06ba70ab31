"""pandas stays out of the stream's processes although pyarrow and PySpark look for it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(code: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return result.stdout.split()


def test_pyarrow_imports_pandas_for_a_list_unless_its_probe_was_answered() -> None:
    # The premise: converting a Python list makes pyarrow import pandas (about 38 MiB).
    assert _run("import sys, pyarrow as pa; pa.array([0]); print('pandas' in sys.modules)") == [
        "True"
    ]


def test_answered_probes_keep_pandas_out_and_pandas_usable() -> None:
    code = (
        "import sys\n"
        "from jobs.stream.pandas_probe import answer_pandas_probes\n"
        "answer_pandas_probes()\n"
        "import pyarrow as pa\n"
        "from pyspark.sql.types import NumpyArrayConverter\n"
        "pa.array([1, 2]); pa.array(['a', None], pa.string()); pa.array([[('k', 'v')]],"
        " pa.list_(pa.struct([('k', pa.string()), ('v', pa.string())])))\n"
        "NumpyArrayConverter().can_convert([1])\n"  # the driver's py4j probe
        "print('pandas' in sys.modules)\n"
        # Asked for by name, pandas still comes: pyarrow tries again for an explicit conversion.
        "frame = pa.table({'n': [1, 2]}).to_pandas()\n"
        "print(type(frame).__name__, int(frame['n'].sum()))\n"
    )
    assert _run(code) == ["False", "DataFrame", "3"]


def test_answering_after_pandas_was_imported_changes_nothing() -> None:
    code = (
        "import pandas, pyarrow as pa\n"
        "from jobs.stream.pandas_probe import answer_pandas_probes\n"
        "answer_pandas_probes()\n"
        "print(pa.array(pandas.Series([1, 2])).to_pylist())\n"
    )
    assert _run(code) == ["[1,", "2]"]
