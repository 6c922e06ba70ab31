"""Keep pandas out of processes that never use it, although pyarrow and PySpark look for it.

pyarrow's ``pa.array`` asks, for every Python list it converts, whether the list is a pandas
object, and its first question imports pandas to find out (about 38 MiB of private memory in
each of the stream's task workers). In the driver, PySpark's py4j converter for numpy arrays
imports ``pyspark.testing.utils`` on its first call, which imports pandas too. Neither uses
pandas for data that is not pandas already.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator


class _NoPandas:
    """An import finder that says pandas is not installed."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


@contextlib.contextmanager
def _pandas_hidden() -> Iterator[None]:
    finder = _NoPandas()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


def answer_pandas_probes() -> None:
    """Let pyarrow and PySpark look for pandas now, with pandas hidden, so they settle on
    working without it; pandas itself stays importable.

    Code that asks for pandas by name still gets it: pyarrow tries the import again for an
    explicit conversion (``to_pandas``), and PySpark's pandas APIs import it themselves. Only
    ``pyspark.testing.utils.have_pandas`` stays false. Without effect when pandas is imported
    already."""
    if "pandas" in sys.modules:
        return
    import pyarrow as pa

    with _pandas_hidden():
        pa.array([0])  # pyarrow's probe: "is this list a pandas object?"
        with contextlib.suppress(ImportError):
            import pyspark.testing.utils  # noqa: F401  # the py4j converter's probe
