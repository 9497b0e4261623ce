# `make demo` and `make test` work on a fresh machine: both create .venv and install first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export ECOSYSTEM_HOME ?= $(CURDIR)/.ecosystem
# DAGSTER_HOME must be absolute; runs from `make demo` then show up in `make dev`.
export DAGSTER_HOME := $(abspath $(ECOSYSTEM_HOME))/dagster
export DO_NOT_TRACK := 1
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: setup demo dev mlflow serve replay test lint infra-check bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

$(DAGSTER_HOME)/dagster.yaml: deploy/dagster.local.yaml
	mkdir -p $(DAGSTER_HOME)
	cp $< $@

setup: $(VENV)/.installed $(DAGSTER_HOME)/dagster.yaml

demo: setup
	$(BIN)/ecosystem-assets demo

# The code location comes from workspace.yaml, so it is named `ecosystem_assets` (as in [tool.dagster]
# and [tool.dg]). `dg dev` is `dagster dev` without its SupersessionWarning; VIRTUAL_ENV tells dg that
# .venv is the project's environment (else it warns that none is active).
dev: setup
	FRAUD_RETRAIN_COOLDOWN_HOURS=$${FRAUD_RETRAIN_COOLDOWN_HOURS:-0.02} FRAUD_MONITORING_CRON="$${FRAUD_MONITORING_CRON:-*/5 * * * *}" \
	  VIRTUAL_ENV=$(abspath $(VENV)) $(BIN)/dg dev -w workspace.yaml

# The MLflow UI on http://127.0.0.1:5000 (loopback only) over the project's tracking store: the
# default sqlite:///$ECOSYSTEM_HOME/mlflow.db, or MLFLOW_TRACKING_URI when set.
mlflow: setup
	$(BIN)/mlflow ui --host 127.0.0.1 --port $(or $(MLFLOW_PORT),5000) \
	  --backend-store-uri "$${MLFLOW_TRACKING_URI:-sqlite:///$(abspath $(ECOSYSTEM_HOME))/mlflow.db}"

serve: setup
	$(BIN)/ecosystem-assets serve --port $(or $(PORT),8000)

# The closed-loop story (README): skimming rings start 28 days ago; the story's cooldown is short
# because 30 days are replayed in minutes, at 12 s a day at least (the sensor ticks every 30 s).
# Run `make dev` and `make serve` first, in other terminals.
replay: setup
	FRAUD_DRIFT_FROM=$${FRAUD_DRIFT_FROM:-$$(date -u -d '28 days ago' +%F)} \
	  $(BIN)/ecosystem-assets replay --service http://127.0.0.1:$(or $(PORT),8000) --days 30 --day-seconds $${DAY_SECONDS:-12}

# ruff and mypy, checkov over infra/ (in its own venv: its pins fight the project's), then the suite.
test: setup lint infra-check
	$(BIN)/python -m pytest -q

# ruff (lint + format) and mypy, configured in pyproject.toml.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

infra-check:
	bash infra/check.sh

bench: setup
	$(BIN)/python bench/load_time.py
	$(BIN)/python bench/sales_summary.py
	$(BIN)/python bench/cnn_throughput.py
	$(BIN)/python bench/drift.py
	$(BIN)/python bench/fraud_service.py
	$(BIN)/python bench/fraud_loop.py
	$(BIN)/python bench/monitoring.py
	$(BIN)/python bench/vision_input.py

clean:
	rm -rf $(ECOSYSTEM_HOME)
