"""CNN training: the loop (plain PyTorch) and the ``torchrun`` entry point.

    python -m torch.distributed.run --standalone --nproc_per_node=2 \
        --module ecosystem_assets.vision.train --spec '<TrainSpec JSON>'

Every rank holds the train split in memory; a ``DistributedSampler`` (``set_epoch`` each epoch)
gives each rank its shard, DDP averages gradients, so N ranks × ``batch_size`` equals one process
on the global batch. NCCL when CUDA is available, gloo otherwise. Rank 0 checkpoints every epoch
to storage, reports progress through Dagster Pipes when Dagster launched it, and logs to the
MLflow run whose id it is given. Without ``torchrun`` it runs as a single process.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ecosystem_assets.vision.checkpoints import finish, load_checkpoint, save_checkpoint
from ecosystem_assets.vision.tracking import NullReporter, Reporter, Tracker, pipes_reporter

MODEL_PREFIX = "models/cnn"


@dataclass(frozen=True)
class TrainSpec:
    storage_url: str
    source_url: str
    manifest_key: str
    dataset_version: str
    classes: tuple[str, ...]
    epochs: int = 8
    batch_size: int = 32  # per rank
    learning_rate: float = 2e-3
    image_size: int = 16
    color_mode: str = "L"
    seed: int = 0
    world_size: int = 1
    code_version: str = "dev"
    resume: bool = True
    mlflow_tracking_uri: str | None = None
    mlflow_run_id: str | None = None
    extra_params: dict[str, str] = field(default_factory=dict)
    # Where the final weights and result record go; None → ``prefix``. The asset passes a run-keyed
    # folder: identical specs share checkpoints, but each run publishes its own result.
    output_prefix: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> TrainSpec:
        data = json.loads(text)
        return cls(**{**data, "classes": tuple(data["classes"])})

    @property
    def fingerprint(self) -> str:
        """Everything that changes the weights: a checkpoint is resumed only by an identical run."""
        keys = (
            "dataset_version",
            "classes",
            "epochs",
            "batch_size",
            "learning_rate",
            "image_size",
            "color_mode",
            "seed",
            "world_size",
            "code_version",
        )
        return hashlib.sha256(json.dumps({k: getattr(self, k) for k in keys}, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def prefix(self) -> str:
        """Checkpoints of every run with this fingerprint (what makes resuming safe)."""
        return f"{MODEL_PREFIX}/{self.fingerprint}"

    def output_key(self, name: str) -> str:
        """Key of a final artifact (``model.pt``, ``result.json``) of this run."""
        return f"{(self.output_prefix or self.prefix).rstrip('/')}/{name}"


def train_epochs(
    model: Any,
    optimizer: Any,
    x: Any,
    y: Any,
    *,
    batch_size: int,
    seed: int,
    epochs: int,
    start_epoch: int = 0,
    rank: int = 0,
    world_size: int = 1,
    x_val: Any = None,
    y_val: Any = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Train from ``start_epoch`` to ``epochs`` on in-memory tensors; one record per epoch (global figures)."""
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch.utils.data.distributed import DistributedSampler

    sampler = DistributedSampler(x, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
    history = []
    for epoch in range(start_epoch, epochs):
        sampler.set_epoch(epoch)
        order = torch.tensor(list(sampler), device=x.device)
        model.train()
        # Accumulated on the device (no per-step host sync), in as few tensor ops as possible.
        loss_sum = torch.zeros((), device=x.device)
        correct = torch.zeros((), dtype=torch.int64, device=x.device)
        started = time.perf_counter()
        for begin in range(0, len(order), batch_size):
            batch = order[begin : begin + batch_size]
            xb, yb = x[batch], y[batch]
            optimizer.zero_grad(set_to_none=True)
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(batch)
            correct += (logits.detach().argmax(1) == yb).sum()
        stats = torch.stack([loss_sum.double(), correct.double(), torch.tensor(float(len(order)), dtype=torch.float64, device=x.device)])
        if world_size > 1:
            dist.all_reduce(stats)
        elapsed = time.perf_counter() - started
        loss_sum, correct, seen = stats.tolist()
        record = {
            "epoch": epoch + 1,
            "epochs": epochs,
            "loss": loss_sum / seen,
            "train_accuracy": correct / seen,
            "images_per_s": seen / elapsed,
            "seconds": elapsed,
        }
        if x_val is not None and len(x_val):
            record["val_accuracy"] = accuracy(getattr(model, "module", model), x_val, y_val)
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
    return history


def accuracy(model: Any, x: Any, y: Any, batch: int = 1024) -> float:
    import torch

    model.eval()
    with torch.no_grad():
        correct = sum(int((model(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum()) for i in range(0, len(x), batch))
    return correct / max(1, len(x))


def load_arrays(spec: TrainSpec) -> dict[str, Any]:
    """numpy arrays of the train and val splits, pinned to the manifest's object versions."""
    from ecosystem_assets.storage import open_store
    from ecosystem_assets.vision.dataset import load_split, open_source, read_manifest

    frame = read_manifest(open_store(spec.storage_url), spec.manifest_key)
    source = open_source(spec.source_url)
    arrays = {}
    for split in ("train", "val"):
        arrays[f"x_{split}"], arrays[f"y_{split}"] = load_split(source, frame, split, spec.classes, spec.image_size, spec.color_mode)
    return arrays


@dataclass
class TrainOutcome:
    rank: int
    state_dict: dict[str, Any]
    history: list[dict[str, Any]]
    resumed_from_epoch: int
    result: dict[str, Any] | None = None  # rank 0 only


def run(spec: TrainSpec, rank: int = 0, world_size: int = 1, local_rank: int = 0, reporter: Reporter | None = None) -> TrainOutcome:
    """One rank's whole job: data, model, resume, DDP training, and (rank 0) checkpoints, MLflow, result."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from ecosystem_assets.storage import open_store
    from ecosystem_assets.vision.model import build_model

    reporter = reporter or NullReporter()
    if world_size != spec.world_size:
        raise RuntimeError(f"spec was made for {spec.world_size} rank(s) but {world_size} started")
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    store = open_store(spec.storage_url)
    arrays = load_arrays(spec)
    x, y = torch.from_numpy(arrays["x_train"]).to(device), torch.from_numpy(arrays["y_train"]).to(device)
    x_val, y_val = torch.from_numpy(arrays["x_val"]).to(device), torch.from_numpy(arrays["y_val"]).to(device)
    if not len(x):
        raise RuntimeError(f"the train split of {spec.manifest_key} is empty")

    model = build_model(len(spec.classes), spec.color_mode, spec.image_size, spec.seed).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=spec.learning_rate)
    checkpoint = load_checkpoint(store, spec) if spec.resume else None
    history: list[dict[str, Any]] = []
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        history = list(checkpoint["history"])
    start = len(history)
    reporter.log(
        f"rank {rank}/{world_size} on {device} ({('nccl' if cuda else 'gloo') if world_size > 1 else 'single process'}): "
        f"{len(x)} train / {len(x_val)} val images, " + (f"resuming after epoch {start}" if start else "starting at epoch 1")
    )
    net = model
    if world_size > 1:
        net = DistributedDataParallel(model, device_ids=[local_rank] if cuda else None)

    with Tracker(spec, world_size, start) if rank == 0 else contextlib.nullcontext() as tracker:
        if tracker is not None:
            tracker.replay(history)

        def on_epoch(record: dict[str, Any]) -> None:
            history.append(record)
            if rank != 0:
                return
            key = save_checkpoint(store, spec, model, optimizer, history)
            reporter.epoch(record, key)
            if tracker is not None:
                tracker.epoch(record)

        train_epochs(
            net,
            optimizer,
            x,
            y,
            batch_size=spec.batch_size,
            seed=spec.seed,
            epochs=spec.epochs,
            start_epoch=start,
            rank=rank,
            world_size=world_size,
            x_val=x_val,
            y_val=y_val,
            on_epoch=on_epoch,
        )
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        result = None
        if rank == 0:
            model_uri = (
                tracker.log_model(model.cpu(), arrays["x_val"][:2] if len(x_val) >= 2 else arrays["x_train"][:2]) if tracker else None
            )
            result = finish(store, spec, state, history, start, world_size, str(device), model_uri)
            reporter.done(result)
    if world_size > 1:
        dist.barrier()  # keep the group alive until rank 0 has published
    return TrainOutcome(rank, state, history, start, result)


def worker(spec_json: str) -> TrainOutcome:
    """Entry point of one rank under torchrun / elastic_launch (reads RANK, WORLD_SIZE, LOCAL_RANK)."""
    import torch
    import torch.distributed as dist

    spec = TrainSpec.from_json(spec_json)
    rank, world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local_rank, local_world = int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    if "OMP_NUM_THREADS" not in os.environ:  # ranks on one host share its cores
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    distributed = "RANK" in os.environ and world_size > 1
    if distributed:
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    try:
        with pipes_reporter(rank) as reporter:
            return run(spec, rank, world_size, local_rank, reporter)
    finally:
        if distributed:
            dist.destroy_process_group()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True, help="TrainSpec as JSON")
    worker(parser.parse_args(argv).spec)


if __name__ == "__main__":
    main()
