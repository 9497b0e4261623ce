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


def test_the_dataset_checks_are_described_by_their_docstrings(ecosystem_env):
    """Each check written as a function here says in its docstring what the UI shows as its description."""
    import inspect

    from ecosystem_assets.project import build_definitions

    defs = build_definitions(Settings.from_env())
    ours = [
        checks_def
        for checks_def in defs.asset_checks or []
        if getattr(getattr(checks_def.op.compute_fn, "decorated_fn", None), "__module__", "").startswith("ecosystem_assets.")
    ]
    assert {spec.name for checks_def in ours for spec in checks_def.check_specs} >= {
        "image_files_decode",
        "classes_in_every_split",
        "no_train_test_leakage",
    }
    for checks_def in ours:
        docstring = inspect.getdoc(checks_def.op.compute_fn.decorated_fn)
        [spec] = checks_def.check_specs
        assert docstring, f"check {spec.name} has no docstring"
        assert spec.description == inspect.cleandoc(docstring), spec.name


def _role_with_password(admin_url: str, database_url: str, password: str) -> tuple[str, str]:
    """A login role with ``password`` that may create tables in ``database_url``'s database: (role, its URL)."""
    import uuid

    import sqlalchemy as sa

    role = f"fraud_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'"))
    admin.dispose()
    owner = sa.create_engine(database_url, isolation_level="AUTOCOMMIT")
    with owner.connect() as conn:
        conn.execute(sa.text(f"GRANT ALL ON SCHEMA public TO {role}"))
    owner.dispose()
    url = sa.engine.make_url(database_url).set(username=role, password=password)
    return role, url.render_as_string(hide_password=False)


def _drop_role(admin_url: str, database_url: str, role: str) -> None:
    import sqlalchemy as sa

    for url, statement in ((database_url, f"DROP OWNED BY {role}"), (admin_url, f"DROP ROLE IF EXISTS {role}")):
        engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text(statement))
        engine.dispose()


def test_the_fraud_db_password_is_in_no_snapshot_and_the_store_still_connects(
    ecosystem_env, dagster_instance, monkeypatch, postgres_server_url, postgres_url
):
    """FRAUD_DB_URL holds the database password in production: the code location's snapshot (what the
    UI's Resources page and every run's job snapshot show) names the variable only; a monitoring run
    still reads the prediction log through it, and its logs hold no password either."""
    import secrets

    from dagster._core.remote_representation.external_data import RepositorySnap, ResourceConfigEnvVarSnap
    from dagster._serdes import serialize_value

    from ecosystem_assets.fraud.definitions import MONITORING_JOB
    from ecosystem_assets.project import build_definitions
    from ecosystem_assets.serving.store import PredictionStore
    from ecosystem_assets_tests.fraud.test_prediction_log import observations, row

    password = f"pw{secrets.token_hex(12)}"
    role, db_url = _role_with_password(postgres_server_url, postgres_url, password)
    try:
        monkeypatch.setenv("FRAUD_DB_URL", db_url + "\n")  # as mounted from a file: stripped where it is used
        settings = Settings.from_env()
        assert settings.fraud_db_url_set and password not in repr(settings) + str(settings.model_dump())
        defs = build_definitions(settings)

        repository = RepositorySnap.from_def(defs.get_repository_def())
        snapshot = serialize_value(repository)
        assert password not in snapshot and "FRAUD_DB_URL" in snapshot
        # The UI's Resources page: the variable's name where the value would be.
        [fraud_service] = [r for r in repository.resources if r.name == "fraud_service"]
        assert fraud_service.configured_values["db_url"] == ResourceConfigEnvVarSnap(name="FRAUD_DB_URL")

        # The monitoring run observes the prediction log on Postgres as the role with the password.
        writer = PredictionStore(db_url)
        writer.write_batch([row(i, 1_800_000_000.0 + i) for i in range(3)], [(f"{0:032x}", True)])
        writer.engine.dispose()
        result = defs.resolve_job_def(MONITORING_JOB).execute_in_process(instance=dagster_instance)
        assert result.success
        [observed] = observations(dagster_instance)
        assert observed.asset_observation.metadata["rows"].value == 3
        run = dagster_instance.get_run_by_id(result.run_id)
        assert run is not None and password not in serialize_value(run)
        assert password not in serialize_value(dagster_instance.get_job_snapshot(run.job_snapshot_id))
        logged = dagster_instance.all_logs(result.run_id)
        assert logged and not [entry for entry in logged if password in serialize_value(entry)]
    finally:
        _drop_role(postgres_server_url, postgres_url, role)
