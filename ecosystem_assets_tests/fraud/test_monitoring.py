"""The monitoring window ends at the evaluation time: a replayed past day is judged on that day
alone while today's requests and a far-future row sit in the store, and a window holding only a
handful of rows judges nothing (a warning, neither pass nor fail). The fall of precision on such a
replay and the retrain it triggers are in test_closed_loop.py."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import dagster as dg
import requests
from mlflow import MlflowClient

from ecosystem_assets.fraud.assets import reference_key
from ecosystem_assets.fraud.checks import DRIFT_CHECK, JUDGED, PRECISION_CHECK, WINDOW_END
from ecosystem_assets.fraud.definitions import MONITORING_JOB
from ecosystem_assets.fraud.features import FEATURES, HISTORY_DAYS, feature_table
from ecosystem_assets.fraud.replay import replay_day, send_history
from ecosystem_assets.project import build_definitions
from ecosystem_assets.resources.storage import ArtifactStorage
from ecosystem_assets.retention import stamp
from ecosystem_assets.serving.store import FEATURE_COLUMNS
from ecosystem_assets.settings import Settings
from ecosystem_assets.storage import write_parquet
from ecosystem_assets_tests.fraud.helpers import DRIFT, frames

DAY = DRIFT - timedelta(days=2)  # a replayed past day the champion (trained up to DRIFT - 1) handles well
DAY_END = datetime.combine(DAY + timedelta(days=1), datetime.min.time(), UTC)
FAR_FUTURE = datetime(2099, 1, 1, tzinfo=UTC)


def checks(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def stray_rows(service) -> None:
    """Three of today's transactions through the service, one far-future row straight into its store
    (the service's input rules refuse such a time at /predict)."""
    now = datetime.now(UTC)
    for i in range(3):
        tx = {
            "transaction_id": f"today-{i}",
            "customer_id": "C1",
            "terminal_id": "T1",
            "amount": 20.0 + i,
            "timestamp": (now - timedelta(minutes=i)).isoformat(),
        }
        answer = requests.post(f"{service.url}/predict", json={"transaction": tx}, timeout=30).json()
        requests.post(
            f"{service.url}/feedback", json={"prediction_id": answer["prediction_id"], "is_fraud": False}, timeout=30
        ).raise_for_status()
    service.store.write_batch(
        [
            {
                "prediction_id": "f" * 32,
                "transaction_id": "far-future",
                "customer_id": "C2",
                "terminal_id": "T2",
                "amount": 10.0,
                "tx_time": FAR_FUTURE.timestamp(),
                "tx_offset_min": 0,
                **{c: 0.0 for c in FEATURE_COLUMNS},
                "fraud_probability": 0.99,
                "is_fraud": True,
                "model_version": "1",
                "created_at": time.time(),
            }
        ],
        [("f" * 32, False)],
    )


def test_a_replayed_day_is_judged_alone_and_a_handful_judges_nothing(fraud_service, registry, ecosystem_env, dagster_instance, monkeypatch):
    send_history(fraud_service.url, frames(DAY - timedelta(days=HISTORY_DAYS), DAY - timedelta(days=1)))
    replayed = frames(DAY, DAY)
    assert replay_day(fraud_service.url, str(DAY), replayed).versions == {"1"}
    stray_rows(fraud_service)

    # The service's own endpoint: the window before `end` (ISO or epoch), default now.
    def monitoring(**params) -> requests.Response:
        return requests.get(f"{fraud_service.url}/monitoring", params=params, timeout=30)

    assert monitoring(window_hours=24, end=DAY_END.isoformat()).json()["labelled"] == len(replayed)
    assert monitoring(window_hours=24, end=str(DAY_END.timestamp())).json()["labelled"] == len(replayed)
    assert monitoring(window_hours=24).json()["labelled"] == 3  # today's
    # An evaluation time far from the clock is refused (the far-future row can never become a window).
    for far in ((FAR_FUTURE + timedelta(hours=1)).isoformat(), "1e300", "9999-12-31T23:59:59+14:00", "1999-12-31T00:00:00+00:00"):
        refused = monitoring(window_hours=24, end=far)
        assert refused.status_code == 422 and "not a time between" in refused.text, far
    naive = monitoring(window_hours=24, end="2026-09-01T00:00:00")
    assert naive.status_code == 422 and "no UTC offset" in naive.text

    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry)
    monkeypatch.setenv("FRAUD_DB_URL", fraud_service.store.url)
    monkeypatch.setenv("FRAUD_SERVICE_URL", fraud_service.url)
    monkeypatch.setenv("ARTIFACT_RETENTION_RUNS", "2")
    monkeypatch.setenv("ARTIFACT_RETENTION_DAYS", "7")
    settings = Settings.from_env()
    # The champion's training reference, where fraud_model would have written it.
    table = feature_table(frames(DRIFT - timedelta(days=14 + HISTORY_DAYS), DRIFT - timedelta(days=1)))
    reference = table[table["timestamp"] >= str(DRIFT - timedelta(days=14))][FEATURES].sample(5_000, random_state=0)
    store = ArtifactStorage(url=settings.storage_url).store
    write_parquet(store, reference_key("1"), reference)
    # Reports of earlier runs: a day old (kept: among the newest two), 8 and 30 days old (deleted).
    earlier = [f"fraud/monitoring/drift-v1-{stamp(datetime.now(UTC) - timedelta(days=d))}.html" for d in (1, 8, 30)]
    for key in earlier:
        store.write_bytes(key, b"<html/>")
    job = build_definitions(settings).resolve_job_def(MONITORING_JOB)

    # The replay's evaluation of DAY: judged on DAY's rows only.
    result = job.execute_in_process(
        instance=dagster_instance, run_config={"ops": {"fraud_monitoring_metrics": {"config": {"end": DAY_END.isoformat()}}}}
    )
    [materialization] = result.get_asset_materialization_events()
    metadata = materialization.materialization.metadata
    report = metadata["evidently_report"].value
    assert metadata["reports_deleted"].value == 2
    report_key = report.rsplit("/storage/", 1)[1]
    assert sorted(store.list_keys("fraud/monitoring")) == sorted([earlier[0], report_key])
    # The same report in an MLflow run of `fraud-monitoring` (the links' target; test_closed_loop follows them).
    client = MlflowClient(registry)
    run = client.get_run(metadata["mlflow_run"].value.rsplit("/runs/", 1)[1])
    assert run.data.tags["report_key"] == report_key and run.data.params["window_end"] == DAY_END.isoformat()
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == [report_key.rsplit("/", 1)[1]]
    assert metadata["evidently_report_url"].value.startswith(f"http://127.0.0.1:5000/#/experiments/{run.info.experiment_id}/runs/")
    assert metadata["mlflow_runs_deleted"].value == 0
    day = checks(result)
    precision, drift = day[PRECISION_CHECK], day[DRIFT_CHECK]
    assert precision.metadata[JUDGED].value is True and precision.passed, precision.description
    assert precision.metadata["labelled"].value == len(replayed) and precision.metadata[WINDOW_END].value == DAY_END.isoformat()
    assert drift.metadata[JUDGED].value is True and drift.metadata["live_rows"].value == len(replayed), drift.description

    # The schedule's tick, now: three labelled predictions and three rows judge nothing.
    scheduled = checks(
        job.execute_in_process(instance=dagster_instance, tags={".dagster/scheduled_execution_time": datetime.now(UTC).isoformat()})
    )
    assert scheduled["freshness_check"].passed  # monitoring just ran (its freshness check runs in the job too)
    for name in (PRECISION_CHECK, DRIFT_CHECK):
        evaluation = scheduled[name]
        assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN, name
        assert evaluation.metadata[JUDGED].value is False and evaluation.metadata["window_end_from"].value == "schedule tick"
    assert scheduled[PRECISION_CHECK].description == "not judged: only 3 labelled predictions of v1 in the window (< 200)"
    assert scheduled[DRIFT_CHECK].description == "not judged: only 3 live rows of v1 in the window (< 500)"
