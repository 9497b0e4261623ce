"""Multi-node DDP: two torchrun agents (2 nodes × 1 process, c10d rendezvous on loopback) train the
same weights as one agent with two processes (1 node × 2), on the same global batch and seed.

Both commands come from `vision/launch.py`, the one builder that the local and the PyTorchJob
backends use.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from ecosystem_assets_tests.servers.ports import free_port
from ecosystem_assets_tests.vision.conftest import write_image_folder

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 120
# Expected difference: none. Each rank computes the same batches with the same code on one thread
# (OMP_NUM_THREADS=1 in both layouts), and gloo's allreduce of two ranks adds two gradients,
# which is commutative, so neither the node layout nor which process became rank 0 can change a
# bit. The tolerance only absorbs a different summation order, should gloo ever pick one
# (float32: ~1e-7 relative per step); it is far below what training moves every weight (> 1e-4 in every tensor,
# asserted), so a rank that trained on other data, or alone, would fail.
ATOL = 1e-6


def _start(command: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    with log.open("w") as out:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)


def _finish(process: subprocess.Popen, log: Path) -> str:
    try:
        process.wait(timeout=TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = log.read_text()
    assert process.returncode == 0, f"{process.args[3:6]} exited {process.returncode}:\n{text[-4000:]}"
    return text


def _weights(storage: Path, spec) -> dict:
    import torch

    return torch.load(io.BytesIO((storage / spec.output_key("model.pt")).read_bytes()), weights_only=True)["model"]


def _spec(images: Path, storage: Path):
    """A TrainSpec on a small ImageFolder (3 classes × 40 8×8 images), its shards in ``storage``.

    Augmentation, the learning-rate schedule and loader workers on: the layouts must agree on all of it."""
    from ecosystem_assets.storage import open_store
    from ecosystem_assets.vision import dataset as ds
    from ecosystem_assets.vision.shards import pack
    from ecosystem_assets.vision.train import TrainSpec

    source = open_store(str(images))
    manifest = ds.build_manifest(source)
    index, _ = pack(open_store(str(storage)), source, manifest.frame, manifest.version)
    return TrainSpec(
        storage_url=str(storage),
        shards_key=index.key,
        dataset_version=manifest.version,
        classes=tuple(manifest.classes),
        max_epochs=2,
        patience=1,
        loader_workers=1,
        batch_size=8,  # per rank: a global batch of 16 in both layouts
        learning_rate=1e-3,
        image_size=8,
        world_size=2,
        resume=False,
    )


@pytest.mark.timeout(300)
def test_two_nodes_of_one_process_equal_one_node_of_two(tmp_path):
    from ecosystem_assets.storage import open_store
    from ecosystem_assets.vision import launch
    from ecosystem_assets.vision.model import build_model

    images = tmp_path / "images"
    write_image_folder(open_store(str(images)), {"a": 40, "b": 40, "c": 40})
    # Separate stores, so neither layout resumes from the other's checkpoints.
    one_node, two_nodes = tmp_path / "one-node", tmp_path / "two-nodes"
    spec_one, spec_two = _spec(images, one_node), _spec(images, two_nodes)
    assert spec_one.fingerprint == spec_two.fingerprint  # the same training, only stored apart

    # 1 node × 2 processes (torchrun --standalone), and 2 nodes × 1 process (c10d at a free port),
    # all three agents at once.
    endpoint, rdzv_id = f"127.0.0.1:{free_port()}", uuid.uuid4().hex
    single = _start(launch.torchrun_command(spec_one.to_json(), nproc_per_node=2), tmp_path / "single.log")
    nodes = [
        _start(
            launch.torchrun_command(spec_two.to_json(), nproc_per_node=1, nnodes=2, rdzv_endpoint=endpoint, rdzv_id=rdzv_id),
            tmp_path / f"node-{i}.log",
        )
        for i in range(2)
    ]
    assert "--standalone" in single.args and "--rdzv-backend=c10d" in nodes[0].args and "--nnodes=2" in nodes[0].args
    node_logs = [_finish(process, tmp_path / f"node-{i}.log") for i, process in enumerate(nodes)]
    _finish(single, tmp_path / "single.log")

    # The two agents formed one world of two: exactly one of them ran rank 0 (which prints), the
    # other rank 1 (quiet), and the result records world size 2.
    assert sum("rank 0/2 on cpu (gloo)" in text for text in node_logs) == 1, node_logs
    for storage, spec in ((one_node, spec_one), (two_nodes, spec_two)):
        result = json.loads((storage / spec.output_key("result.json")).read_text())
        assert result["world_size"] == 2 and len(result["history"]) == 2

    expected, got = _weights(one_node, spec_one), _weights(two_nodes, spec_two)
    initial = build_model(len(spec_one.classes), spec_one.color_mode, spec_one.image_size, spec_one.seed).state_dict()
    assert expected.keys() == got.keys()
    for name, value in expected.items():
        if value.is_floating_point():
            assert (value - initial[name]).abs().max().item() > 1e-4, f"{name} barely trained; the comparison would prove nothing"
        difference = (got[name].double() - value.double()).abs().max().item()
        assert difference <= ATOL, f"{name}: 2 nodes × 1 differs from 1 node × 2 by {difference:.3g}"
    print(f"max |Δweight| between the layouts: {max((got[n].double() - v.double()).abs().max().item() for n, v in expected.items()):.3g}")
