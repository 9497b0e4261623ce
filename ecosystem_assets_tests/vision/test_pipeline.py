"""The whole vision job on the digits default: torchrun via Pipes, MLflow tracking, registry and the champion gate."""

from __future__ import annotations

import dagster as dg

from ecosystem_assets_tests.markdown_images import inline_pngs
from ecosystem_assets_tests.servers.mlflow import what_a_link_shows


def _run(defs, instance, keys, config=None, raise_on_error=True):
    job = defs.resolve_implicit_global_asset_job_def()
    run_config = {"ops": config} if config else None
    return job.execute_in_process(
        instance=instance, asset_selection=[dg.AssetKey(k) for k in keys], run_config=run_config, raise_on_error=raise_on_error
    )


def _metadata(result, node):
    return {k: getattr(v, "value", v) for k, v in result.asset_materializations_for_node(node)[0].metadata.items()}


def test_digits_default_trains_evaluates_and_guards_the_champion(
    ecosystem_env, vision_defs, dagster_instance, one_torch_thread, mlflow_ui, monkeypatch
):
    import mlflow
    from mlflow import MlflowClient

    from ecosystem_assets.settings import Settings

    settings = Settings.from_env()
    # A real MLflow server over the store the run will write (it creates the database): the links are followed on it.
    settings.home.mkdir(parents=True, exist_ok=True)
    ui = mlflow_ui(settings.mlflow_tracking_uri, settings.mlflow_artifact_location)
    monkeypatch.setenv("MLFLOW_UI_URL", ui)
    defs = vision_defs()
    result = defs.resolve_job_def("vision_training_job").execute_in_process(instance=dagster_instance)
    assert result.success

    dataset = _metadata(result, "image_dataset")
    assert dataset["files"] == 1797 and dataset["class_count"] == 10 and dataset["classes"] == [str(d) for d in range(10)]
    model = _metadata(result, "cnn_model")
    # What Dagster's staleness compares: the dataset version this model was trained on.
    tags = result.asset_materializations_for_node("cnn_model")[0].tags
    assert tags["dagster/input_data_version/image_shards"] == dataset["dataset_version"]
    shards = _metadata(result, "image_shards")
    assert shards["images"] == 1797 and shards["reused"] is False and shards["input/image_dataset"]["run_id"] == result.run_id
    # The defaults: train until validation accuracy stops improving (30 epochs at most), keep the best epoch.
    epochs = model["epochs_trained"]
    assert 1 <= model["best_epoch"] <= epochs <= 30 and model["world_size"] == 2 and model["device"] == "cpu"
    assert model["stop_reason"].startswith(("validation accuracy did not improve for 5 epochs", "reached max_epochs 30"))
    assert model["stop_reason"] in model["history"] and model["image_size"] == 16 and model["color_mode"] == "L"  # from the 8×8 grey digits
    assert model["dataset_version"] == dataset["dataset_version"] and model["images_per_s"] > 0
    # Rank 0's progress reached the Dagster run's log through Pipes, epoch by epoch.
    messages = [entry.user_message for entry in dagster_instance.all_logs(result.run_id)]
    for epoch in range(1, epochs + 1):
        assert any(m.startswith(f"epoch {epoch}/30 loss") for m in messages), f"no progress line for epoch {epoch}"

    # Each step names the upstream materialization it read: this run's.
    assert model["input/image_shards"]["run_id"] == result.run_id and model["storage_key"].endswith(f"/runs/{result.run_id}/result.json")
    evaluation = _metadata(result, "cnn_evaluation")
    assert evaluation["input/cnn_model"]["run_id"] == result.run_id
    accuracy = evaluation["test_accuracy"]
    assert accuracy >= 0.90
    assert evaluation["promoted"] is True and evaluation["model_version"] == "1" and evaluation["champion_version"] == "1"
    assert "| **3** |" in evaluation["confusion_matrix"]
    # Pictures inline on the asset pages, small; links to the MLflow run and the registered version.
    [(_, confusion_size)] = inline_pngs(evaluation["confusion_matrix"])
    [(curves, curves_size)] = inline_pngs(model["training_curves"])
    assert confusion_size[0] >= 100 and curves_size == (640, 240) and len(curves) <= 60_000
    assert what_a_link_shows(model["mlflow_run"], ui).json()["run"]["info"]["run_id"] == model["mlflow_run_id"]
    assert what_a_link_shows(evaluation["mlflow_run"], ui).json()["run"]["info"]["run_id"] == model["mlflow_run_id"]
    assert what_a_link_shows(evaluation["mlflow_model_version"], ui).json()["model_version"]["version"] == "1"
    (check,) = result.get_asset_check_evaluations()[-1:]
    assert check.check_name == "cnn_accuracy_above_threshold" and check.passed

    client = MlflowClient(settings.mlflow_tracking_uri)
    run = client.get_run(model["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith(f"{settings.storage_url}/mlflow-artifacts/image-classifier/")  # not ./mlruns
    assert run.data.params["dataset_version"] == dataset["dataset_version"]
    assert run.data.params["world_size"] == "2" and run.data.params["code_version"] and run.data.params["git_commit"]
    assert run.data.metrics["test_accuracy"] == accuracy
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == list(range(1, epochs + 1))
    assert {"confusion_matrix.png", "training_curves.png"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    info = mlflow.models.get_model_info(model["mlflow_model_uri"])
    assert info.signature is not None and "-1, 1, 16, 16" in str(info.signature.inputs)
    assert str(client.get_model_version_by_alias("image-classifier", "champion").version) == "1"

    # A worse challenger: one epoch with a tiny learning rate on one process.
    challenger = {"cnn_model": {"config": {"max_epochs": 1, "learning_rate": 1e-4, "nproc_per_node": 1, "threads_per_process": 1}}}
    assert _run(defs, dagster_instance, ["cnn_model"], challenger).success

    blocked = _run(defs, dagster_instance, ["cnn_evaluation"], raise_on_error=False)
    (failed,) = blocked.get_asset_check_evaluations()
    assert not blocked.success and not failed.passed and failed.severity == dg.AssetCheckSeverity.ERROR
    weak = _metadata(blocked, "cnn_evaluation")
    assert weak["test_accuracy"] < 0.90 and weak["promoted"] is False and "below the threshold" in weak["promotion"]
    assert str(client.get_model_version_by_alias("image-classifier", "champion").version) == "1"

    # With the gate lowered the check passes, but the challenger still loses to the champion on the same split.
    lowered = _run(defs, dagster_instance, ["cnn_evaluation"], {"cnn_evaluation": {"config": {"accuracy_threshold": 0.0}}})
    compared = _metadata(lowered, "cnn_evaluation")
    assert lowered.get_asset_check_evaluations()[0].passed
    assert compared["model_version"] == "2"  # the same model is not registered twice
    assert compared["promoted"] is False and compared["previous_champion_accuracy"] == accuracy
    assert f"< champion v1's {accuracy:.4f}" in compared["promotion"]
    assert str(client.get_model_version_by_alias("image-classifier", "champion").version) == "1"
    assert [str(v.version) for v in client.search_model_versions("name='image-classifier'")] in (["2", "1"], ["1", "2"])
