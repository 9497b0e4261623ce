"""The code location: loads on the embedded defaults, exposes the documented interface, loads light."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from ecosystem_assets.settings import Settings, SettingsError

REPO = Path(__file__).resolve().parents[1]
HEAVY = ["torch", "mlflow", "great_expectations", "evidently", "sklearn", "boto3", "botocore", "pandas", "duckdb"]


def test_loads_without_heavy_libraries():
    probe = f"import sys, json, ecosystem_assets.definitions; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert json.loads(out.splitlines()[-1]) == []


def test_interface_keys(ecosystem_env):
    from ecosystem_assets.project import build_definitions

    defs = build_definitions(Settings.from_env())
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {"raw_sales", "sales_summary_csv", "sales_report_email"} <= keys
    for key in ("raw_sales", "sales_summary_csv", "sales_report_email"):
        node = graph.get(dg.AssetKey(key))
        assert node.group_name == "sales" and node.partitions_def is not None
        assert len(defs.resolve_assets_def(key).descriptions_by_key[dg.AssetKey(key)]) > 40  # says what it is for
    assert defs.resolve_schedule_def("daily_sales_report_schedule")


def test_embedded_defaults(ecosystem_env):
    settings = Settings.from_env()
    home = Path(ecosystem_env["ECOSYSTEM_HOME"]).resolve()
    assert settings.storage_url == str(home / "storage")
    assert settings.outbox_dir == home / "outbox"
    assert settings.mlflow_tracking_uri == f"sqlite:///{home / 'mlflow.db'}"
    assert settings.sales_api_url is None and settings.smtp_host is None
    assert settings.report_recipients == ("sales-team@localhost",) and settings.report_timezone == "UTC"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("REPORT_TIMEZONE", "Mars/Olympus", "REPORT_TIMEZONE='Mars/Olympus' is not an IANA time zone"),
        ("SMTP_SECURITY", "tls", "SMTP_SECURITY='tls' must be one of none, starttls, ssl"),
        ("SMTP_PORT", "25x", "SMTP_PORT='25x' is not a port number"),
        ("REPORT_RECIPIENTS", " , ", "REPORT_RECIPIENTS names no address"),
    ],
)
def test_bad_settings_name_the_variable(ecosystem_env, monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as err:
        Settings.from_env()
    assert str(err.value) == message
