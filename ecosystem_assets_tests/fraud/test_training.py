"""Training, threshold choice and the champion gate, through MLflow's registry."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from mlflow import MlflowClient

from ecosystem_assets.fraud import model
from ecosystem_assets.fraud.checks import feature_expectations, precision_verdict
from ecosystem_assets.fraud.features import FEATURES, HISTORY_DAYS, feature_table
from ecosystem_assets.quality import validate_frame
from ecosystem_assets_tests.fraud.helpers import DRIFT, frames, train_champion


@pytest.fixture(scope="module")
def table():
    end = DRIFT - timedelta(days=1)
    raw = frames(end - timedelta(days=14 + HISTORY_DAYS - 1), end)
    features = feature_table(raw)
    return features[features["timestamp"] >= str(end - timedelta(days=13))].reset_index(drop=True)


def test_threshold_reaches_the_target_on_calibration_and_holdout_is_unseen(table):
    trained, holdout = model.train(table, calibration_days=2, holdout_days=2, target_precision=0.9)
    fit, calibration, held = model.split_by_time(table, 2, 2)
    assert held.equals(holdout) and fit["timestamp"].max() < calibration["timestamp"].min() < held["timestamp"].min()
    assert len(fit) == trained.train_rows
    assert trained.score(calibration).precision >= 0.9  # the lowest threshold reaching the target
    assert trained.score(holdout).labelled == len(holdout)


def test_worse_challenger_is_registered_but_not_promoted(tmp_path: Path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    champion = train_champion(uri, tmp_path / "a", DRIFT - timedelta(days=1))
    weak = train_champion(uri, tmp_path / "a", DRIFT - timedelta(days=1), max_iter=1, learning_rate=0.01, max_leaf_nodes=2)
    assert champion.promoted and not weak.promoted
    assert weak.version == "2" and weak.champion_before == "1"
    assert weak.champion_score is not None and weak.new.key() < weak.champion_score.key()
    assert weak.reason.startswith("worse than the champion") and "same holdout" in weak.reason
    client = MlflowClient(uri)
    assert str(client.get_model_version_by_alias("fraud-detector", "champion").version) == "1"
    tags = client.get_model_version("fraud-detector", "2").tags
    assert tags["promotion"] == weak.reason and float(tags["threshold"]) == weak.new.threshold
    run = client.get_run(weak.run_id)
    assert {"precision", "recall", "average_precision"} <= set(run.data.metrics)
    assert run.data.params["max_iter"] == "1"


def test_feature_gate_catches_bad_tables(table):
    assert validate_frame(table, "fraud_features", feature_expectations(FEATURES)).success
    broken = table.copy()
    broken.loc[0, "amount"] = -5.0
    broken.loc[1, "is_fraud"] = 2
    broken.loc[2, "terminal_risk_7d"] = None
    report = validate_frame(broken, "fraud_features", feature_expectations(FEATURES))
    failed = {(f.expectation, f.column) for f in report.failures}
    assert {
        ("expect_column_values_to_be_between", "amount"),
        ("expect_column_values_to_be_in_set", "is_fraud"),
        ("expect_column_values_to_not_be_null", "terminal_risk_7d"),
    } <= failed
    all_fraud = table.assign(is_fraud=1)
    assert ("expect_column_mean_to_be_between", "is_fraud") in {
        (f.expectation, f.column) for f in validate_frame(all_fraud, "fraud_features", feature_expectations(FEATURES)).failures
    }


@pytest.mark.parametrize(
    ("labelled", "precision", "judged", "passed", "words"),
    [
        (50, 0.1, False, False, "not judged: only 50"),
        (500, 0.79, True, False, "below 0.80"),
        (500, 0.8, True, True, "≥ 0.80"),
        (500, None, False, False, "not judged: v3 flagged none"),
    ],
)
def test_precision_verdict(labelled, precision, judged, passed, words):
    verdict = precision_verdict({"labelled": labelled, "precision": precision, "model_version": "3"}, 0.8, 200)
    assert (verdict.judged, verdict.passed) == (judged, passed) and words in verdict.reason


def test_too_few_frauds_is_a_clear_error(table):
    no_fraud = table.assign(is_fraud=0)
    with pytest.raises(ValueError, match="the train split has 0 frauds"):
        model.train(no_fraud)


def test_models_are_skops_and_a_poisoned_champion_is_never_unpickled(tmp_path: Path):
    """The champion comparison reads the champion through the safe loader: a pickled champion is
    refused (its code never runs) and the new model is promoted over it, saying why."""
    import yaml
    from mlflow.artifacts import download_artifacts

    from ecosystem_assets.fraud.model_store import load_fraud_estimator
    from ecosystem_assets_tests.fraud.attacker import RunsCommand, register_sklearn

    uri, marker = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "pwned"
    poisoned = register_sklearn(uri, tmp_path / "attacker", RunsCommand(marker), "cloudpickle")
    MlflowClient(uri).set_registered_model_alias("fraud-detector", "champion", poisoned)
    outcome = train_champion(uri, tmp_path / "a", DRIFT - timedelta(days=1))
    assert not marker.exists()
    assert outcome.promoted and outcome.champion_before == poisoned == "1" and outcome.champion_score is None
    assert outcome.reason.startswith("the champion v1 cannot be loaded safely") and "cloudpickle" in outcome.reason
    assert str(MlflowClient(uri).get_model_version_by_alias("fraud-detector", "champion").version) == outcome.version

    files = Path(
        download_artifacts(
            artifact_uri=f"models:/fraud-detector/{outcome.version}", dst_path=str(tmp_path / "dl"), tracking_uri=uri, registry_uri=uri
        )
    )
    flavor = yaml.safe_load((files / "MLmodel").read_text())["flavors"]["sklearn"]
    assert flavor["serialization_format"] == "skops" and not list(files.rglob("*.pkl"))
    assert load_fraud_estimator(uri, outcome.version).n_features_in_ == len(FEATURES)
    # The requirements are the listed ones, pinned to this environment (not inferred by MLflow).
    from importlib.metadata import version

    required = {line.split("==")[0]: line.split("==")[1] for line in (files / "requirements.txt").read_text().split() if "==" in line}
    assert {name: required.get(name) for name in ("scikit-learn", "skops", "numpy")} == {
        name: version(name) for name in ("scikit-learn", "skops", "numpy")
    }


def test_a_model_whose_drift_reference_cannot_be_stored_is_not_promoted(ecosystem_env, dagster_instance, tmp_path: Path, monkeypatch):
    """fraud_model stores the new version's drift reference before the champion alias can move: when
    storage refuses it, the run fails saying so and the champion stays the previous version (a champion
    without a reference could never be judged for drift, so drift would never retrain it)."""
    import dagster as dg

    from ecosystem_assets.fraud.assets import reference_key
    from ecosystem_assets.fraud.definitions import RETRAIN_JOB
    from ecosystem_assets.project import build_definitions
    from ecosystem_assets.settings import Settings
    from ecosystem_assets.storage import open_store
    from ecosystem_assets_tests.fraud.test_transaction_files import write_days

    end = DRIFT - timedelta(days=1)
    first = end - timedelta(days=14 + HISTORY_DAYS - 1)
    write_days(tmp_path / "tx", frames(first, end))  # the small population, as files: quicker than the default simulator
    monkeypatch.setenv("FRAUD_TRANSACTIONS_URL", str(tmp_path / "tx"))
    settings = Settings.from_env()
    defs = build_definitions(settings)
    backfill = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        asset_selection=[dg.AssetKey("fraud_transactions")],
        instance=dagster_instance,
        tags={"dagster/asset_partition_range_start": str(first), "dagster/asset_partition_range_end": str(end)},
    )
    assert backfill.success
    retrain = defs.resolve_job_def(RETRAIN_JOB)
    run_config = {"ops": {"fraud_features": {"config": {"end_date": str(end)}}}}
    assert retrain.execute_in_process(instance=dagster_instance, run_config=run_config).success
    store, client = open_store(settings.storage_url), MlflowClient(settings.mlflow_tracking_uri)
    assert store.exists(reference_key("1"))
    assert str(client.get_model_version_by_alias("fraud-detector", "champion").version) == "1"

    # A directory where v2's reference file goes: the storage refuses the write (whoever runs the test).
    (Path(settings.storage_url) / reference_key("2")).mkdir(parents=True)
    failed = retrain.execute_in_process(instance=dagster_instance, run_config=run_config, raise_on_error=False)
    assert not failed.success
    description = failed.failure_data_for_node("fraud_model").user_failure_data.description
    assert description.startswith(f"the drift reference of v2 could not be stored at {reference_key('2')}")
    assert "was not promoted (the champion is unchanged)" in description
    # Same data, same seed: v2 is as good as v1 and would have been promoted; it stays a registered challenger.
    assert str(client.get_model_version_by_alias("fraud-detector", "champion").version) == "1"
    assert {str(v.version) for v in client.search_model_versions("name='fraud-detector'")} == {"1", "2"}
    assert "promotion" not in client.get_model_version("fraud-detector", "2").tags
    assert not store.exists(reference_key("2"))
