"""Training: two-rank DDP (gloo) equals one process on the global batch; a killed run resumes."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest

from ecosystem_assets_tests.vision.conftest import digits_spec, two_local_ranks


def _reference_training(spec, world_size: int) -> dict:
    """One process, stepping on what every DDP rank reads at each step (same shards, same order, same
    augmentation), with the loss averaged over the ranks' batch means as DDP averages their gradients."""
    import torch
    import torch.nn.functional as F

    from ecosystem_assets.storage import open_store
    from ecosystem_assets.vision.model import build_model
    from ecosystem_assets.vision.shards import Preprocess, Reader, read_index

    reader = Reader(spec.storage_url, read_index(open_store(spec.storage_url), spec.shards_key), spec.batch_size, spec.loader_workers)
    images = Preprocess(spec.image_size, spec.color_mode, spec.classes, augment=spec.augment, hflip=spec.hflip)
    model = build_model(len(spec.classes), spec.color_mode, spec.image_size, spec.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=spec.learning_rate)
    steps = 0
    for epoch in range(spec.max_epochs):
        ranks = [
            reader.batches("train", images, epoch=epoch, seed=spec.seed, rank=r, world_size=world_size, shuffle=True, equal_steps=True)
            for r in range(world_size)
        ]
        for batches in zip(*ranks, strict=True):
            optimizer.zero_grad()
            (sum(F.cross_entropy(model(x), y) for x, y in batches) / world_size).backward()
            optimizer.step()
            steps += 1
    assert steps > 2 * 10, steps  # both epochs took many steps: the comparison below means something
    return model.state_dict()


def test_two_rank_ddp_equals_single_process_on_the_global_batch(digits_store, tmp_path, one_torch_thread):
    import torch
    from torch.distributed.launcher.api import elastic_launch

    from ecosystem_assets.vision import train

    spec = digits_spec(digits_store, tmp_path / "storage", batch_size=16, world_size=2, learning_rate=1e-3, augment=True)
    config = two_local_ranks()
    outcomes = elastic_launch(config, train.worker)(spec.to_json())

    assert sorted(outcomes) == [0, 1]
    rank0, rank1 = outcomes[0], outcomes[1]
    assert rank0.state_dict.keys() == rank1.state_dict.keys()
    for name in rank0.state_dict:
        assert torch.equal(rank0.state_dict[name], rank1.state_dict[name]), f"ranks disagree on {name}"
    # The loss and validation accuracy each rank reports are the all-reduced global ones, hence identical too.
    assert [(r["loss"], r["val_accuracy"]) for r in rank0.history] == [(r["loss"], r["val_accuracy"]) for r in rank1.history]
    assert rank0.history[-1]["stop"] == "reached max_epochs 2"
    # patience=0: the result is the last epoch's weights only if it was the best; compare the last epoch's checkpoint.
    import io

    last = torch.load(io.BytesIO((tmp_path / "storage" / spec.checkpoint_prefix / "epoch-0002.pt").read_bytes()), weights_only=True)

    reference = _reference_training(spec, world_size=2)
    initial = _initial_weights(spec)
    for name, value in reference.items():
        moved = (value - initial[name]).abs().max().item()
        assert moved > 1e-3, f"{name} barely trained; the comparison would prove nothing"
        assert torch.allclose(last["model"][name], value, atol=2e-5, rtol=1e-4), f"{name} differs from single-process training"

    # Rank 0 published a result and a checkpoint per epoch.
    assert rank0.result is not None and rank1.result is None
    assert rank0.result["world_size"] == 2 and len(rank0.result["history"]) == 2
    latest = json.loads((tmp_path / "storage" / spec.checkpoint_prefix / "latest.json").read_text())
    assert latest["epoch"] == 2


def _wait_for_line(process: subprocess.Popen, prefix: str, timeout: float) -> str:
    """The process's output up to its first line starting with ``prefix``; fails with the output
    seen if the process exits first or prints no such line within ``timeout`` seconds."""
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"no line starting {prefix!r} within {timeout:g} s; output: {''.join(seen)[-3000:]}") from None
        if line is None:
            raise AssertionError(f"exited ({process.wait()}) before a line starting {prefix!r}; output: {''.join(seen)[-3000:]}")
        seen.append(line)
        if line.startswith(prefix):
            return "".join(seen)


def _initial_weights(spec) -> dict:
    from ecosystem_assets.vision.model import build_model

    return build_model(len(spec.classes), spec.color_mode, spec.image_size, spec.seed).state_dict()


def test_killed_training_resumes_from_its_last_checkpoint(digits_store, tmp_path, one_torch_thread):
    import io

    import torch

    from ecosystem_assets.vision import train

    epochs = 6
    # Everything stateful on: augmentation, the LR schedule, early stopping, loader workers.
    spec = digits_spec(
        digits_store,
        tmp_path / "storage",
        max_epochs=epochs,
        patience=3,
        lr_schedule="plateau",
        lr_patience=1,
        augment=True,
        loader_workers=1,
        learning_rate=1e-3,
    )
    command = [sys.executable, "-m", "ecosystem_assets.vision.train", "--spec", spec.to_json()]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    # Run 1: SIGKILL as soon as the first epoch's checkpoint is announced.
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        output = _wait_for_line(first, f"epoch 1/{epochs}", timeout=180)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == -signal.SIGKILL, output
    checkpoints = tmp_path / "storage" / spec.checkpoint_prefix
    done = json.loads((checkpoints / "latest.json").read_text())["epoch"]
    assert 1 <= done < epochs  # killed mid-way (later epochs may have slipped in before the signal landed)
    assert not (tmp_path / "storage" / spec.prefix / "model.pt").exists()

    # Run 2: same spec → continues after the last checkpoint and trains only the remaining epochs.
    second = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"resuming after epoch {done}" in second.stdout
    trained = [int(line.split()[1].split("/")[0]) for line in second.stdout.splitlines() if line.startswith("epoch ")]
    result = json.loads((tmp_path / "storage" / spec.prefix / "result.json").read_text())
    stopped = len(result["history"])  # max_epochs, or earlier when patience ran out
    assert trained == list(range(done + 1, stopped + 1))
    assert result["resumed_from_epoch"] == done and result["stop_reason"] == result["history"][-1]["stop"] is not None
    resumed = torch.load(io.BytesIO((tmp_path / "storage" / spec.prefix / "model.pt").read_bytes()), weights_only=True)["model"]

    # The interruption changed nothing: same weights as one uninterrupted run.
    # One thread here as in the subprocesses (OMP_NUM_THREADS=1): the same reduction order.
    uninterrupted = train.run(train.TrainSpec.from_json(json.dumps({**json.loads(spec.to_json()), "resume": False})))
    assert uninterrupted.resumed_from_epoch == 0
    figures = ("epoch", "loss", "train_accuracy", "val_accuracy", "learning_rate", "stop")
    assert [[r[f] for f in figures] for r in uninterrupted.history] == [[r[f] for f in figures] for r in result["history"]]
    for name, value in uninterrupted.state_dict.items():
        assert torch.allclose(resumed[name], value, atol=1e-6), f"{name} differs after resume"


def test_spec_fingerprint_separates_runs_that_train_differently(digits_store):
    base = digits_spec(digits_store)
    assert base.fingerprint == digits_spec(digits_store).fingerprint
    assert base.fingerprint == digits_spec(digits_store, resume=False, mlflow_run_id="x", run_group="x").fingerprint  # bookkeeping only
    changes = (
        {"max_epochs": 9},
        {"patience": 2},
        {"seed": 1},
        {"world_size": 2},
        {"dataset_version": "other"},
        {"learning_rate": 0.1},
        {"augment": True},
        {"loader_workers": 3},
        {"lr_schedule": "plateau"},
    )
    for change in changes:
        assert digits_spec(digits_store, **change).fingerprint != base.fingerprint, change
    with pytest.raises(ValueError, match="multiple of 4"):
        from ecosystem_assets.vision.model import build_model

        build_model(10, "L", 10, 0)


def test_rgb_mode_trains_a_three_channel_network(digits_store, tmp_path, one_torch_thread):
    from ecosystem_assets.vision import train

    spec = digits_spec(digits_store, tmp_path / "storage", max_epochs=1, color_mode="RGB", image_size=12)
    outcome = train.run(spec)
    assert outcome.state_dict["features.0.weight"].shape[1] == 3  # the first convolution reads three channels
    assert outcome.result["color_mode"] == "RGB" and outcome.history[0]["train_accuracy"] > 0.3
