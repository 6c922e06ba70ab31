# The project's image: Python 3.11, Java 17 and pyspark 4.2 (Spark's jars ship in the wheel),
# with the locked dependencies and the code. docker-compose.yaml runs the Spark master and
# workers, the streaming job's driver, the API, the generator and the one-shot `migrate` from it.
# Build context: the repository root (docker compose build does it).

FROM python:3.11.13-slim-bookworm AS requirements
RUN pip install --no-cache-dir uv==0.13.9
COPY pyproject.toml uv.lock /src/
RUN cd /src && uv export --frozen --no-dev --no-emit-project --no-hashes -o /requirements.txt

FROM python:3.11.13-slim-bookworm
RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless curl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=requirements /requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir -r /tmp/requirements.txt && rm /tmp/requirements.txt
# Same uid and group as the Airflow image's user: both write the shared lake volume.
RUN useradd --uid 50000 --gid 0 --create-home lakehouse \
    && mkdir -p /data /opt/lakehouse && chown 50000:0 /data /opt/lakehouse
WORKDIR /opt/lakehouse
COPY --chown=50000:0 include ./include
COPY --chown=50000:0 jobs ./jobs
COPY --chown=50000:0 api ./api
COPY --chown=50000:0 generator ./generator
COPY --chown=50000:0 docker/migrate.py ./docker/migrate.py
ENV PYTHONPATH=/opt/lakehouse \
    PYTHONUNBUFFERED=1 \
    PYSPARK_PYTHON=/usr/local/bin/python \
    LAKEHOUSE_STATE_DIR=/data
USER 50000
