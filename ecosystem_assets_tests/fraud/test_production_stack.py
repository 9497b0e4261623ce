"""The closed loop on the production stack, every part a real server on loopback (issue 14):

- Postgres (servers/postgres.py) holding three databases: Dagster's instance (dagster-postgres), the
  MLflow tracking server's store (schema made by `mlflow db upgrade`, the explicit step deploy/ runs
  before the server) and the fraud service's prediction log;
- S3 (moto) holding the project's storage and, through the MLflow server (--serve-artifacts), the
  model artifacts;
- an `mlflow server` process, reached over HTTP by the runs and the service;
- the fraud service as `ecosystem-assets serve` in its own process, with both tokens, reached over
  HTTP (FRAUD_SERVICE_URL) by the monitoring;
- `dagster-daemon run` over workspace.yaml with the laptop's run queue (deploy/dagster.local.yaml)
  and storage on Postgres: the schedule's and sensor's loop, the queue, and runs launched in their
  own processes, as in the Helm chart's daemon.

The setup (transaction days, the first champion) runs in this process against the same instance;
the loop itself is the daemon's: a monitoring run submitted to the queue judges the failing day,
the retrain sensor sees the failed check and requests a retrain, the queue launches it, it promotes
v2 in the MLflow server's registry, and the service, polling that registry, swaps v2 in.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from ecosystem_assets_tests.fraud.helpers import DRIFT, FAILING_DAY, first_champion, serve_process
from ecosystem_assets_tests.servers.mlflow import mlflow_server
from ecosystem_assets_tests.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@contextmanager
def process(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """A server process in its own group (its children go down with it), its output in ``log``."""
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        for sig, wait_s in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=wait_s)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue


def database(admin_url: str, name: str) -> str:
    """A new database on the session's server (dropped with the server); its URL."""
    import sqlalchemy as sa

    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return sa.engine.make_url(admin_url).set(database=name).render_as_string(hide_password=False)


@pytest.fixture
def stack(tmp_path: Path, postgres_server_url: str, s3_endpoint: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    """Postgres, S3, the MLflow server and the fraud service up; the project's variables set here
    (for the setup in this process) and returned (for the daemon and its runs)."""
    from ecosystem_assets.settings import Settings

    tag = uuid.uuid4().hex[:8]
    dagster_db, mlflow_db, fraud_db = (database(postgres_server_url, f"{kind}_{tag}") for kind in ("dagster", "mlflow", "fraud"))
    home = tmp_path / "home"
    (home / "dagster").mkdir(parents=True)
    instance_yaml = yaml.safe_load((REPO / "deploy" / "dagster.local.yaml").read_text())  # the laptop's run queue …
    instance_yaml["storage"] = {"postgres": {"postgres_url": dagster_db}}  # … on Postgres, through psycopg2 (deploy/ names it too)
    (home / "dagster" / "dagster.yaml").write_text(yaml.safe_dump(instance_yaml))

    # The schema first, as deploy/k8s/mlflow.yaml's init container does: the server only creates a fresh one.
    upgrade = subprocess.run([str(BIN / "mlflow"), "db", "upgrade", mlflow_db], capture_output=True, text=True, timeout=300)
    assert upgrade.returncode == 0, upgrade.stderr[-3000:]

    tokens = {"FRAUD_PREDICT_TOKEN": secrets.token_urlsafe(24), "FRAUD_FEEDBACK_TOKEN": secrets.token_urlsafe(24)}
    for field in Settings.model_fields.values():  # nothing from the developer's shell
        monkeypatch.delenv(str(field.validation_alias), raising=False)
    env = {
        "ECOSYSTEM_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster"),
        "ECOSYSTEM_STORAGE_URL": f"s3://{s3_bucket}/ecosystem",
        "FRAUD_DB_URL": fraud_db,
        "FRAUD_DRIFT_FROM": DRIFT.isoformat(),
        **tokens,
    }
    with mlflow_server(mlflow_db, f"s3://{s3_bucket}/mlflow-artifacts", tmp_path / "mlflow", proxy_artifacts=True) as tracking:
        env.update(MLFLOW_TRACKING_URI=tracking, MLFLOW_UI_URL=tracking)
        # The service with the deployment's variables; /metrics answers without a champion (v1 comes later).
        with serve_process(env, home, ready="/metrics") as (url, _, _):
            env["FRAUD_SERVICE_URL"] = url
            for key, value in env.items():
                monkeypatch.setenv(key, value)
            yield {"env": env, "tmp": tmp_path}


def champion_served(url: str) -> str | None:
    import requests

    return requests.get(f"{url}/healthz", timeout=5).json().get("model_version")


@pytest.mark.timeout(1200)
def test_the_daemon_closes_the_loop_on_postgres_mlflow_server_s3_and_the_service_over_http(stack: dict) -> None:
    import dagster as dg
    import pandas as pd
    from mlflow import MlflowClient

    from ecosystem_assets.fraud.definitions import MONITORING_JOB, RETRAIN_JOB
    from ecosystem_assets.fraud.features import HISTORY_DAYS
    from ecosystem_assets.fraud.replay import replay_day, send_history
    from ecosystem_assets.project import build_definitions
    from ecosystem_assets.resources.fraud import TransactionSource
    from ecosystem_assets.settings import Settings

    env, tmp = stack["env"], stack["tmp"]
    source = TransactionSource(drift_from=DRIFT.isoformat())
    defs = build_definitions(Settings.from_env(), {"transactions": source})
    with dg.DagsterInstance.get() as instance:  # DAGSTER_HOME's: Postgres
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        first = first_champion(defs, instance)
        assert first.success

        service = env["FRAUD_SERVICE_URL"]
        wait_until(lambda: champion_served(service), 60, "the service loads champion v1 from the MLflow server", done=lambda v: v == "1")
        history = pd.concat(source.days(FAILING_DAY - timedelta(days=HISTORY_DAYS), FAILING_DAY - timedelta(days=1)).values())
        send_history(service, history, feedback_token=env["FRAUD_FEEDBACK_TOKEN"])
        day = source.days(FAILING_DAY, FAILING_DAY)[FAILING_DAY]
        report = replay_day(
            service, str(FAILING_DAY), day, predict_token=env["FRAUD_PREDICT_TOKEN"], feedback_token=env["FRAUD_FEEDBACK_TOKEN"]
        )
        assert report.versions == {"1"}

        daemon_env = {**os.environ, **env}
        with process([str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"], daemon_env, tmp / "daemon.log") as daemon:
            # The failing day's monitoring, submitted to the queue as the schedule's tick would be.
            end = datetime.combine(FAILING_DAY + timedelta(days=1), datetime.min.time(), UTC).isoformat()
            config = {"ops": {"fraud_monitoring_metrics": {"config": {"end": end}}}}
            launch = subprocess.run(
                [str(BIN / "dagster"), "job", "launch", "-w", "workspace.yaml", "-j", MONITORING_JOB, "--config-json", json.dumps(config)],
                cwd=REPO,
                env=daemon_env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert launch.returncode == 0, launch.stderr[-3000:]

            def runs_of(job: str) -> list:
                assert daemon.poll() is None, (tmp / "daemon.log").read_text()[-3000:]
                return list(instance.get_runs(dg.RunsFilter(job_name=job)))

            def finished(job: str) -> list:
                return [r for r in runs_of(job) if r.is_finished]

            [monitoring] = wait_until(lambda: finished(MONITORING_JOB), 300, "the queued monitoring run finishes")
            assert monitoring.is_success, f"monitoring run {monitoring.run_id} {monitoring.status}"
            record = instance.get_latest_asset_check_evaluation_record(
                dg.AssetCheckKey(dg.AssetKey("fraud_monitoring_metrics"), "live_precision_above_threshold")
            )
            assert record is not None and record.run_id == monitoring.run_id and record.evaluation is not None
            precision = record.evaluation
            assert not precision.passed and precision.metadata["judged"].value is True, precision.description

            # The daemon's sensor requests the retrain; the queue launches it; it promotes v2.
            retrains = wait_until(
                lambda: [r for r in finished(RETRAIN_JOB) if r.tags.get("dagster/sensor_name")], 600, "the sensor's retrain run finishes"
            )
            [retrain] = retrains
            assert retrain.is_success, f"retrain run {retrain.run_id} {retrain.status}: {(tmp / 'daemon.log').read_text()[-2000:]}"
            assert retrain.tags["dagster/sensor_name"] == "fraud_retrain_sensor"
            registry = MlflowClient(env["MLFLOW_TRACKING_URI"])
            champion = registry.get_model_version_by_alias("fraud-detector", "champion")
            assert champion.version == "2"
            assert registry.get_model_version_download_uri("fraud-detector", "2").startswith(
                "mlflow-artifacts:/"
            )  # through the server to S3

            # The service, polling the server's registry, swaps v2 in and scores with it.
            wait_until(lambda: champion_served(service), 60, "the service swaps champion v2 in", done=lambda v: v == "2")
            next_day = FAILING_DAY + timedelta(days=1)
            frame = source.days(next_day, next_day)[next_day].head(50)
            scored = replay_day(
                service, str(next_day), frame, predict_token=env["FRAUD_PREDICT_TOKEN"], feedback_token=env["FRAUD_FEEDBACK_TOKEN"]
            )
            assert scored.versions == {"2"}
