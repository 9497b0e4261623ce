"""MLflow Model Registry for ``image-classifier``: register an evaluated model, move ``champion``.

The rule: the alias moves to a new version only if the accuracy check passed and the version's
test accuracy is at least the champion's, both measured on the *same* test split (the champion is
re-evaluated, never compared by a number recorded on other data).
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from typing import Any

from ecosystem_assets.registry import CHAMPION, get_champion, register_version, set_champion

MODEL_NAME = "image-classifier"


class EvaluationError(RuntimeError):
    """The model or its test split cannot be evaluated (no MLflow model, missing tags, empty split)."""


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def decide(
    check_passed: bool, accuracy: float, threshold: float, champion_version: str | None, champion_accuracy: float | None, version: str
) -> Decision:
    if champion_version == version:
        return Decision(False, f"version {version} is already {CHAMPION}")
    if not check_passed:
        return Decision(False, f"test accuracy {accuracy:.4f} is below the threshold {threshold:.2f}")
    if champion_version is None:
        return Decision(True, f"no {CHAMPION} yet; test accuracy {accuracy:.4f} passes {threshold:.2f}")
    if champion_accuracy is None:
        raise ValueError("champion_accuracy is required when a champion exists")
    if accuracy >= champion_accuracy:
        return Decision(
            True, f"test accuracy {accuracy:.4f} ≥ {CHAMPION} v{champion_version}'s {champion_accuracy:.4f} on the same test split"
        )
    return Decision(
        False, f"test accuracy {accuracy:.4f} < {CHAMPION} v{champion_version}'s {champion_accuracy:.4f} on the same test split"
    )


def register(client: Any, model_uri: str, run_id: str, tags: dict[str, str]) -> Any:
    """The registered version for ``model_uri``: reused when this exact model was registered before."""
    return register_version(client, MODEL_NAME, model_uri, run_id, tags, "Image classifier trained by the cnn_model asset.")


def champion(client: Any) -> Any | None:
    return get_champion(client, MODEL_NAME)


def version_tags(classes: list[str], image_size: int, color_mode: str, dataset_version: str) -> dict[str, str]:
    """What is needed to feed a version the right images later (its preprocessing and label order)."""
    return {"classes": json.dumps(classes), "image_size": str(image_size), "color_mode": color_mode, "dataset_version": dataset_version}


# Evaluation runs inside the Dagster run's process, which has threads: the Reader's loader workers
# start from a fork server (shards.start_method), not forked from it.
EVAL_BATCH, EVAL_WORKERS = 256, 2


def test_batches(store: Any, index: Any, classes: list[str], image_size: int, color_mode: str, split: str = "test") -> Any:
    """The ``split`` shards of ``index`` streamed as (x, y) batches with a model's own preprocessing."""
    from ecosystem_assets.vision.shards import Preprocess, Reader

    reader = Reader(store.url, index, EVAL_BATCH, EVAL_WORKERS)
    return reader.batches(split, Preprocess(image_size, color_mode, tuple(classes)))


def accuracy_on(version: Any, store: Any, index: Any, split: str = "test") -> float:
    """Re-evaluate a registered version on ``split`` of the shards, using the version's own preprocessing."""
    import mlflow.pytorch
    import numpy as np

    from ecosystem_assets.vision.evaluate import predict_batches

    tags = version.tags
    missing = [t for t in ("classes", "image_size", "color_mode") if t not in tags]
    if missing:
        raise EvaluationError(f"{MODEL_NAME} v{version.version} lacks tags {missing}; cannot re-evaluate it on the test split")
    model = mlflow.pytorch.load_model(f"models:/{MODEL_NAME}/{version.version}")
    # y is -1 for a class the version never saw: always counted wrong.
    y, predicted = predict_batches(
        model, test_batches(store, index, json.loads(tags["classes"]), int(tags["image_size"]), tags["color_mode"], split)
    )
    if not len(y):
        raise EvaluationError(f"the {split} split is empty; cannot compare against {MODEL_NAME} v{version.version}")
    return float(np.mean(predicted == y))


@dataclass(frozen=True)
class Outcome:
    report: Any  # evaluate.Report
    decision: Decision
    png: bytes
    png_uri: str
    model_name: str
    version: str
    champion_after: str | None
    champion_accuracy: float | None
    run_id: str
    dataset_version: str
    evaluation_key: str  # evaluation.json in storage


def evaluate_and_promote(
    store: Any, client: Any, mlf: Any, info: dict[str, Any], threshold: float, log: Any, output_prefix: str
) -> Outcome:
    """Evaluate the model of ``info`` (a training result record) on its test split, log to its MLflow
    run, register it, apply the rule; the PNG and ``evaluation.json`` go under ``output_prefix``.

    ``mlf`` is the mlflow API with the model's training run active (dagster-mlflow's `MlFlow`).
    """
    import mlflow.pytorch
    from PIL import Image

    from ecosystem_assets.vision import evaluate as ev
    from ecosystem_assets.vision.shards import ShardError, read_index

    if not info.get("mlflow_model_uri"):
        raise EvaluationError(f"the training result {info.get('result_key')} names no MLflow model; was it trained without tracking?")
    if not info.get("shards_key"):
        raise EvaluationError(
            f"the training result {info.get('result_key')} names no shards (trained by an older version): re-train cnn_model"
        )
    try:
        index = read_index(store, info["shards_key"])
    except ShardError as exc:
        raise EvaluationError(str(exc)) from None
    model = mlflow.pytorch.load_model(info["mlflow_model_uri"])
    try:
        y, predicted = ev.predict_batches(model, test_batches(store, index, info["classes"], info["image_size"], info["color_mode"]))
    except ShardError as exc:  # raised in a loader worker: DataLoader re-raises it with the worker's traceback
        raise EvaluationError(re.sub(r"^[\w.]*ShardError: ", "", str(exc).strip().splitlines()[-1])) from None
    if not len(y):
        raise EvaluationError(f"the test split of dataset {info['dataset_version']} is empty: nothing to evaluate on")
    report = ev.report(y, predicted, info["classes"])
    png = ev.confusion_png(report)
    mlf.log_metrics(report.mlflow_metrics())
    mlf.log_image(Image.open(io.BytesIO(png)), "confusion_matrix.png")

    tags = version_tags(info["classes"], info["image_size"], info["color_mode"], info["dataset_version"])
    registered = register(client, info["mlflow_model_uri"], info["mlflow_run_id"], tags)
    version = str(registered.version)
    client.set_model_version_tag(MODEL_NAME, version, "test_accuracy", f"{report.accuracy:.6f}")
    current = champion(client)
    current_version = str(current.version) if current is not None else None
    champion_accuracy = accuracy_on(current, store, index) if current is not None and current_version != version else None
    decision = decide(report.accuracy >= threshold, report.accuracy, threshold, current_version, champion_accuracy, version)
    if decision.promote:
        set_champion(client, MODEL_NAME, version)
    log.info(f"{MODEL_NAME} v{version}: {decision.reason}")

    png_uri = store.write_bytes(f"{output_prefix}/confusion_matrix.png", png)
    evaluation_key = f"{output_prefix}/evaluation.json"
    store.write_bytes(
        evaluation_key,
        json.dumps(
            {
                "version": version,
                "test_accuracy": report.accuracy,
                "confusion": report.confusion.tolist(),
                "classes": report.classes,
                "precision": report.precision,
                "recall": report.recall,
                "promoted": decision.promote,
                "reason": decision.reason,
                "mlflow_run_id": info["mlflow_run_id"],
                "model_result_key": info.get("result_key"),
                "dataset_version": info["dataset_version"],
            },
            indent=2,
        ).encode(),
    )
    return Outcome(
        report,
        decision,
        png,
        png_uri,
        MODEL_NAME,
        version,
        version if decision.promote else current_version,
        champion_accuracy,
        info["mlflow_run_id"],
        info["dataset_version"],
        evaluation_key,
    )
