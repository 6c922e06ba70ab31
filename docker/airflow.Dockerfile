# Airflow 3.3 (official image) with the project's requirements, Java 17 for spark-submit, and the
# DAGs and the code they import. docker-compose.yaml runs api-server, scheduler, dag-processor,
# triggerer and the one-shot airflow-init from it. Build context: the repository root.

FROM python:3.11.13-slim-bookworm AS requirements
RUN pip install --no-cache-dir uv==0.13.9
COPY pyproject.toml uv.lock /src/
RUN cd /src && uv export --frozen --no-dev --no-emit-project --no-hashes -o /requirements.txt

FROM apache/airflow:3.3.2-python3.11
USER root
RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
    && rm -rf /var/lib/apt/lists/*
# Mount points of named volumes: a new volume takes over their owner (the airflow user, uid 50000,
# which the project image's user shares).
RUN mkdir -p /data /opt/airflow/auth && chown airflow:root /data /opt/airflow/auth
USER airflow
COPY --from=requirements /requirements.txt /tmp/requirements.txt
# Pinning apache-airflow again keeps pip from changing the image's Airflow.
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -r /tmp/requirements.txt
COPY --chown=airflow:root include /opt/lakehouse/include
COPY --chown=airflow:root jobs /opt/lakehouse/jobs
COPY --chown=airflow:root dags /opt/lakehouse/dags
ENV PYTHONPATH=/opt/lakehouse \
    PYSPARK_PYTHON=/usr/local/bin/python \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/lakehouse/dags \
    LAKEHOUSE_STATE_DIR=/data
