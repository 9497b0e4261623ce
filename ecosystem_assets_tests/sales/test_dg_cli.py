"""One code location name everywhere (issue 13): `dg` beside `dagster`, `make dev` from workspace.yaml."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LOCATION = "ecosystem_assets"


def test_dg_lists_the_projects_assets_under_the_location_name(tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "ECOSYSTEM_HOME": str(tmp_path), "VIRTUAL_ENV": str(BIN.parent)}
    proc = subprocess.run([str(BIN / "dg"), "list", "defs", "--json"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    keys = {asset["asset_key"] for asset in json.loads(proc.stdout)["assets"]}
    assert {"raw_sales", "sales_summary_csv", "sales_report_email", "cnn_model", "fraud_model"} <= keys
    # dg names the location as workspace.yaml and [tool.dagster] do.
    from dagster_dg_core.context import DgContext

    assert DgContext.for_project_environment(REPO, {}).code_location_name == LOCATION
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert pyproject["tool"]["dagster"]["code_location_name"] == LOCATION
    [entry] = yaml.safe_load((REPO / "workspace.yaml").read_text())["load_from"]
    assert entry["python_module"]["location_name"] == LOCATION


def test_make_dev_starts_dagster_from_workspace_yaml():
    makefile = (REPO / "Makefile").read_text()
    dev = re.search(r"^dev:.*?(?=^\S|\Z)", makefile, re.M | re.S)
    assert dev is not None
    assert "-w workspace.yaml" in dev.group(0) and " -m " not in dev.group(0)
    pins = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    dagster = next(p for p in pins if p.startswith("dagster=="))
    assert f"dagster-dg-cli=={dagster.split('==')[1]}" in pins  # dg released with the pinned dagster
