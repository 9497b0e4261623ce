"""Training artifacts in storage: a checkpoint per epoch, the final weights, the result record.

Checkpoints live under ``models/cnn/<fingerprint>/<run group>/checkpoints/`` (``spec.checkpoint_prefix``;
the run group is the root Dagster run id of a re-execution chain), so a run resumes only a checkpoint
of an identical spec (same data, config and code) written by its own chain: a re-execution from
failure continues where its run stopped, a new run starts fresh, and two runs at once never write
the same keys or move each other's ``latest.json``. Rank 0 reads the pointer once and broadcasts the
choice, so every rank resumes the same epoch. The final weights and result record go to
``spec.output_key``: the asset gives each Dagster run its own folder and records the result's key in
its materialization.
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
    key = f"{spec.checkpoint_prefix}/epoch-{len(history):04d}.pt"
    store.write_bytes(key, buffer.getvalue())
    # The pointer is written after the checkpoint: a kill in between leaves the previous one valid.
    store.write_bytes(latest_key(spec), json.dumps({"epoch": len(history), "key": key}).encode())
    return key


def latest_key(spec: TrainSpec) -> str:
    return f"{spec.checkpoint_prefix}/latest.json"


def latest_checkpoint(store: Any, spec: TrainSpec) -> dict[str, Any] | None:
    """The run group's pointer, ``{"epoch": n, "key": …}``, or None before its first checkpoint."""
    pointer = latest_key(spec)
    if not store.exists(pointer):
        return None
    record = json.loads(store.read_bytes(pointer))
    return {"epoch": int(record["epoch"]), "key": str(record["key"])}


def choose_checkpoint(store: Any, spec: TrainSpec, rank: int = 0, world_size: int = 1) -> dict[str, Any] | None:
    """The checkpoint every rank resumes from: rank 0 reads the pointer, the others receive its answer.

    Collective when ``world_size > 1``: every rank of the process group must call it. Reading the
    pointer on each rank could give different epochs (a run writing between the reads), and ranks
    with histories of different lengths then wait forever in each other's all-reduce. A failure to
    read on rank 0 is sent along too, so every rank fails with it instead of waiting.
    """
    message: list[Any] = [None]
    if rank == 0:
        try:
            message[0] = {"pointer": latest_checkpoint(store, spec)}
        except Exception as exc:  # noqa: BLE001 — whatever it is, the other ranks must hear of it
            message[0] = {"error": f"{type(exc).__name__}: {exc}"}
    if world_size > 1:
        import torch.distributed as dist

        dist.broadcast_object_list(message, src=0)
    if "error" in message[0]:
        raise RuntimeError(f"rank 0 could not read the checkpoint pointer {latest_key(spec)}: {message[0]['error']}")
    pointer: dict[str, Any] | None = message[0]["pointer"]
    return pointer


def load_checkpoint(store: Any, spec: TrainSpec, rank: int = 0, world_size: int = 1) -> dict[str, Any] | None:
    """The state to resume (the checkpoint ``choose_checkpoint`` agreed on), or None to start at epoch 1.
    Collective when ``world_size > 1``."""
    import torch

    pointer = choose_checkpoint(store, spec, rank, world_size)
    if pointer is None:
        return None
    state: dict[str, Any] = torch.load(io.BytesIO(store.read_bytes(pointer["key"])), map_location="cpu", weights_only=True)
    if state["epoch"] != pointer["epoch"]:
        raise RuntimeError(f"checkpoint {pointer['key']} holds epoch {state['epoch']}, but its pointer says {pointer['epoch']}")
    return state


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
