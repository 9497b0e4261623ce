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

.PHONY: setup demo dev mlflow serve replay test lint infra-check lock bench clean

# The install is uv's (pinned in the dev extra; pip only installs uv itself): the same versions as pip
# resolves, in 83 s instead of 215 s on 2 cores (parallel downloads, installs and byte-compiling). 83 s is the
# install alone; inside `make test` it runs beside checkov's install and took 101 s (README).
# --compile-bytecode: with PYTHONDONTWRITEBYTECODE=1 (set on the CI machines) Python never writes a .pyc
# itself, so without it every test process compiled torch, mlflow and dagster again (pytest 1,704 s, not
# 1,090). uv reads no pip.conf: pip's find-links (where a machine keeps wheels, e.g. torch's CPU build)
# are passed on from PIP_FIND_LINKS.
UV_PIN := $(shell grep -o '"uv==[^"]*"' pyproject.toml | tr -d '"')
UV_FIND_LINKS_ARGS := $(foreach links,$(PIP_FIND_LINKS),--find-links $(links))

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q '$(UV_PIN)'
	$(BIN)/uv pip install -q --python $(BIN)/python --compile-bytecode $(UV_FIND_LINKS_ARGS) -e '.[dev]'
	touch $@

# One training at a time: cnn_model is in the Dagster pool gpu-training, whose limit lives in the
# instance's database (set once; the UI's Deployment → Concurrency page shows and changes it).
$(DAGSTER_HOME)/dagster.yaml: deploy/dagster.local.yaml $(VENV)/.installed
	mkdir -p $(DAGSTER_HOME)
	cp $< $@
	$(BIN)/dagster instance concurrency set gpu-training 1 >/dev/null

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
# default sqlite:///$ECOSYSTEM_HOME/mlflow.db, or MLFLOW_TRACKING_URI when set. The links in the
# assets' metadata point here (MLFLOW_UI_URL; set it too when MLFLOW_PORT moves the UI). One worker
# and no job runner (eight huey processes for MLflow's GenAI jobs, unused here): a laptop's UI.
mlflow: setup
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow ui --host 127.0.0.1 --port $(or $(MLFLOW_PORT),5000) --workers 1 \
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
# checkov (its install, then its scan) runs beside the project's install and mypy, each on a core of
# its own; each one's output is printed whole when it ends.
test:
	$(MAKE) --no-print-directory -j2 --output-sync=target lint infra-check
	$(BIN)/python -m pytest -q

# ruff (lint + format) and mypy, configured in pyproject.toml.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

infra-check:
	bash infra/check.sh

# deploy/requirements-{cpu,cuda}.lock, all that the image installs (deploy/README.md, "Image"): pyproject.toml's
# runtime dependencies resolved for the image (CPython 3.11, x86_64, glibc 2.36, wheels only), each file with its
# sha256. cpu: torch's CPU build from PyTorch's CPU wheel index (--torch-backend cpu); where that index is out of
# reach, TORCH_CPU='--find-links DIR' with the same wheel in DIR. cuda: PyPI's torch (the CUDA build).
# Pins already in a lock are kept; LOCK_ARGS=--upgrade (or --upgrade-package NAME) moves them.
TORCH_CPU ?= --torch-backend cpu
LOCK_FLAGS = --quiet --python-version 3.11 --python-platform x86_64-manylinux_2_36 --only-binary :all: \
  --generate-hashes --custom-compile-command 'make lock' $(LOCK_ARGS)
lock: setup
	$(BIN)/uv pip compile pyproject.toml $(LOCK_FLAGS) $(TORCH_CPU) -o deploy/requirements-cpu.lock
	$(BIN)/uv pip compile pyproject.toml $(LOCK_FLAGS) -o deploy/requirements-cuda.lock

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
