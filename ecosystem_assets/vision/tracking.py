"""Progress out of the training processes: Dagster Pipes (or stdout) and the MLflow run.

Only rank 0 reports: every rank would otherwise write the same messages into one Pipes channel.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

MODEL_ARTIFACT = "model"


def epoch_line(record: dict[str, Any]) -> str:
    val = f" val_acc {record['val_accuracy']:.4f}" if "val_accuracy" in record else ""
    return (
        f"epoch {record['epoch']}/{record['epochs']} loss {record['loss']:.4f} acc {record['train_accuracy']:.4f}"
        f"{val} {record['images_per_s']:.0f} images/s"
    )


def history_markdown(history: list[dict[str, Any]]) -> str:
    """The epoch table, and below it why training stopped."""
    lines = ["| epoch | loss | train acc | val acc | learning rate | images/s |", "|---:|---:|---:|---:|---:|---:|"]
    lines += [
        f"| {r['epoch']} | {r['loss']:.4f} | {r['train_accuracy']:.4f} | {r.get('val_accuracy', float('nan')):.4f} | "
        f"{r.get('learning_rate', float('nan')):.2g} | {r['images_per_s']:.0f} |"
        for r in history
    ]
    if history and history[-1].get("stop"):
        lines += ["", f"Stopped after epoch {history[-1]['epoch']}: {history[-1]['stop']}."]
    return "\n".join(lines)


class Reporter:
    """stdout: a run outside Dagster still shows its progress (and the resume test reads it)."""

    def log(self, message: str) -> None:
        print(message, flush=True)

    def epoch(self, record: dict[str, Any], checkpoint_key: str) -> None:
        self.log(f"{epoch_line(record)}; checkpoint {checkpoint_key}")
        if record.get("stop"):
            self.log(f"stopping after epoch {record['epoch']}: {record['stop']}")

    def done(self, result: dict[str, Any]) -> None:
        self.log(f"training finished after epoch {len(result['history'])}: weights {result['weights_uri']}")


class NullReporter(Reporter):
    def log(self, message: str) -> None:
        pass


class PipesReporter(Reporter):
    def __init__(self, pipes: Any):
        self.pipes = pipes

    def log(self, message: str) -> None:
        self.pipes.log.info(message)

    def epoch(self, record: dict[str, Any], checkpoint_key: str) -> None:
        super().epoch(record, checkpoint_key)
        self.pipes.report_custom_message({**record, "checkpoint": checkpoint_key})

    def done(self, result: dict[str, Any]) -> None:
        history = result["history"]
        best = next((r for r in history if r["epoch"] == result["best_epoch"]), history[-1] if history else {})
        metadata: dict[str, Any] = {
            "weights": {"type": "path", "raw_value": result["weights_uri"]},
            "result_key": result["result_key"],
            "epochs_trained": len(history),
            "best_epoch": result["best_epoch"],
            "stop_reason": result["stop_reason"] or "",
            "resumed_from_epoch": result["resumed_from_epoch"],
            "world_size": result["world_size"],
            "device": result["device"],
            "dataset_version": result["dataset_version"],
            "history": {"type": "md", "raw_value": history_markdown(result["history"])},
        }
        for name in ("loss", "train_accuracy", "val_accuracy", "images_per_s"):  # of the best epoch: its weights are the model
            if name in best:
                metadata[name] = float(best[name])
        if result["mlflow_model_uri"]:
            metadata["mlflow_model_uri"] = result["mlflow_model_uri"]
        self.pipes.report_asset_materialization(metadata=metadata)


@contextmanager
def pipes_reporter(rank: int) -> Iterator[Reporter]:
    """Rank 0 under Dagster talks Pipes; rank 0 elsewhere prints; other ranks stay quiet."""
    from dagster_pipes import DAGSTER_PIPES_CONTEXT_ENV_VAR, open_dagster_pipes

    if rank != 0:
        yield NullReporter()
    elif os.environ.get(DAGSTER_PIPES_CONTEXT_ENV_VAR):
        with open_dagster_pipes(message_writer=message_writer()) as pipes:
            yield PipesReporter(pipes)
    else:
        yield Reporter()


# How often rank 0 uploads its buffered Pipes messages when they travel through S3 (PyTorchJob pods).
S3_MESSAGE_INTERVAL_S = 1.0


def message_writer() -> Any:
    """The Pipes message writer the launching client asked for: S3 when its message params name a
    bucket (the PyTorchJob client, whose pods share no file or pipe with Dagster), else the default
    (a file or stdio: the local torchrun launched by ``PipesSubprocessClient``)."""
    from dagster_pipes import PipesDefaultMessageWriter, PipesEnvVarParamsLoader, PipesS3MessageWriter

    if "bucket" in PipesEnvVarParamsLoader().load_messages_params():
        from ecosystem_assets.storage import s3_client

        return PipesS3MessageWriter(s3_client(), interval=S3_MESSAGE_INTERVAL_S)
    return PipesDefaultMessageWriter()


class Tracker:
    """Rank 0's MLflow logging into the run the asset opened; a no-op without a tracking URI and run id."""

    def __init__(self, spec: Any, world_size: int, resumed_from: int):
        self.spec, self.world_size, self.resumed_from = spec, world_size, resumed_from
        self.active = bool(spec.mlflow_tracking_uri and spec.mlflow_run_id)

    def __enter__(self) -> Tracker:
        if self.active:
            import mlflow

            mlflow.set_tracking_uri(self.spec.mlflow_tracking_uri)
            mlflow.start_run(run_id=self.spec.mlflow_run_id)
            s = self.spec
            mlflow.log_params(
                {
                    "max_epochs": s.max_epochs,
                    "patience": s.patience,
                    "lr_schedule": s.lr_schedule,
                    "augment": s.augment,
                    "hflip": s.hflip,
                    "loader_workers": s.loader_workers,
                    "batch_size_per_rank": s.batch_size,
                    "global_batch_size": s.batch_size * self.world_size,
                    "learning_rate": s.learning_rate,
                    "image_size": s.image_size,
                    "color_mode": s.color_mode,
                    "seed": s.seed,
                    "world_size": self.world_size,
                    "num_classes": len(s.classes),
                    "dataset_version": s.dataset_version,
                    "code_version": s.code_version,
                    "optimizer": "adam",
                    **s.extra_params,
                }
            )
            mlflow.set_tags(
                {"resumed_from_epoch": str(self.resumed_from), "training_fingerprint": s.fingerprint, "classes": ",".join(s.classes)}
            )
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self.active:
            import mlflow

            mlflow.end_run("FAILED" if exc_type else "FINISHED")

    def replay(self, history: list[dict[str, Any]]) -> None:
        """A resumed run gets the epochs before the kill too, so its curves are complete."""
        for record in history:
            self.epoch(record)

    def epoch(self, record: dict[str, Any]) -> None:
        if self.active:
            import mlflow

            names = ("loss", "train_accuracy", "val_accuracy", "images_per_s", "learning_rate")
            mlflow.log_metrics({n: float(record[n]) for n in names if n in record}, step=int(record["epoch"]))

    def log_model(self, model: Any, example: Any) -> str | None:
        """The model as an MLflow PyTorch model with a signature; the example needs batch ≥ 2 (pt2 export)."""
        if not self.active:
            return None
        import mlflow.pytorch
        import numpy as np
        import torch
        from mlflow.models import infer_signature

        example = np.ascontiguousarray(example, dtype=np.float32)
        model.eval()
        with torch.no_grad():
            output = model(torch.from_numpy(example)).numpy()
        info = mlflow.pytorch.log_model(
            model,
            name=MODEL_ARTIFACT,
            input_example=example,
            signature=infer_signature(example, output),
            # Explicit requirements: inferring them re-imports the model in a subprocess (~8 s).
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "numpy"],
        )
        return info.model_uri
