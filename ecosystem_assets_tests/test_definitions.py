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
HEAVY = ["torch", "mlflow", "great_expectations", "evidently", "sklearn", "boto3", "botocore", "pandas", "duckdb", "matplotlib", "babel"]


def test_loads_without_heavy_libraries():
    probe = f"import sys, json, ecosystem_assets.definitions; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert json.loads(out.splitlines()[-1]) == []


# The documented asset graph (README): each asset and what it is computed from.
EDGES = {
    "sales_summary_csv": {"raw_sales"},
    "sales_report_email": {"sales_summary_csv"},
    "image_shards": {"image_dataset"},
    "cnn_model": {"image_shards"},
    "cnn_evaluation": {"cnn_model"},
    "fraud_features": {"fraud_transactions"},
    "fraud_model": {"fraud_features"},
    "fraud_monitoring_metrics": {"fraud_model"},
}


def test_interface_keys(ecosystem_env):
    from ecosystem_assets.project import build_definitions

    defs = build_definitions(Settings.from_env())
    graph = defs.resolve_asset_graph()
    for key, parents in EDGES.items():
        node = graph.get(dg.AssetKey(key))
        assert parents <= {p.to_user_string() for p in node.parent_keys}, key
    for key in ("raw_sales", "sales_summary_csv", "sales_report_email"):
        node = graph.get(dg.AssetKey(key))
        assert node.group_name == "sales" and node.partitions_def is not None
    assert defs.resolve_schedule_def("daily_sales_report_schedule")


def test_every_asset_and_check_is_described(ecosystem_env):
    """Every asset says in the UI what it is (its function's docstring, when it has one); every check what it checks."""
    import inspect

    from ecosystem_assets.project import build_definitions

    defs = build_definitions(Settings.from_env())
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        assets_def = graph.get(key).assets_def
        if not assets_def.is_executable:
            continue
        description = assets_def.descriptions_by_key.get(key)
        assert description, f"{key.to_user_string()} has no description"
        docstring = inspect.getdoc(assets_def.op.compute_fn.decorated_fn)
        assert docstring is None or description == inspect.cleandoc(docstring), key.to_user_string()
    for check_key in graph.asset_check_keys:
        spec = graph.get_check_spec(check_key)
        assert spec.description, f"check {check_key.name} on {check_key.asset_key.to_user_string()} has no description"


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
