#!/usr/bin/env bash
# Static security scan of infra/ with checkov (config and skip reasons: infra/.checkov.yaml).
# checkov pins dozens of libraries that would fight the project's pins, so it lives in its own
# venv, .venv-checkov at the repo root, made on first use (~35 s) and reused afterwards.
# Needs no AWS account and no internet besides PyPI: registry modules are not downloaded (config),
# no platform calls.
set -euo pipefail
cd "$(dirname "$0")/.."

CHECKOV_VERSION=3.3.30
VENV=${CHECKOV_VENV:-.venv-checkov}
PYTHON=${PYTHON:-python3}

installed() { "$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("checkov"))' 2>/dev/null || true; }
if [[ "$(installed)" != "$CHECKOV_VERSION" ]]; then
  echo "installing checkov $CHECKOV_VERSION into $VENV" >&2
  test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
  if ! "$VENV/bin/python" -m pip install --disable-pip-version-check "checkov==$CHECKOV_VERSION" >"$VENV/install.log" 2>&1; then
    tail -n 40 "$VENV/install.log" >&2
    exit 1
  fi
fi

# --skip-download: no request to the Prisma Cloud platform for check guidelines.
"$VENV/bin/checkov" -d infra --framework terraform --quiet --compact \
  --config-file infra/.checkov.yaml --skip-download "$@"
# The image's Dockerfile too; its skips are inline (`# checkov:skip=ID: reason`) in deploy/Dockerfile.
exec "$VENV/bin/checkov" -f deploy/Dockerfile --framework dockerfile --quiet --compact --skip-download "$@"
