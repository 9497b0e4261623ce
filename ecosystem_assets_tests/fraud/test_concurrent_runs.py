"""Two retrains at once on one Dagster instance and one storage, with different training windows:
each run's quality check and model judge the fraud_features table that run built, never the other
run's (which is the newer one for one of them), and a later run with no features of its own reads
the latest. Files live under run-keyed paths, so neither run overwrites the other's."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pytest
from mlflow import MlflowClient

from ecosystem_assets.fraud.checks import FEATURES_CHECK
from ecosystem_assets.fraud.definitions import RETRAIN_JOB
from ecosystem_assets.project import build_definitions
from ecosystem_assets.settings import Settings
from ecosystem_assets_tests.fraud.helpers import DRIFT, source
from ecosystem_assets_tests.waiting import wait_until

FEATURES = dg.AssetKey("fraud_features")
CONFIGS = {  # different windows: different tables, told apart by their rows and days
    "a": {"end_date": str(DRIFT - timedelta(days=1)), "training_days": 14},
    "b": {"end_date": str(DRIFT - timedelta(days=3)), "training_days": 12},
}


def metadata(event) -> dict:
    return {k: getattr(v, "value", v) for k, v in event.metadata.items()}


def materialized(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(asset)]
    return metadata(event.materialization)


@pytest.fixture
def shared_instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    """One on-disk SQLite instance for both threads. Not `instance_for_test`: an instance with
    settings runs logging.config.dictConfig at every run start, which deadlocks against the other
    thread's run logging (logging's module lock against a handler's lock)."""
    (tmp_path / "dagster").mkdir()
    with dg.DagsterInstance.local_temp(str(tmp_path / "dagster")) as instance:
        yield instance


def test_two_retrains_at_once_each_judge_and_train_on_their_own_features(ecosystem_env, shared_instance, monkeypatch):
    import ecosystem_assets.fraud.assets as fraud_assets

    dagster_instance = shared_instance
    defs = build_definitions(Settings.from_env(), {"transactions": source()})
    backfill = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        asset_selection=[dg.AssetKey("fraud_transactions")],
        instance=dagster_instance,
        tags={
            "dagster/asset_partition_range_start": str(DRIFT - timedelta(days=51)),
            "dagster/asset_partition_range_end": str(DRIFT - timedelta(days=1)),
        },
    )
    assert backfill.success

    # Each model step chooses its input only once both runs' features are recorded: whichever
    # finished second is then the latest, so a reader taking "the latest" would train one run on
    # the other's table. (The wait orders the steps; the choice is lineage.upstream's own.)
    real_upstream = fraud_assets.upstream

    def upstream_once_both_recorded(context, asset):
        wait_until(
            lambda: len(dagster_instance.fetch_materializations(FEATURES, limit=10).records),
            300,
            "both runs' fraud_features materializations",
            done=lambda n: n >= 2,
        )
        return real_upstream(context, asset)

    monkeypatch.setattr(fraud_assets, "upstream", upstream_once_both_recorded)
    start = threading.Barrier(len(CONFIGS), timeout=60)
    results: dict[str, dg.ExecuteInProcessResult] = {}
    errors: dict[str, BaseException] = {}

    def retrain(name: str) -> None:
        try:
            start.wait()
            results[name] = defs.resolve_job_def(RETRAIN_JOB).execute_in_process(
                instance=dagster_instance, run_config={"ops": {"fraud_features": {"config": CONFIGS[name]}}}, raise_on_error=False
            )
        except BaseException as exc:  # noqa: BLE001 — reported below, with the run's name
            errors[name] = exc

    threads = [threading.Thread(target=retrain, args=(name,)) for name in CONFIGS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=900)
    assert not errors and not any(t.is_alive() for t in threads), errors
    for name, result in results.items():
        assert result.success, (name, [e.message for e in result.all_events if e.is_failure])

    features = {name: materialized(result, "fraud_features") for name, result in results.items()}
    assert features["a"]["rows"] != features["b"]["rows"] and features["a"]["storage_key"] != features["b"]["storage_key"]
    records = dagster_instance.fetch_materializations(FEATURES, limit=2).records
    assert {r.run_id for r in records} == {r.run_id for r in results.values()}  # both are recorded; one is the latest
    client = MlflowClient(Settings.from_env().mlflow_tracking_uri)
    for name, result in results.items():
        own = features[name]
        assert own["storage_key"] == f"fraud/features/{result.run_id}/training.parquet"
        end = date.fromisoformat(CONFIGS[name]["end_date"])
        assert (own["first_day"], own["last_day"]) == (str(end - timedelta(days=CONFIGS[name]["training_days"] - 1)), str(end))
        # The blocking check judged this run's table …
        [check] = [e for e in result.get_asset_check_evaluations() if e.check_name == FEATURES_CHECK]
        judged = metadata(check)
        assert check.passed
        assert {k: judged[k] for k in ("rows", "first_day", "last_day", "storage_key")} == {
            k: own[k] for k in ("rows", "first_day", "last_day", "storage_key")
        }
        # … and the model trained on it, and says so in Dagster and in MLflow.
        model = materialized(result, "fraud_model")
        assert model["input/fraud_features"]["run_id"] == result.run_id, name
        assert model["input/fraud_features"]["storage_key"] == own["storage_key"] and model["training_rows"] == own["rows"]
        params = client.get_run(model["mlflow_run_id"]).data.params
        assert params["features_run_id"] == result.run_id and params["features_storage_key"] == own["storage_key"]

    # A run that builds no features of its own trains on the latest table.
    later = defs.resolve_job_def(RETRAIN_JOB).execute_in_process(instance=dagster_instance, asset_selection=[dg.AssetKey("fraud_model")])
    assert materialized(later, "fraud_model")["input/fraud_features"]["run_id"] == records[0].run_id
