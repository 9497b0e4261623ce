"""Training artifacts in storage: a checkpoint per epoch, the final weights, the result record.

Checkpoints live under ``models/cnn/<fingerprint>/``, so only an identical run (same data, config
and code) ever resumes from one. The final weights and result record go to ``spec.output_key``: the
asset gives each Dagster run its own folder and records the result's key in its materialization.
"""

from __future__ import annotations

import io
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ecosystem_assets.vision.train import TrainSpec


def save_checkpoint(
    store: Any, spec: TrainSpec, model: Any, optimizer: Any, scheduler: Any, history: list[dict[str, Any]], best: Any
) -> str:
    """Everything a resumed run needs to continue exactly: weights, optimizer and LR-schedule state,
    the history (with its stop decision) and the best epoch's weights."""
    import torch

    buffer = io.BytesIO()
    state = {
        "epoch": len(history),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "history": history,
        "best": {"epoch": best.epoch, "val_accuracy": best.val_accuracy, "state": best.state},
    }
    torch.save(state, buffer)
    key = f"{spec.prefix}/checkpoints/epoch-{len(history):04d}.pt"
    store.write_bytes(key, buffer.getvalue())
    # The pointer is written after the checkpoint: a kill in between leaves the previous one valid.
    store.write_bytes(f"{spec.prefix}/checkpoints/latest.json", json.dumps({"epoch": len(history), "key": key}).encode())
    return key


def load_checkpoint(store: Any, spec: TrainSpec) -> dict[str, Any] | None:
    import torch

    pointer = f"{spec.prefix}/checkpoints/latest.json"
    if not store.exists(pointer):
        return None
    key = json.loads(store.read_bytes(pointer))["key"]
    return torch.load(io.BytesIO(store.read_bytes(key)), map_location="cpu", weights_only=True)


def finish(
    store: Any,
    spec: TrainSpec,
    state: dict[str, Any],
    history: list[dict[str, Any]],
    resumed_from: int,
    world_size: int,
    device: str,
    model_uri: str | None,
    best_epoch: int,
) -> dict[str, Any]:
    """Final weights and a result record in storage; the asset records the result's key in its metadata."""
    import torch

    buffer = io.BytesIO()
    torch.save({"model": state, "classes": list(spec.classes), "image_size": spec.image_size, "color_mode": spec.color_mode}, buffer)
    weights_key = spec.output_key("model.pt")
    weights_uri = store.write_bytes(weights_key, buffer.getvalue())
    last = history[-1] if history else {}
    chosen = next((r for r in history if r["epoch"] == best_epoch), last)
    result = {
        "fingerprint": spec.fingerprint,
        "result_key": spec.output_key("result.json"),
        "weights_key": weights_key,
        "weights_uri": weights_uri,
        "mlflow_run_id": spec.mlflow_run_id,
        "mlflow_model_uri": model_uri,
        "dataset_version": spec.dataset_version,
        "shards_key": spec.shards_key,
        "classes": list(spec.classes),
        "image_size": spec.image_size,
        "color_mode": spec.color_mode,
        "epochs": len(history),
        "max_epochs": spec.max_epochs,
        "best_epoch": best_epoch,
        "stop_reason": last.get("stop"),
        "world_size": world_size,
        "device": device,
        "resumed_from_epoch": resumed_from,
        # Figures of the best epoch: its weights are the result.
        "loss": chosen.get("loss"),
        "train_accuracy": chosen.get("train_accuracy"),
        "val_accuracy": chosen.get("val_accuracy"),
        "history": history,
    }
    store.write_bytes(result["result_key"], json.dumps(result, indent=2).encode())
    return result
