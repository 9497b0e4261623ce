"""Image input at scale (issue 10): figures on a generated ImageFolder in S3, moto server on loopback.

The S3 endpoint is moto's server, started by this script in its own process on a free loopback
port (so its request handling does not share this process's interpreter lock with the readers).
The ImageFolder is generated here: ``--images`` 64×64 RGB PNGs of random pixels (about 12 KB each,
they barely compress), spread over ``--classes`` folders, uploaded by 10 threads.

Figures (``--figure``, one function each, registered in FIGURES):

- ``versioning``: ``dataset.build_manifest`` from scratch (every object read), then after
  overwriting ``--changed`` (1 %) of the images with new pixels, again with the first manifest as
  the previous one (the way ``image_dataset`` runs it). Goals: the re-versioning reads ≤ 2 % of the
  bytes, in ≤ 10 % of the first versioning's time. The bucket is unversioned by default: moto's
  ListObjectVersions deep-copies every stored version on every page (quadratic in the object count),
  which would measure moto; ``--versioned`` runs it anyway.
- ``streaming``: the ImageFolder's manifest is built and its usable images packed into WebDataset
  shards in an S3 storage bucket (``shards.pack``; pack time and shard count/bytes reported), then
  one training rank (world_size 1, SmallCNN, 32×32 RGB, batch 32, ``train.train_epoch``) trains
  ``--epochs`` epochs of the train split (70 % of the images) two ways in the same run: (a) streaming
  shards from S3 through ``shards.Reader`` with ``--loader-workers`` DataLoader workers (decode,
  resize, augment), a fresh temporary shard cache each round that holds CACHE_SHARDS of the largest
  train shards, not the whole set; (b) the same images preloaded as in-memory tensors
  (``dataset.load_split``; its load time is reported apart, not counted), batches cut from a random
  permutation, no augmentation. Same initial weights; one torch intra-op thread in the trainer on
  both sides (2 cores: one for the trainer, one for the loader worker; more threads than free cores
  makes OpenMP barriers dominate). The sides alternate over ``--rounds`` and medians are reported,
  so load on the machine hits both alike; each side also reports how long the trainer waited for
  its next batch. Goal: streaming ≥ 0.8 × in-memory images/s.
- ``rss``: peak RSS of one training rank streaming one epoch of the train split from S3 shards
  (same setup as streaming (a)) with ``--images`` // 5 vs ``--images`` images (10,000 vs 50,000 by
  default). ``--images`` are generated once; the small set is the first ``--images`` // 5 of them
  (every class; same seeds, so the same bytes) generated again under another prefix: a server-side
  CopyObject of them was no faster on moto, whose per-request cost dominates both. Each rank is a
  fresh subprocess (``--rss-child``) that reports its ``getrusage`` maxima: RUSAGE_SELF for the
  trainer, RUSAGE_CHILDREN for its loader workers (the largest one; they are forked, so pages shared
  with the trainer count in both and the sum is an upper bound). Goal: the summed peak grows ≤ 10 %.

    python bench/vision_input.py --figure versioning [--images 50000] [--changed 0.01] [--workers 8] [--versioned]
    python bench/vision_input.py --figure streaming [--images 50000] [--epochs 1] [--rounds 2] [--loader-workers 1]
    python bench/vision_input.py --figure rss [--images 50000] [--loader-workers 1]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import multiprocessing
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

# The training rank of the streaming and rss figures: 32×32 RGB, batch 32, SmallCNN, Adam at the
# TrainSpec default rate.
IMAGE_SIZE, COLOR_MODE, BATCH_SIZE, LEARNING_RATE = 32, "RGB", 32, 2e-3
# The streaming shard cache holds this many of the largest train shards: a few, never the whole set.
CACHE_SHARDS = 4


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def moto_s3() -> Iterator[str]:
    """moto's S3 server in a subprocess on loopback; AWS_* variables point boto3 (and the project's
    S3 client factory) at it while the block runs. Yields the endpoint URL."""
    import urllib.request

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    try:
        deadline = time.monotonic() + 60
        while True:  # poll until the server answers (it imports moto first: seconds)
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not start on {endpoint} (exit code {server.poll()})") from None
                time.sleep(0.2)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=30)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def png(seed: int) -> bytes:
    """A 64×64 RGB PNG of random pixels, different for every seed."""
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def image_key(i: int, classes: int) -> str:
    return f"class-{i % classes:02d}/img-{i:06d}.png"


def generate_image_folder(url: str, images: int, classes: int, first_seed: int = 0, indices: range | list[int] | None = None) -> int:
    """Write ``<class>/<img>.png`` for ``indices`` (default: all ``images``) under the S3 ``url``; returns bytes written."""
    from ecosystem_assets.storage import open_store

    store = open_store(url)
    store.client  # noqa: B018 — one client, created before the threads share it (boto3 clients are thread-safe)

    def put(i: int) -> int:
        data = png(first_seed + i)
        store.write_bytes(image_key(i, classes), data)
        return len(data)

    with ThreadPoolExecutor(max_workers=10) as pool:  # botocore keeps 10 connections per client
        return sum(pool.map(put, indices if indices is not None else range(images), chunksize=64))


def create_bucket(endpoint: str, versioned: bool) -> str:
    import boto3

    name = f"bench-{uuid.uuid4().hex[:10]}"
    s3 = boto3.client("s3", endpoint_url=endpoint)
    s3.create_bucket(Bucket=name)
    if versioned:
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


def goal(label: str, ratio: float, limit: float, unit: str = "%", at_least: bool = False) -> str:
    """One goal line: measured ratio against its limit (a ceiling, or a floor with ``at_least``), met or NOT met."""
    scale = 100 if unit == "%" else 1
    status = "met" if (ratio >= limit if at_least else ratio <= limit) else "NOT met"
    return f"  {label:<40} {ratio * scale:6.2f} {unit}   goal {'≥' if at_least else '≤'} {limit * scale:g} {unit}   {status}"


def image_folder(endpoint: str, images: int, classes: int, versioned: bool = False) -> str:
    """A new bucket holding a generated ImageFolder of ``images`` PNGs; returns its URL (generation time printed)."""
    bucket = create_bucket(endpoint, versioned)
    url = f"s3://{bucket}/images"
    started = time.perf_counter()
    written = generate_image_folder(url, images, classes)
    print(
        f"generated {images:,} images ({written / 1e6:.1f} MB) in {url} "
        f"({'versioned' if versioned else 'unversioned'} bucket, moto on {endpoint}) in {time.perf_counter() - started:.0f} s",
        flush=True,
    )
    return url


def figure_versioning(args: argparse.Namespace) -> None:
    """First versioning vs re-versioning after changing ``args.changed`` of the images."""
    from ecosystem_assets.vision import dataset as ds

    with moto_s3() as endpoint:
        url = image_folder(endpoint, args.images, args.classes, args.versioned)
        source = ds.open_source(url)

        started = time.perf_counter()
        first = ds.build_manifest(source, workers=args.workers)
        first_s = time.perf_counter() - started
        total = int(first.frame["bytes"].sum())
        print(f"  first versioning: {first_s:8.1f} s, read {first.bytes_read / 1e6:8.1f} MB ({first.images_hashed:,} images)", flush=True)

        count = max(1, round(args.images * args.changed))
        step = args.images / count
        changed = sorted({int(i * step) for i in range(count)})
        generate_image_folder(url, args.images, args.classes, first_seed=10_000_000, indices=changed)  # new pixels, same keys

        started = time.perf_counter()
        listed = ds.list_image_objects(source)
        list_s = time.perf_counter() - started
        started = time.perf_counter()
        again = ds.build_manifest(source, first.frame, workers=args.workers)
        again_s = time.perf_counter() - started
        print(
            f"  re-versioning after changing {len(changed):,} images ({len(changed) / args.images:.1%}): "
            f"{again_s:8.1f} s, read {again.bytes_read / 1e6:8.1f} MB ({again.images_hashed:,} images; "
            f"listing {len(listed):,} objects alone: {list_s:.1f} s)",
            flush=True,
        )
        assert again.images_hashed == len(changed), (again.images_hashed, len(changed))
        assert again.version != first.version and len(again.frame) == len(first.frame) == args.images
        print(goal("bytes read by the re-versioning / total", again.bytes_read / total, 0.02))
        print(goal("re-versioning time / first versioning's", again_s / first_s, 0.10))


# ---- streaming and rss: one training rank on shards ---------------------------------------------


@dataclass(frozen=True)
class Sharded:
    """An ImageFolder versioned and packed: what a training rank and the in-memory baseline read."""

    source_url: str
    storage_url: str
    frame: Any  # manifest rows
    index: Any  # shards.ShardIndex


def shard_folder(url: str, storage_url: str, workers: int) -> Sharded:
    """ImageFolder at ``url`` → manifest → shards packed into ``storage_url``; times and sizes printed."""
    from ecosystem_assets.storage import open_store
    from ecosystem_assets.vision import dataset as ds
    from ecosystem_assets.vision import shards

    source = ds.open_source(url)
    started = time.perf_counter()
    manifest = ds.build_manifest(source, workers=workers)
    print(f"  manifest of {url}: {len(manifest.usable):,} usable images in {time.perf_counter() - started:.1f} s", flush=True)
    started = time.perf_counter()
    index, reused = shards.pack(open_store(storage_url), source, manifest.frame, manifest.version, workers=workers)
    assert not reused, "a fresh storage bucket holds no shards yet"
    sizes = ", ".join(
        f"{split} {len(index.shards(split))} shards / {sum(index.samples(split)):,} images / {sum(s['bytes'] for s in index.splits[split]) / 1e6:.1f} MB"
        for split in shards.SPLITS
    )
    print(f"  packed in {time.perf_counter() - started:.1f} s into {storage_url}: {sizes}", flush=True)
    return Sharded(url, storage_url, manifest.frame, index)


def cache_bytes(index: Any) -> int:
    """Shard cache size: CACHE_SHARDS of the largest train shards, checked to be less than the whole train split."""
    sizes = [int(s["bytes"]) for s in index.splits["train"]]
    size = CACHE_SHARDS * max(sizes)
    if size >= sum(sizes):
        raise SystemExit(f"train split too small for a partial cache ({len(sizes)} shards, {sum(sizes):,} bytes): use more --images")
    return size


def new_trainer(classes: int) -> tuple[Any, Any]:
    """SmallCNN with the fixed initial weights (seed 0) and its optimizer: identical on every side and round."""
    import torch

    from ecosystem_assets.vision.model import build_model

    model = build_model(classes, COLOR_MODE, IMAGE_SIZE, seed=0)
    return model, torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)


@dataclass
class Timed:
    """What one side of a round measured."""

    images: int = 0
    seconds: float = 0.0
    waiting: float = 0.0  # of ``seconds``, the trainer blocked on the next batch (loader start and stalls included)

    @property
    def rate(self) -> float:
        return self.images / self.seconds

    def __str__(self) -> str:
        return f"{self.images:,} images in {self.seconds:.1f} s ({self.rate:,.0f} images/s; waiting for batches {self.waiting:.1f} s)"


def train_timed(classes: int, epochs: int, epoch_batches: Callable[[int], Any]) -> Timed:
    """``train.train_epoch`` over ``epoch_batches(e)`` for each epoch, read back per epoch as the trainer does."""
    import torch

    from ecosystem_assets.vision import train

    model, optimizer = new_trainer(classes)
    device = train.Device(torch.device("cpu"))
    timed = Timed()

    def waited(batches: Any) -> Iterator[Any]:  # time spent in next(): the batch was not ready
        iterator = iter(batches)
        while True:
            started = time.perf_counter()
            batch = next(iterator, None)
            timed.waiting += time.perf_counter() - started
            if batch is None:
                return
            yield batch

    for epoch in range(epochs):
        started = time.perf_counter()
        batches = epoch_batches(epoch)
        _, _, count = train.train_epoch(model, optimizer, waited(batches), device).tolist()
        timed.seconds += time.perf_counter() - started
        del batches  # a streamed epoch's DataLoader workers are shut down here, outside the timing (as in the trainer)
        timed.images += int(count)
    return timed


def stream_epochs(storage_url: str, index: Any, epochs: int, loader_workers: int, start: str | None = "forkserver") -> Timed:
    """``epochs`` of the train split streamed from the shards, fresh temporary cache; ``start``: how
    loader workers start (the trainer's fork server by default)."""
    from ecosystem_assets.vision import shards

    preprocess = shards.Preprocess(IMAGE_SIZE, COLOR_MODE, index.classes, augment=True)
    with tempfile.TemporaryDirectory(prefix="bench-shard-cache-") as cache:
        reader = shards.Reader(
            storage_url,
            index,
            BATCH_SIZE,
            loader_workers=loader_workers,
            cache_dir=cache,
            cache_bytes=cache_bytes(index),
            multiprocessing_context=start,
        )
        return train_timed(
            len(index.classes), epochs, lambda e: reader.batches("train", preprocess, epoch=e, shuffle=True, equal_steps=True)
        )


def memory_epochs(x: Any, y: Any, classes: int, epochs: int) -> Timed:
    """``epochs`` over in-memory tensors, each a random permutation cut into batches."""
    import torch

    generator = torch.Generator().manual_seed(0)

    def batches(_epoch: int) -> Iterator[tuple[Any, Any]]:
        order = torch.randperm(len(x), generator=generator)
        for begin in range(0, len(x), BATCH_SIZE):
            batch = order[begin : begin + BATCH_SIZE]
            yield x[batch], y[batch]

    return train_timed(classes, epochs, batches)


def figure_streaming(args: argparse.Namespace) -> None:
    """Training images/s streaming shards from S3 vs the same images as in-memory tensors, alternating rounds."""
    import torch

    from ecosystem_assets.vision import dataset as ds

    torch.set_num_threads(1)  # the trainer's one core; the loader worker takes the other
    with moto_s3() as endpoint:
        url = image_folder(endpoint, args.images, args.classes)
        data = shard_folder(url, f"s3://{create_bucket(endpoint, False)}/artifacts", args.workers)
        classes = data.index.classes
        started = time.perf_counter()
        x, y = ds.load_split(ds.open_source(url), data.frame, "train", classes, IMAGE_SIZE, COLOR_MODE)
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        print(
            f"  in-memory baseline: {len(x):,} train images loaded and decoded to {IMAGE_SIZE}×{IMAGE_SIZE} {COLOR_MODE} "
            f"({x.nbytes / 1e6:.0f} MB of float32) in {time.perf_counter() - started:.1f} s (not counted)",
            flush=True,
        )
        streamed, in_memory = [], []
        for number in range(1, args.rounds + 1):
            # Sides alternate, and which goes first flips every round.
            if number % 2:
                stream = stream_epochs(data.storage_url, data.index, args.epochs, args.loader_workers)
                memory = memory_epochs(x, y, len(classes), args.epochs)
            else:
                memory = memory_epochs(x, y, len(classes), args.epochs)
                stream = stream_epochs(data.storage_url, data.index, args.epochs, args.loader_workers)
            streamed.append(stream.rate)
            in_memory.append(memory.rate)
            print(f"  round {number}: streaming {stream}\n           in-memory {memory}", flush=True)
    cache = cache_bytes(data.index)
    train_bytes = sum(s["bytes"] for s in data.index.splits["train"])
    s, m = statistics.median(streamed), statistics.median(in_memory)
    print(
        f"  one rank, {args.epochs} epoch(s) of the train split, batch {BATCH_SIZE}, {IMAGE_SIZE}×{IMAGE_SIZE} {COLOR_MODE}, "
        f"{torch.get_num_threads()} trainer thread, median of {args.rounds} rounds"
    )
    print(
        f"  streaming from S3 shards ({args.loader_workers} loader worker(s), augmentation on, cache {cache / 1e6:.1f} MB "
        f"= {CACHE_SHARDS} × the largest train shard, of {train_bytes / 1e6:.1f} MB): {s:8,.0f} images/s"
    )
    print(f"  in-memory tensors (no augmentation):          {m:8,.0f} images/s")
    print(goal("streaming / in-memory images/s", s / m, 0.8, unit="×", at_least=True))


def rss_child(spec: dict[str, Any]) -> None:
    """One training rank in this process: one streamed epoch, then a JSON line of its peaks (KiB)."""
    import torch

    from ecosystem_assets.storage import open_store
    from ecosystem_assets.vision import shards

    torch.set_num_threads(1)
    index = shards.read_index(open_store(spec["storage_url"]), spec["index_key"])
    # Workers forked from this process (not the trainer's fork server, whose children this process
    # never waits for): RUSAGE_CHILDREN then covers them, and pages shared with the trainer count in
    # both, so the sum stays an upper bound.
    timed = stream_epochs(spec["storage_url"], index, 1, spec["loader_workers"], start=None)
    gc.collect()  # the epoch's DataLoader is gone and its workers joined: RUSAGE_CHILDREN covers them
    if multiprocessing.active_children():
        raise RuntimeError(f"loader workers still running: {multiprocessing.active_children()}")
    trainer = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"images": timed.images, "seconds": timed.seconds, "trainer_kib": trainer, "workers_kib": workers}))


def rank_peak_rss(data: Sharded, loader_workers: int) -> dict[str, Any]:
    """Run ``rss_child`` on ``data`` in a fresh interpreter; its measurements."""
    spec = {"storage_url": data.storage_url, "index_key": data.index.key, "loader_workers": loader_workers}
    done = subprocess.run([sys.executable, __file__, "--rss-child", json.dumps(spec)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"rss child failed (exit code {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def figure_rss(args: argparse.Namespace) -> None:
    """Peak RSS of one streaming training rank on ``args.images`` // 5 vs ``args.images`` images."""
    small = args.images // 5
    peaks: dict[int, dict[str, Any]] = {}
    with moto_s3() as endpoint:
        url = image_folder(endpoint, args.images, args.classes)
        small_url = f"{url}-first-{small}"
        started = time.perf_counter()
        generate_image_folder(small_url, small, args.classes)  # same seeds: the same bytes as the first `small` images
        print(f"generated the first {small:,} of them again under {small_url} in {time.perf_counter() - started:.0f} s", flush=True)
        storage_url = f"s3://{create_bucket(endpoint, False)}/artifacts"
        data = {count: shard_folder(folder, storage_url, args.workers) for count, folder in ((small, small_url), (args.images, url))}
        for count, sharded in data.items():
            peaks[count] = peak = rank_peak_rss(sharded, args.loader_workers)
            peak["total_kib"] = peak["trainer_kib"] + peak["workers_kib"]
            print(
                f"  {count:>7,} images ({peak['images']:,} train images streamed in {peak['seconds']:.1f} s, cache "
                f"{cache_bytes(sharded.index) / 1e6:.1f} MB): peak RSS trainer {peak['trainer_kib'] / 1024:7.1f} MiB, "
                f"largest of {args.loader_workers} loader worker(s) {peak['workers_kib'] / 1024:7.1f} MiB, "
                f"sum {peak['total_kib'] / 1024:7.1f} MiB",
                flush=True,
            )
    for part in ("trainer_kib", "workers_kib"):
        print(
            f"  growth {small:,} → {args.images:,} images, {part.split('_')[0]}: {peaks[args.images][part] / peaks[small][part] - 1:+.2%}"
        )
    print(goal(f"peak RSS growth {small:,} → {args.images:,} (sum)", peaks[args.images]["total_kib"] / peaks[small]["total_kib"] - 1, 0.10))


FIGURES: dict[str, Callable[[argparse.Namespace], None]] = {
    "versioning": figure_versioning,
    "streaming": figure_streaming,
    "rss": figure_rss,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--figure", choices=sorted(FIGURES), action="append", help="figure(s) to produce; default: all")
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--changed", type=float, default=0.01, help="fraction of images overwritten before re-versioning")
    parser.add_argument(
        "--workers",
        type=int,
        default=8,
        help="reader threads of the manifest and of shard packing (dataset.HASH_WORKERS, shards.READ_WORKERS in the assets)",
    )
    parser.add_argument("--versioned", action="store_true", help="versioned bucket (moto lists versions in quadratic time)")
    parser.add_argument("--epochs", type=int, default=1, help="streaming: epochs per side and round")
    parser.add_argument("--rounds", type=int, default=2, help="streaming: rounds alternating the two sides (medians reported)")
    parser.add_argument("--loader-workers", type=int, default=1, help="streaming, rss: DataLoader worker processes of the rank")
    parser.add_argument("--rss-child", help=argparse.SUPPRESS)  # internal: one rank of the rss figure, spec as JSON
    args = parser.parse_args()
    if args.rss_child:
        rss_child(json.loads(args.rss_child))
        return
    for name in args.figure or sorted(FIGURES):
        print(f"== {name}", flush=True)
        FIGURES[name](args)


if __name__ == "__main__":
    main()
