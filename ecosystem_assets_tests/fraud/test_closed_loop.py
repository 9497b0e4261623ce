"""The closed loop on a real Dagster instance with the live service: precision falls → the check
fails → a real sensor evaluation requests exactly one retrain → the champion changes → the service
swaps it in → the check passes; the cooldown and an in-flight retrain stop further requests. Today's
requests and a far-future row in the store, as during `make replay` of past days, change nothing:
the window ends at the evaluation time, and an evaluation of today's handful judges nothing."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
from mlflow import MlflowClient

from ecosystem_assets.fraud.checks import JUDGED
from ecosystem_assets.fraud.definitions import MONITORING_JOB, RETRAIN_JOB
from ecosystem_assets.fraud.features import HISTORY_DAYS
from ecosystem_assets.fraud.replay import replay_day, send_history
from ecosystem_assets.project import build_definitions
from ecosystem_assets.resources.fraud import TransactionSource
from ecosystem_assets.serving.app import create_app
from ecosystem_assets.serving.store import FEATURE_COLUMNS, PredictionStore
from ecosystem_assets.settings import Settings
from ecosystem_assets_tests.fraud.helpers import DRIFT, FAILING_DAY, first_champion
from ecosystem_assets_tests.servers.mlflow import UI_ROUTES, served_ui_routes, what_a_link_shows
from ecosystem_assets_tests.servers.uvicorn_thread import UvicornThread
from ecosystem_assets_tests.waiting import wait_until

SOURCE = TransactionSource(drift_from=DRIFT.isoformat())  # the default population, drifting at DRIFT


def definitions() -> dg.Definitions:
    return build_definitions(Settings.from_env(), {"transactions": SOURCE})


def checks(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def materialized(result, asset: str) -> dict:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(asset)]
    return {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}


def monitor(defs, instance, last_day):
    """The monitoring job judging ``last_day``, as `ecosystem-assets replay` runs it: the window ends at the day's end."""
    end = datetime.combine(last_day + timedelta(days=1), datetime.min.time(), UTC).isoformat()
    return defs.resolve_job_def(MONITORING_JOB).execute_in_process(
        instance=instance, run_config={"ops": {"fraud_monitoring_metrics": {"config": {"end": end}}}}
    )


def stray_traffic(db_url: str) -> None:
    """Three of today's predictions and a far-future one, labelled, straight into the store: what
    today's /predict calls during `make replay` leave there (the service itself would now refuse
    this replay's past days after a request 89 days later, and a far-future time at all)."""
    now = time.time()
    rows = [
        {
            "prediction_id": f"{i:032x}",
            "transaction_id": f"stray-{i}",
            "customer_id": "C00001",
            "terminal_id": "T00001",
            "amount": 10.0,
            "tx_time": t,
            "tx_offset_min": 0,
            **{c: 0.0 for c in FEATURE_COLUMNS},
            "fraud_probability": 0.99,
            "is_fraud": True,
            "model_version": "1",
            "created_at": now,
        }
        for i, t in enumerate([now - 60, now - 120, now - 180, datetime(2099, 1, 1, tzinfo=UTC).timestamp()])
    ]
    PredictionStore(db_url).write_batch(rows, [(r["prediction_id"], False) for r in rows])


def tick(defs, instance, cursor=None):
    sensor = defs.resolve_sensor_def("fraud_retrain_sensor")
    return sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs, cursor=cursor))


@pytest.fixture
def loop_env(ecosystem_env, dagster_instance):
    defs = definitions()
    first = first_champion(defs, dagster_instance)
    assert materialized(first, "fraud_model")["champion_after"] == "1"
    return defs


def test_precision_drop_triggers_one_retrain_and_recovers(loop_env, dagster_instance, monkeypatch, mlflow_ui):
    settings = Settings.from_env()
    # A real MLflow server over the loop's store: the links in the metadata are followed on it.
    ui = mlflow_ui(settings.mlflow_tracking_uri, settings.mlflow_artifact_location)
    monkeypatch.setenv("MLFLOW_UI_URL", ui)
    app = create_app(settings.fraud_db_url, settings.mlflow_tracking_uri, poll_s=0.2)
    with UvicornThread(app) as service:
        monkeypatch.setenv("FRAUD_SERVICE_URL", service.url)  # monitoring asks the live service
        defs = definitions()
        send_history(service.url, pd_days(FAILING_DAY - timedelta(days=HISTORY_DAYS), FAILING_DAY - timedelta(days=1)))
        assert replay_day(service.url, str(FAILING_DAY), SOURCE.days(FAILING_DAY, FAILING_DAY)[FAILING_DAY]).versions == {"1"}
        stray_traffic(settings.fraud_db_url)

        # The hourly schedule's tick is now: today's three labelled predictions judge nothing.
        tick_time = datetime.now(UTC).isoformat()
        scheduled = defs.resolve_job_def(MONITORING_JOB).execute_in_process(
            instance=dagster_instance, tags={".dagster/scheduled_execution_time": tick_time}
        )
        for name in ("live_precision_above_threshold", "feature_drift"):  # (its freshness check passes: it just ran)
            evaluation = checks(scheduled)[name]
            assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN, name
            assert evaluation.metadata[JUDGED].value is False and "not judged" in evaluation.description, name
        assert "only 3 labelled predictions" in checks(scheduled)["live_precision_above_threshold"].description
        assert "only 3 live rows" in checks(scheduled)["feature_drift"].description
        idle = tick(defs, dagster_instance)
        assert not idle.run_requests and "judged nothing never retrains" in idle.skip_message

        before = monitor(defs, dagster_instance, FAILING_DAY)
        assert before.success  # a failed monitoring check does not fail the run …
        precision = checks(before)["live_precision_above_threshold"]
        assert not precision.passed and precision.metadata["precision"].value < 0.8, precision.description
        assert precision.metadata[JUDGED].value is True and precision.severity == dg.AssetCheckSeverity.ERROR
        day_rows = len(SOURCE.days(FAILING_DAY, FAILING_DAY)[FAILING_DAY])
        assert precision.metadata["labelled"].value == day_rows  # the day, without today's rows or the far-future one
        assert checks(before)["feature_drift"].metadata[JUDGED].value is True
        monitored = materialized(before, "fraud_monitoring_metrics")
        assert monitored["evidently_report"].endswith(".html")
        # The report opens from the UI's run page (rendered there) and downloads from the server's raw route.
        report = what_a_link_shows(monitored["evidently_report_url"], ui)
        assert report.headers["content-type"].startswith("text/html") and "Data Drift Summary" in report.text  # Evidently's preset
        download = what_a_link_shows(monitored["evidently_report_download"], ui)
        assert download.content == report.content and download.content == Path(monitored["evidently_report"]).read_bytes()
        what_a_link_shows(monitored["mlflow_run"], ui)
        assert checks(before)["feature_drift"].metadata["evidently_report_url"].value == monitored["evidently_report_url"]

        # … so the sensor reads check evaluations. One failed evaluation → exactly one request.
        first = tick(defs, dagster_instance)
        [request] = first.run_requests
        assert defs.resolve_sensor_def("fraud_retrain_sensor").job_name == RETRAIN_JOB
        assert request.run_key.startswith("fraud-retrain-after-evaluation-")
        assert request.run_config["ops"]["fraud_features"]["config"]["end_date"] == str(FAILING_DAY)
        again = tick(defs, dagster_instance, cursor=first.cursor)
        assert not again.run_requests and "already handled" in again.skip_message

        retrain = defs.resolve_job_def(RETRAIN_JOB).execute_in_process(
            instance=dagster_instance, run_config=request.run_config, tags=request.tags
        )
        model = materialized(retrain, "fraud_model")
        assert model["promoted"] is True and model["champion_after"] == "2", model["reason"]
        assert what_a_link_shows(model["mlflow_run"], ui).json()["run"]["info"]["run_id"] == model["mlflow_run_id"]
        assert what_a_link_shows(model["mlflow_model_version"], ui).json()["model_version"]["version"] == "2"
        assert served_ui_routes(ui) == set(UI_ROUTES)  # the pages these links open exist in the served UI
        assert str(MlflowClient(settings.mlflow_tracking_uri).get_model_version_by_alias("fraud-detector", "champion").version) == "2"

        # The service picks the new champion up by itself.
        wait_until(lambda: app.state.watcher.current.version, 30, "the service swaps v2 in", done=lambda v: v == "2")
        next_day = FAILING_DAY + timedelta(days=1)
        assert replay_day(service.url, str(next_day), SOURCE.days(next_day, next_day)[next_day]).versions == {"2"}
        after = monitor(defs, dagster_instance, next_day)
        recovered = checks(after)["live_precision_above_threshold"]
        assert recovered.passed and recovered.metadata["precision"].value >= 0.8, recovered.description
        assert recovered.metadata["model_version"].value == "2"

        # A new failure right after: the cooldown stops a second retrain, and says so.
        monkeypatch.setenv("FRAUD_PRECISION_THRESHOLD", "0.999")
        strict = definitions()
        assert not checks(monitor(strict, dagster_instance, next_day))["live_precision_above_threshold"].passed
        cooled = tick(strict, dagster_instance, cursor=first.cursor)
        assert not cooled.run_requests and "cooldown is 6 h" in cooled.skip_message

        # With no cooldown, a retrain already queued still stops a second one.
        monkeypatch.setenv("FRAUD_RETRAIN_COOLDOWN_HOURS", "0")
        eager = definitions()
        queued = dagster_instance.create_run_for_job(eager.resolve_job_def(RETRAIN_JOB), run_config=request.run_config)
        busy = tick(eager, dagster_instance, cursor=first.cursor)
        assert not busy.run_requests and f"already in progress (run {queued.run_id})" in busy.skip_message
        dagster_instance.delete_run(queued.run_id)
        assert len(tick(eager, dagster_instance, cursor=first.cursor).run_requests) == 1


def pd_days(first, last):
    import pandas as pd

    return pd.concat(SOURCE.days(first, last).values(), ignore_index=True)
