"""PySpark jobs, run with ``spark-submit``."""
