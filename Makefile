# The single entry point for people. `make help` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

PYTHON_SYSTEM ?= $(shell command -v python3.11 2>/dev/null || echo python3)
VENV := .venv
PY := $(VENV)/bin/python
# uv must never try to download a Python build (its host is unreachable here).
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(CURDIR)/$(VENV)
UV := $(shell command -v uv 2>/dev/null || echo "$(PYTHON_SYSTEM) -m uv")

.PHONY: help setup test-tools run stop status logs test test-unit test-integration test-chaos check format \
        generate bench-generator bench-stream bench-platform bench-load bench-api bench-validate soak bench reset clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# Installed with bytecode: this machine's environment sets PYTHONDONTWRITEBYTECODE, so without
# it every Python process (each Spark worker, each Airflow task) compiles pandas, pyarrow and
# pydantic from source again (half of a Spark worker's CPU in the stream benchmark's profile).
# The marker's name changed with that flag, so an environment synced before it is synced again.
$(VENV)/.synced-bytecode: pyproject.toml uv.lock
	@command -v $(PYTHON_SYSTEM) >/dev/null || { echo "Python 3.11 is required: install python3.11 (or set PYTHON_SYSTEM=/path/to/python3.11)."; exit 1; }
	@$(PYTHON_SYSTEM) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || { echo "Python 3.11 is required, $(PYTHON_SYSTEM) is $$($(PYTHON_SYSTEM) --version): install python3.11."; exit 1; }
	@command -v uv >/dev/null || $(PYTHON_SYSTEM) -m uv --version >/dev/null 2>&1 || { echo "Installing uv (pip install --user uv)"; $(PYTHON_SYSTEM) -m pip install --quiet --user uv; }
	$(UV) sync --frozen --compile-bytecode --python $(PYTHON_SYSTEM)
	@touch $@

# Debian packages the tests drive: chromium for the browser tests (test tools cannot download
# their own browser here), faketime for the runs with the clock moved ahead, prometheus for
# promtool (the alert rules' unit tests) and the live alert test.
TEST_PACKAGES := chromium faketime prometheus
test-tools:
	@missing=""; for tool in $(TEST_PACKAGES); do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then echo "Installing$$missing (apt-get) for the tests"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null \
	    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; }; \
	  elif command -v sudo >/dev/null; then sudo apt-get install -y -qq $$missing; \
	  else echo "The tests need$$missing: apt-get install -y$$missing as root."; exit 1; fi; fi

setup: $(VENV)/.synced-bytecode ## Create the virtual environment from the lock file

run: setup ## Start the whole platform (embedded default) and print what runs where
	$(PY) -m include.embedded up

stop: ## Stop every process `make run` started
	@if [ -x $(PY) ]; then $(PY) -m include.embedded down; else echo "Nothing was running."; fi

status: setup ## Show what runs
	@$(PY) -m include.embedded status

logs: setup ## Follow the services' logs (SERVICE=postgres|pulsar|generator for one)
	@$(PY) -m include.embedded logs $(SERVICE)

test: setup test-tools check ## Lint and type-check, then run every test (unit, integration and end-to-end; starts its own services)
	$(PY) -m pytest

test-unit: setup test-tools ## Run the fast unit tests only (promtool among them)
	$(PY) -m pytest -m unit

test-integration: setup test-tools ## Run the tests that start real services
	$(PY) -m pytest -m integration

CLOCK_SHIFT_DAYS ?= 400
test-clock-shift: setup test-tools ## Run every test with the clock CLOCK_SHIFT_DAYS days ahead (faketime): the result must not depend on the date
	faketime -f "+$(CLOCK_SHIFT_DAYS)d" $(PY) -m pytest -p tests.clock_shift $(PYTEST_ARGS)

test-chaos: setup ## Run the chaos suite: the end-to-end run with each kind of fault (LAKEHOUSE_CHAOS_SEED to replay)
	$(PY) -m pytest tests/chaos -m chaos

.PHONY: test-e2e test-clock-shift
test-e2e: setup ## Run the end-to-end test: every component as `make run` starts it, exact numbers
	$(PY) -m pytest tests/e2e

check: setup ## Lint, format check and type check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .

format: setup ## Format the code and fix what ruff can
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

COUNT ?= 100000
generate: setup ## Publish COUNT events as fast as possible to the demo tenants (needs `make run`)
	$(PY) -m generator burst --count $(COUNT)

bench-generator: setup ## Measure the generator's burst rate into pulsar-lite (own services)
	$(PY) -m tests.bench.bench_generator

bench-stream: setup ## Measure sustained Pulsar-to-silver events/s of the streaming job (own services)
	$(PY) -m tests.bench.bench_stream

bench-platform: setup ## Whole platform as make run starts it: 300,000-event burst to /metrics, p95 at 10,000 events/s (own services)
	$(PY) -m tests.bench.bench_platform

bench-load: setup ## Measure the load on the Spark Connect server (rows/s vs row-by-row INSERT, 1,000-event increments, idle runs) and the platform's idle cost (own services, ~20 min)
	$(PY) -m tests.bench.bench_load

bench-validate: setup ## Measure validate_batch µs/event on one core: Pydantic only vs the msgspec fast path (no services, ~15 s)
	$(PY) -m tests.bench.bench_validate

BENCH_API_EVENTS ?= 10000000
bench-api: setup ## Measure /metrics and /events latency at 50 clients on BENCH_API_EVENTS events (own services)
	$(PY) -m tests.bench.bench_api --events $(BENCH_API_EVENTS)

SOAK_RATE ?= 10000
SOAK_MINUTES ?= 10
soak: setup ## Soak: SOAK_RATE events/s for SOAK_MINUTES min with API clients; lag, memory slopes, exact totals (own services)
	$(PY) -m tests.bench.soak --rate $(SOAK_RATE) --minutes $(SOAK_MINUTES)

bench: setup ## Run every benchmark in a shorter form (about 30 min); write docs/benchmarks/REPORT.md and its plots
	$(PY) -m tests.bench.report

# Through Python: only the settings know where PostgreSQL's cluster went when started as root.
reset: setup ## Stop and delete all local data (the state directory, and PostgreSQL's cluster wherever it lives)
	@$(PY) -m include.embedded reset

clean: ## Remove the virtual environment and caches
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
