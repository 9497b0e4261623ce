"""Vision fixtures: ImageFolder sets written through a real Store, the vision code location, digits."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest


def png_bytes(seed: int, size: tuple[int, int] = (8, 8), mode: str = "L") -> bytes:
    """A distinct image per seed (random pixels), encoded as PNG."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    channels = {"L": (), "RGB": (3,), "RGBA": (4,)}[mode]
    pixels = rng.integers(0, 256, size=(size[1], size[0], *channels), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


def write_image_folder(store, classes: dict[str, int], first_seed: int = 0) -> list[str]:
    """``<class>/img-NNN.png`` for each class; returns the keys written."""
    keys, seed = [], first_seed
    for label, count in classes.items():
        for i in range(count):
            key = f"{label}/img-{i:03d}.png"
            store.write_bytes(key, png_bytes(seed))
            keys.append(key)
            seed += 1
    return keys


@pytest.fixture
def one_torch_thread():
    """Torch work inside pytest on one thread: on a small shared machine more threads than free
    cores make OpenMP barriers dominate, and a fixed count keeps float reductions comparable."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def versioned_bucket(s3_bucket: str, s3_endpoint: str) -> str:
    import boto3

    boto3.client("s3", endpoint_url=s3_endpoint).put_bucket_versioning(Bucket=s3_bucket, VersioningConfiguration={"Status": "Enabled"})
    return s3_bucket


@pytest.fixture
def vision_defs(ecosystem_env) -> Callable[[], object]:
    """Builds the whole code location (with its real resource wiring) from the current env."""
    from ecosystem_assets.project import build_definitions
    from ecosystem_assets.settings import Settings

    return lambda: build_definitions(Settings.from_env())


class DigitsStore(NamedTuple):
    store: Any  # a LocalStore
    manifest: Any  # dataset.Manifest, written at manifest.key in store
    shards: Any  # shards.ShardIndex of the manifest's version, in store


@pytest.fixture(scope="session")
def digits_store(tmp_path_factory: pytest.TempPathFactory) -> DigitsStore:
    """Local storage holding the digits default and its manifest (shared: it is never modified)."""
    from ecosystem_assets.storage import open_store
    from ecosystem_assets.vision import dataset as ds
    from ecosystem_assets.vision.shards import pack

    store = open_store(str(tmp_path_factory.mktemp("digits-storage")))
    source = ds.ensure_digits(store)
    manifest = ds.build_manifest(source)
    ds.write_manifest(store, manifest)
    index, _ = pack(store, source, manifest.frame, manifest.version)
    return DigitsStore(store, manifest, index)


def digits_spec(digits: DigitsStore, storage_root: Path | None = None, **overrides):
    """A TrainSpec on the digits shards (fixed epochs, no augmentation, in-process loading unless
    overridden); ``storage_root`` redirects checkpoints to a fresh store holding a copy of the shards."""
    import shutil

    from ecosystem_assets.vision.train import TrainSpec

    store, manifest, index = digits
    storage_url = store.url
    if storage_root is not None:
        for folder in ("manifests", "shards"):
            shutil.copytree(Path(store.url) / "datasets" / folder, storage_root / "datasets" / folder)
        storage_url = str(storage_root)
    values = dict(
        storage_url=storage_url,
        shards_key=index.key,
        dataset_version=manifest.version,
        classes=tuple(manifest.classes),
        image_size=8,
        batch_size=32,
        max_epochs=2,
        patience=0,
        lr_schedule="constant",
        augment=False,
        loader_workers=0,
    )
    return TrainSpec(**{**values, **overrides})


def two_local_ranks() -> Any:
    """torchrun's launch config for 2 processes on this machine (c10d rendezvous on a free loopback
    port, spawned, no restarts): ``elastic_launch(two_local_ranks(), fn)(*args)``."""
    import uuid

    from torch.distributed.launcher.api import LaunchConfig

    return LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=2,
        run_id=uuid.uuid4().hex,
        rdzv_backend="c10d",
        rdzv_endpoint="127.0.0.1:0",
        max_restarts=0,
        monitor_interval=0.1,
        start_method="spawn",
    )
