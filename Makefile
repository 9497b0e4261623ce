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

.PHONY: setup demo dev test bench clean

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

dev: setup
	$(BIN)/dagster dev -m ecosystem_assets.definitions

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python bench/load_time.py
	$(BIN)/python bench/sales_summary.py

clean:
	rm -rf $(ECOSYSTEM_HOME)
