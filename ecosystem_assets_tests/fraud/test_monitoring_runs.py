"""The monitoring's MLflow runs: the Evidently report logged beside the window's figures, and the
stored reports' retention applied to the runs (artifacts deleted first, then the run)."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta

from mlflow import MlflowClient

from ecosystem_assets import retention
from ecosystem_assets.fraud.assets import drift_report_key
from ecosystem_assets.fraud.monitoring_runs import EXPERIMENT, REPORT_KEY_TAG, log_report, prune_runs
from ecosystem_assets.resources.mlflow import MlflowTracking
from ecosystem_assets.storage import LocalStore

NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)


def test_reports_are_logged_and_runs_past_retention_are_deleted_with_their_reports(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = MlflowTracking(tracking_uri=uri, artifact_location=str(tmp_path / "artifacts")).ensure_experiment(EXPERIMENT)
    client = MlflowClient(uri)
    runs = {}
    for days in (0, 1, 8, 30):  # started this many days before NOW
        started = NOW - timedelta(days=days)
        run = client.create_run(experiment, start_time=int(started.timestamp() * 1000))
        key = f"fraud/monitoring/drift-v1-{started:%Y%m%dT%H%M%SZ}.html"
        log_report(
            client, run.info.run_id, "<html>report</html>", key.rsplit("/", 1)[1], key, {"model_version": "1"}, {"drift_share": 0.25}
        )
        runs[days] = client.get_run(run.info.run_id)
    logged = runs[0]
    assert logged.data.tags[REPORT_KEY_TAG].startswith("fraud/monitoring/drift-v1-") and logged.data.metrics == {"drift_share": 0.25}
    assert [a.path for a in client.list_artifacts(logged.info.run_id)] == [logged.data.tags[REPORT_KEY_TAG].rsplit("/", 1)[1]]

    # The newest two are kept whatever their age; older ones while younger than 7 days.
    assert prune_runs(client, experiment, keep_runs=2, keep_days=7, now=NOW) == [runs[8].info.run_id, runs[30].info.run_id]
    for days, run in runs.items():
        gone = days in (8, 30)
        assert (client.get_run(run.info.run_id).info.lifecycle_stage == "deleted") is gone, days
        assert os.path.isdir(run.info.artifact_uri) is not gone, days  # the report went with its run
    assert prune_runs(client, experiment, keep_runs=2, keep_days=7, now=NOW) == []
    # With keep_runs 0 only age counts: half a day keeps the one started at NOW.
    assert prune_runs(client, experiment, keep_runs=0, keep_days=0.5, now=NOW) == [runs[1].info.run_id]


def test_reports_of_runs_in_the_same_second_do_not_overwrite_each_other(tmp_path):
    """The report's key holds the monitoring run's id before the UTC stamp: two runs stamped the same
    second write two files, and retention still reads each one's age from its stamp."""
    runs = [str(uuid.uuid4()), str(uuid.uuid4())]
    keys = [drift_report_key("3", run, NOW) for run in runs]
    assert keys[0] != keys[1]
    for run, key in zip(runs, keys, strict=True):
        assert key.startswith(f"fraud/monitoring/drift-v3-{run}-") and retention.stamped_at(key) == NOW
    store = LocalStore(tmp_path / "storage")
    for run, key in zip(runs, keys, strict=True):
        store.write_bytes(key, run.encode())
    assert sorted(store.list_keys("fraud/monitoring")) == sorted(keys)
    assert [store.read_bytes(key).decode() for key in keys] == runs
    # Past retention both go; the newest-N rule counts them as two runs.
    later = NOW + timedelta(days=2)
    assert retention.expired(keys, keep_runs=2, keep_days=1, now=later) == []
    assert sorted(retention.prune(store, "fraud/monitoring", keep_runs=0, keep_days=1, now=later)) == sorted(keys)


def test_each_monitoring_run_keeps_its_own_report(fraud_service, registry, ecosystem_env, dagster_instance, monkeypatch):
    """Two monitoring runs of the same window: each materialization's report is its own file (its run id in
    the key), both stay in storage, and each MLflow run names its own."""
    from ecosystem_assets.fraud.assets import reference_key
    from ecosystem_assets.fraud.definitions import MONITORING_JOB
    from ecosystem_assets.fraud.features import FEATURES, HISTORY_DAYS, feature_table
    from ecosystem_assets.fraud.replay import replay_day, send_history
    from ecosystem_assets.project import build_definitions
    from ecosystem_assets.resources.storage import ArtifactStorage
    from ecosystem_assets.settings import Settings
    from ecosystem_assets.storage import write_parquet
    from ecosystem_assets_tests.fraud.helpers import DRIFT, frames

    day = DRIFT - timedelta(days=2)
    send_history(fraud_service.url, frames(day - timedelta(days=HISTORY_DAYS), day - timedelta(days=1)))
    assert replay_day(fraud_service.url, str(day), frames(day, day)).versions == {"1"}
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry)
    monkeypatch.setenv("FRAUD_DB_URL", fraud_service.store.url)
    monkeypatch.setenv("FRAUD_SERVICE_URL", fraud_service.url)
    settings = Settings.from_env()
    store = ArtifactStorage(url=settings.storage_url).store
    table = feature_table(frames(DRIFT - timedelta(days=14 + HISTORY_DAYS), DRIFT - timedelta(days=1)))
    write_parquet(store, reference_key("1"), table[table["timestamp"] >= str(DRIFT - timedelta(days=14))][FEATURES])
    job = build_definitions(settings).resolve_job_def(MONITORING_JOB)
    end = datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC).isoformat()
    config = {"ops": {"fraud_monitoring_metrics": {"config": {"end": end, "min_drift_rows": 100}}}}

    client, keys = MlflowClient(registry), []
    for _ in range(2):
        result = job.execute_in_process(instance=dagster_instance, run_config=config)
        [materialization] = result.get_asset_materialization_events()
        metadata = materialization.materialization.metadata
        key = metadata["evidently_report"].value.rsplit("/storage/", 1)[1]
        assert key.startswith(f"fraud/monitoring/drift-v1-{result.run_id}-") and retention.stamped_at(key) is not None
        run = client.get_run(metadata["mlflow_run"].value.rsplit("/runs/", 1)[1])
        assert run.data.tags[REPORT_KEY_TAG] == key
        keys.append(key)
    assert keys[0] != keys[1] and sorted(store.list_keys("fraud/monitoring")) == sorted(keys)
