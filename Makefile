# The two set-up commands: `make demo` and `make test`. Both build .venv from nothing when missing.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The lowest Airflow this provider supports, tested in its own venv.
COMPAT_VENV := .venv-airflow-3.1
COMPAT_STAMP := $(COMPAT_VENV)/.installed
# The emulator and the pure-Python modules do not depend on the Airflow version.
# The production shape and the services' wheels need the cluster extra, pinned for the newest Airflow
# only; the services' rules do not depend on the Airflow version.
COMPAT_TESTS ?= --ignore=tests/emulator --ignore=tests/example_dags --ignore=tests/test_requests.py \
	--ignore=tests/reliability/test_production_shape.py --ignore=tests/reliability/test_services.py
export AIRFLOW__CORE__LOAD_EXAMPLES := False
# pytest-xdist workers: most of the suite waits on emulators, Airflow subprocesses and servers, not on
# the CPU, so four workers on two cores cut the wall time without starving the timing-sensitive tests.
TEST_WORKERS ?= 4

.PHONY: help setup demo ui test test-compat lint typecheck unit emulator bench reliability test-slow ci-services clean

help:
	@echo "make demo         run the example pipeline against the bundled emulator"
	@echo "make ui           the Airflow UI with the Batches view on the demo's Airflow home (runs the demo if needed)"
	@echo "make test         ruff + mypy + the test suite (what CI runs)"
	@echo "make emulator     start the emulator on 127.0.0.1:8765"
	@echo "make bench        benchmarks (tables with ratios against baselines; BENCH_ARGS=\"--only export\")"
	@echo "make test-compat  the suite on the lowest supported Airflow (3.1), in .venv-airflow-3.1"
	@echo "make reliability  faults, crashes, restarts, bad input and secrets, with real processes,"
	@echo "                  and the production shape (PostgreSQL, Celery on Redis)"
	@echo "make test-slow    the long suites kept out of make test"
	@echo "make ci-services  as root: Debian's PostgreSQL and Redis for the production shape (.ci/run calls it)"

$(STAMP): pyproject.toml constraints.txt
	@echo "Setting up $(VENV) (first run only, a few minutes):"
	@test -x $(BIN)/python || { echo "  creating the virtualenv with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	@echo "  upgrading pip"
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@echo "  installing this provider (editable) with Apache Airflow, the Amazon provider (S3), moto,"
	@echo "  the anthropic SDK, pytest, ruff and mypy, pinned by constraints.txt"
	@$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	@touch $(STAMP)
	@echo "$(VENV) is ready."

$(COMPAT_STAMP): pyproject.toml constraints-airflow-3.1.txt
	@echo "Setting up $(COMPAT_VENV) (first run only, a few minutes):"
	@test -x $(COMPAT_VENV)/bin/python || { echo "  creating the virtualenv with $(PYTHON)"; $(PYTHON) -m venv $(COMPAT_VENV); }
	@echo "  upgrading pip"
	@$(COMPAT_VENV)/bin/python -m pip install --quiet --upgrade pip
	@echo "  installing this provider (editable) with Apache Airflow 3.1 and the test tools (browser test"
	@echo "  included), pinned by constraints-airflow-3.1.txt"
	@$(COMPAT_VENV)/bin/python -m pip install --quiet -c constraints-airflow-3.1.txt -e ".[test,browser]"
	@touch $(COMPAT_STAMP)
	@echo "$(COMPAT_VENV) is ready."

setup: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" -q -n $(TEST_WORKERS)

test: lint typecheck unit

test-compat: $(COMPAT_STAMP)
	$(COMPAT_VENV)/bin/python -m pytest -m "not slow" -q -n $(TEST_WORKERS) $(COMPAT_TESTS)

reliability: $(STAMP)
	$(BIN)/python -m pytest tests/reliability -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow -q

# Root only, and only CI needs it: a contributor's `make test` uses the cluster extra's wheels, or skips.
ci-services:
	bash scripts/ci-services.sh

demo: $(STAMP)
	$(BIN)/python scripts/demo.py $(DEMO_ARGS)

ui: $(STAMP)
	$(BIN)/python scripts/ui.py $(UI_ARGS)

emulator: $(STAMP)
	$(BIN)/anthropic-batches-emulator --host 127.0.0.1 --port 8765

bench: $(STAMP)
	@echo "Installing the bench extra (the Apache Anthropic provider, as a baseline)"
	@$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[bench]"
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(COMPAT_VENV) .mypy_cache .ruff_cache build *.egg-info
