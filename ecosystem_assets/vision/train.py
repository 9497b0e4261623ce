"""CNN training: the loop (plain PyTorch, DDP) and the ``torchrun`` entry point.

    python -m torch.distributed.run --standalone --nproc_per_node=2 \
        --module ecosystem_assets.vision.train --spec '<TrainSpec JSON>'

Data streams from the dataset version's WebDataset shards (`vision/shards.py`): each epoch every
rank reads its own shards of a (seed, epoch) permutation through a DataLoader whose workers decode,
resize and augment; memory does not grow with the dataset. All ranks take the same number of steps
and DDP averages their gradients. Each epoch ends with a validation pass (every rank scores its val
shards, the counts are summed), a learning-rate decision (halved when validation accuracy has not
improved for ``lr_patience`` epochs) and an early-stopping decision (no improvement for
``patience`` epochs, or ``max_epochs`` reached); the best epoch's weights are the result. Rank 0
checkpoints every epoch to storage (under the spec's run group: the root Dagster run id), chooses
the checkpoint every rank resumes from, reports through Dagster Pipes when Dagster launched it, and
logs to the MLflow run whose id it is given. NCCL, bf16 autocast, channels_last and pinned-memory
copies on CUDA; gloo and float32 on CPU. Without ``torchrun`` it runs as a single process.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from ecosystem_assets.vision.checkpoints import finish, load_checkpoint, save_checkpoint
from ecosystem_assets.vision.tracking import NullReporter, Reporter, Tracker, pipes_reporter

MODEL_PREFIX = "models/cnn"
RUN_GROUP = re.compile(r"[A-Za-z0-9_-]+")  # a Dagster run id (a UUID) is one
RESERVED_GROUPS = frozenset({"checkpoints", "runs"})  # names already used in the fingerprint's folder
# Everything that changes the weights: a checkpoint is resumed only by an identical run.
FINGERPRINT_FIELDS = (
    "dataset_version",
    "classes",
    "max_epochs",
    "patience",
    "batch_size",
    "learning_rate",
    "lr_schedule",
    "lr_patience",
    "image_size",
    "color_mode",
    "augment",
    "hflip",
    "seed",
    "world_size",
    "loader_workers",  # each worker batches its own shards: the batch sequence depends on their number
    "code_version",
)


@dataclass(frozen=True)
class TrainSpec:
    storage_url: str
    shards_key: str  # the shard index of the dataset version (shards.index_key)
    dataset_version: str
    classes: tuple[str, ...]
    max_epochs: int = 30
    patience: int = 5  # stop after this many epochs without a better validation accuracy; 0: never early
    batch_size: int = 32  # per rank
    learning_rate: float = 2e-3
    lr_schedule: Literal["plateau", "constant"] = "plateau"
    lr_patience: int = 2  # plateau: halve the rate after this many epochs without improvement
    image_size: int = 16
    color_mode: str = "L"
    augment: bool = True
    hflip: bool = False
    seed: int = 0
    world_size: int = 1
    loader_workers: int = 2  # DataLoader worker processes per rank
    cache_dir: str | None = None  # local shard cache (S3 storage); default: <tmp>/ecosystem-assets-shards
    cache_bytes: int = 4 << 30
    code_version: str = "dev"
    resume: bool = True
    mlflow_tracking_uri: str | None = None
    mlflow_run_id: str | None = None
    extra_params: dict[str, str] = field(default_factory=dict)
    # Where the final weights and result record go; None → ``prefix``. The asset passes a run-keyed
    # folder: each run publishes its own result.
    output_prefix: str | None = None
    # Whose checkpoints these are: the root Dagster run id of a re-execution chain (the asset passes
    # it), so a re-execution resumes its own chain's checkpoint and no other run ever reads or moves
    # it. None: a standalone run (by hand, tests), with the fingerprint's own folder. Not in the
    # fingerprint: the same training, only stored apart.
    run_group: str | None = None

    def __post_init__(self) -> None:
        if self.run_group is not None and (not RUN_GROUP.fullmatch(self.run_group) or self.run_group in RESERVED_GROUPS):
            raise ValueError(f"run_group must be a run id (letters, digits, '-', '_'), got {self.run_group!r}")

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> TrainSpec:
        data = json.loads(text)
        return cls(**{**data, "classes": tuple(data["classes"])})

    @property
    def fingerprint(self) -> str:
        """Hash of what changes the weights (FINGERPRINT_FIELDS)."""
        values = {k: getattr(self, k) for k in FINGERPRINT_FIELDS}
        return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def prefix(self) -> str:
        """Folder of every run with this fingerprint: ``checkpoint_prefix`` and ``runs/`` are in it."""
        return f"{MODEL_PREFIX}/{self.fingerprint}"

    @property
    def checkpoint_prefix(self) -> str:
        """This run group's checkpoints and their ``latest.json``: only an identical spec (the
        fingerprint) of the same re-execution chain (``run_group``) resumes from them."""
        group = self.prefix if self.run_group is None else f"{self.prefix}/{self.run_group}"
        return f"{group}/checkpoints"

    def output_key(self, name: str) -> str:
        """Key of a final artifact (``model.pt``, ``result.json``) of this run."""
        return f"{(self.output_prefix or self.prefix).rstrip('/')}/{name}"


@dataclass(frozen=True)
class Device:
    """Where the tensors go and how: bf16 autocast, channels_last and non-blocking copies on CUDA only."""

    torch_device: Any

    @property
    def cuda(self) -> bool:
        return bool(self.torch_device.type == "cuda")

    def batch(self, x: Any, y: Any) -> tuple[Any, Any]:
        import torch

        fmt = torch.channels_last if self.cuda else torch.contiguous_format
        return x.to(self.torch_device, non_blocking=True, memory_format=fmt), y.to(self.torch_device, non_blocking=True)

    def autocast(self) -> Any:
        import torch

        return torch.autocast("cuda", dtype=torch.bfloat16) if self.cuda else contextlib.nullcontext()


def train_epoch(model: Any, optimizer: Any, batches: Iterable[tuple[Any, Any]], device: Device) -> Any:
    """One pass over ``batches``; float64 tensor [loss sum, correct, seen] of this rank (on the device)."""
    import torch
    import torch.nn.functional as F

    model.train()
    # Accumulated on the device (no per-step host sync), in as few tensor ops as possible.
    loss_sum = torch.zeros((), dtype=torch.float64, device=device.torch_device)
    correct = torch.zeros((), dtype=torch.int64, device=device.torch_device)
    seen = 0
    for x_cpu, y_cpu in batches:
        x, y = device.batch(x_cpu, y_cpu)
        optimizer.zero_grad(set_to_none=True)
        with device.autocast():
            logits = model(x)
            loss = F.cross_entropy(logits, y)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach() * len(y)
        correct += (logits.detach().argmax(1) == y).sum()
        seen += len(y)
    return torch.stack([loss_sum, correct.double(), torch.tensor(float(seen), dtype=torch.float64, device=device.torch_device)])


def count_correct(model: Any, batches: Iterable[tuple[Any, Any]], device: Device) -> Any:
    """float64 tensor [correct, seen] of ``model`` on ``batches`` (labels of -1 count as wrong)."""
    import torch

    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=device.torch_device)
    seen = 0
    with torch.no_grad(), device.autocast():
        for x_cpu, y_cpu in batches:
            x, y = device.batch(x_cpu, y_cpu)
            correct += (model(x).argmax(1) == y).sum()
            seen += len(y)
    return torch.stack([correct.double(), torch.tensor(float(seen), dtype=torch.float64, device=device.torch_device)])


def stop_reason(history: list[dict[str, Any]], spec: TrainSpec) -> str | None:
    """Why training ends after the last record of ``history``, or None to go on."""
    last = history[-1]
    best = max(history, key=lambda r: (r.get("val_accuracy", -1.0), -r["epoch"]))
    if "val_accuracy" in last and spec.patience and last["epoch"] - best["epoch"] >= spec.patience:
        return f"validation accuracy did not improve for {spec.patience} epochs (best {best['val_accuracy']:.4f} at epoch {best['epoch']})"
    if last["epoch"] >= spec.max_epochs:
        extra = "" if "val_accuracy" in last else "; no validation images, so no early stopping"
        return f"reached max_epochs {spec.max_epochs}{extra}"
    return None


@dataclass
class TrainOutcome:
    rank: int
    state_dict: dict[str, Any]
    history: list[dict[str, Any]]
    resumed_from_epoch: int
    result: dict[str, Any] | None = None  # rank 0 only


@dataclass
class Best:
    """The weights of the epoch with the best validation accuracy so far (they become the result)."""

    epoch: int = 0
    val_accuracy: float = -1.0
    state: dict[str, Any] | None = None

    def offer(self, record: dict[str, Any], model: Any) -> None:
        accuracy = record.get("val_accuracy", -1.0)
        # Without validation images every epoch is "best": the result is then the last one.
        if self.state is None or "val_accuracy" not in record or accuracy > self.val_accuracy:
            self.epoch, self.val_accuracy = record["epoch"], accuracy
            self.state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def run(spec: TrainSpec, rank: int = 0, world_size: int = 1, local_rank: int = 0, reporter: Reporter | None = None) -> TrainOutcome:
    """One rank's whole job: shards, model, resume, DDP training, and (rank 0) checkpoints, MLflow, result."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from ecosystem_assets.storage import open_store
    from ecosystem_assets.vision.model import build_model
    from ecosystem_assets.vision.shards import Preprocess, Reader, read_index

    reporter = reporter or NullReporter()
    if world_size != spec.world_size:
        raise RuntimeError(f"spec was made for {spec.world_size} rank(s) but {world_size} started")
    cuda = torch.cuda.is_available()
    device = Device(torch.device("cuda", local_rank) if cuda else torch.device("cpu"))
    store = open_store(spec.storage_url)
    index = read_index(store, spec.shards_key)
    if not sum(index.samples("train")):
        raise RuntimeError(f"the train split of dataset version {spec.dataset_version} is empty")
    reader = Reader(spec.storage_url, index, spec.batch_size, spec.loader_workers, spec.cache_dir, spec.cache_bytes, pin_memory=cuda)
    train_images = Preprocess(spec.image_size, spec.color_mode, spec.classes, augment=spec.augment, hflip=spec.hflip)
    eval_images = Preprocess(spec.image_size, spec.color_mode, spec.classes)

    model = build_model(len(spec.classes), spec.color_mode, spec.image_size, spec.seed).to(device.torch_device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=spec.learning_rate)
    scheduler = (
        torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=spec.lr_patience)
        if spec.lr_schedule == "plateau"
        else None
    )
    best = Best()
    # Rank 0 picks the checkpoint and every rank loads that one: ranks that each read the pointer
    # could resume different epochs and then wait forever in each other's all-reduce.
    checkpoint = load_checkpoint(store, spec, rank, world_size) if spec.resume else None
    history: list[dict[str, Any]] = []
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(checkpoint["scheduler"])
        history = list(checkpoint["history"])
        best = Best(**checkpoint["best"])
    start = len(history)
    reporter.log(
        f"rank {rank}/{world_size} on {device.torch_device} ({('nccl' if cuda else 'gloo') if world_size > 1 else 'single process'}): "
        f"{sum(index.samples('train'))} train / {sum(index.samples('val'))} val images in "
        f"{len(index.shards('train'))} / {len(index.shards('val'))} shards, {spec.loader_workers} loader workers; "
        + (f"resuming after epoch {start}" if start else "starting at epoch 1")
    )
    net = model
    if world_size > 1:
        net = DistributedDataParallel(model, device_ids=[local_rank] if cuda else None)

    def global_sum(stats: Any) -> list[float]:
        if world_size > 1:
            dist.all_reduce(stats)
        return [float(v) for v in stats.tolist()]

    with Tracker(spec, world_size, start) if rank == 0 else contextlib.nullcontext() as tracker:
        if tracker is not None:
            tracker.replay(history)
        where = {"seed": spec.seed, "rank": rank, "world_size": world_size}
        while not history or history[-1].get("stop") is None:
            epoch = len(history)
            started = time.perf_counter()
            batches = reader.batches("train", train_images, epoch=epoch, shuffle=True, equal_steps=True, **where)
            loss_sum, correct, seen = global_sum(train_epoch(net, optimizer, batches, device))
            elapsed = time.perf_counter() - started
            record: dict[str, Any] = {
                "epoch": epoch + 1,
                "epochs": spec.max_epochs,
                "loss": loss_sum / max(seen, 1),
                "train_accuracy": correct / max(seen, 1),
                "images_per_s": seen / elapsed,
                "seconds": elapsed,
                "learning_rate": optimizer.param_groups[0]["lr"],
            }
            val_correct, val_seen = global_sum(count_correct(model, reader.batches("val", eval_images, **where), device))
            if val_seen:
                record["val_accuracy"] = val_correct / val_seen
                if scheduler is not None:
                    scheduler.step(record["val_accuracy"])
            best.offer(record, model)
            history.append(record)
            record["stop"] = stop_reason(history, spec)
            if rank == 0:
                key = save_checkpoint(store, spec, model, optimizer, scheduler, history, best)
                reporter.epoch(record, key)
                if tracker is not None:
                    tracker.epoch(record)
        if best.state is not None:
            model.load_state_dict(best.state)  # the result is the best epoch's weights
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        result = None
        if rank == 0:
            model_uri = None
            if tracker is not None and tracker.active:
                example = next(iter(reader.batches("val" if sum(index.samples("val")) else "train", eval_images)))[0][:2]
                model_uri = tracker.log_model(model.cpu().float(), example.numpy())
            result = finish(store, spec, state, history, start, world_size, str(device.torch_device), model_uri, best.epoch)
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
