"""Training shards: a dataset version's usable images packed once into WebDataset tar shards in
storage, and streamed back per rank and per DataLoader worker.

Layout (immutable, keyed by the dataset version)::

    datasets/shards/<version>/train/shard-00000.tar … val/… test/…
    datasets/shards/<version>/index.json      written last: its presence means the set is complete

A sample is ``<n>.<ext>`` (the original image bytes, decoded and resized only when read, so one
shard set serves every image size and colour mode) and ``<n>.json`` (path, label, sha256). Images
go into shards in content-hash order, which is a random order fixed per version: every shard is a
sample of all classes. A split has at least ``MIN_SHARDS`` shards (when it has the images), so up to
that many readers (ranks × loader workers) each get their own shards.

Why WebDataset tar: plain POSIX tar that ``tar`` and every WebDataset tool read; one sequential GET
per shard (no random access, no index service); nothing shared between readers, so ranks on
different nodes need no coordination beyond the shard list each derives from the epoch and seed.
The library writes the tars (``TarWriter``) and does the reading stages (tar expansion, grouping
by key, buffer shuffle, batching); bytes move through the project's ``Store`` (one S3 client with
its retries, endpoint and IRSA credentials) into a bounded local cache.

Plain Python, no Dagster; webdataset, numpy, PIL and torch are imported inside functions.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from ecosystem_assets.storage import LocalStore, StorageError, Store, open_store

SHARDS_PREFIX = "datasets/shards"
FORMAT = "webdataset-tar/1"
SPLITS = ("train", "val", "test")
# A shard holds at most this many bytes of images: one GET, and what a reader holds at once.
SHARD_BYTES = 64 << 20
# Up to this many shards per split (when each still gets MIN_SAMPLES images): readers beyond the
# shard count would idle, and ranks with fewer samples than others cut every rank's epoch short.
MIN_SHARDS = 32
MIN_SAMPLES = 8
READ_WORKERS = 8
DEFAULT_CACHE_BYTES = 4 << 30


class ShardError(RuntimeError):
    """Shards cannot be written or read: the message names the shard or image and the cause."""


def index_key(version: str) -> str:
    """Where the shard index of dataset ``version`` lives in artifact storage."""
    return f"{SHARDS_PREFIX}/{version}/index.json"


def shard_count(samples: int, total_bytes: int) -> int:
    """Shards for a split: enough to stay under SHARD_BYTES each, at least MIN_SHARDS while each keeps MIN_SAMPLES."""
    if samples == 0:
        return 0
    return max(math.ceil(total_bytes / SHARD_BYTES), min(MIN_SHARDS, max(1, samples // MIN_SAMPLES)))


def plan(rows: Any) -> dict[str, list[Any]]:
    """split → list of row frames, one per shard: usable rows in content-hash order, cut into near-equal counts."""
    usable = rows[rows["error"].isna()].sort_values(["sha256", "path"], kind="stable")
    planned: dict[str, list[Any]] = {}
    for split in SPLITS:
        part = usable[usable["split"] == split].reset_index(drop=True)
        count = shard_count(len(part), int(part["bytes"].sum()))
        bounds = [round(i * len(part) / count) for i in range(count + 1)] if count else [0]
        planned[split] = [part.iloc[a:b] for a, b in itertools.pairwise(bounds)]
    return planned


@dataclass(frozen=True)
class ShardIndex:
    """What a shard set holds; read from ``index.json``, checked, so a reader trusts its fields."""

    key: str
    dataset_version: str
    classes: tuple[str, ...]
    splits: dict[str, list[dict[str, Any]]]  # split → [{"key", "samples", "bytes"}]
    image_stats: dict[str, Any] = field(default_factory=dict)  # median size, colour share: for defaults

    def shards(self, split: str) -> list[str]:
        return [s["key"] for s in self.splits.get(split, [])]

    def samples(self, split: str) -> list[int]:
        return [int(s["samples"]) for s in self.splits.get(split, [])]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "dataset_version": self.dataset_version,
            "classes": list(self.classes),
            "splits": self.splits,
            "image_stats": self.image_stats,
        }


def read_index(store: Store, key: str) -> ShardIndex:
    """The index at ``key``; ShardError naming what is wrong when it is missing or not one of ours."""
    try:
        data = json.loads(store.read_bytes(key))
    except StorageError as exc:
        raise ShardError(f"shard index unreadable: {exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ShardError(f"shard index {store.uri(key)} is not JSON: {exc}") from None
    try:
        if data.get("format") != FORMAT:
            raise ValueError(f"format {data.get('format')!r}, expected {FORMAT!r}")
        prefix = f"{SHARDS_PREFIX}/{data['dataset_version']}/"
        splits = {split: list(data["splits"][split]) for split in SPLITS}
        for entries in splits.values():
            for entry in entries:
                if not (
                    isinstance(entry["key"], str)
                    and entry["key"].startswith(prefix)
                    and int(entry["samples"]) > 0
                    and int(entry["bytes"]) > 0
                ):
                    raise ValueError(f"shard entry {entry!r} is not a shard of this version")
        classes = tuple(str(c) for c in data["classes"])
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise ShardError(f"shard index {store.uri(key)} is not a valid index: {type(exc).__name__}: {exc}") from None
    return ShardIndex(key, str(data["dataset_version"]), classes, splits, dict(data.get("image_stats") or {}))


def _image_stats(frame: Any) -> dict[str, Any]:
    """Median width/height and the share of colour images among the usable ones (for default settings)."""
    usable = frame[frame["error"].isna()]
    colour = usable["mode"].isin(["RGB", "RGBA", "P", "CMYK", "YCbCr", "LAB", "HSV", "PA"])
    return {
        "median_width": int(usable["width"].median()) if len(usable) else 0,
        "median_height": int(usable["height"].median()) if len(usable) else 0,
        "colour_share": round(float(colour.mean()), 4) if len(usable) else 0.0,
    }


def pack(
    store: Store,
    source: Store,
    frame: Any,
    dataset_version: str,
    *,
    workers: int = READ_WORKERS,
    log: Callable[[str], None] | None = None,
) -> tuple[ShardIndex, bool]:
    """(index, reused): the shard set of ``dataset_version``, written now unless it already exists.

    Every image is read at the VersionId its manifest row pins, and its sha256 is checked against
    the row: a file changed in place since the version was recorded stops packing (the shards are the
    version, nothing else). Memory: one shard's images and its tar at a time.
    """
    import webdataset as wds

    from ecosystem_assets.vision.sources import read_object

    say = log or (lambda _message: None)
    key = index_key(dataset_version)
    if store.exists(key):
        return read_index(store, key), True
    classes = tuple(sorted(frame.loc[frame["error"].isna(), "label"].unique()))
    splits: dict[str, list[dict[str, Any]]] = {}

    def read(row: Any) -> bytes:
        version_id = row.version_id if isinstance(row.version_id, str) else None
        try:
            data, _ = read_object(source, row.path, version_id)
        except (StorageError, OSError) as exc:
            raise ShardError(f"cannot read {row.path} for dataset version {dataset_version}: {exc}") from None
        if hashlib.sha256(data).hexdigest() != row.sha256:
            raise ShardError(
                f"{source.url}/{row.path} changed since dataset version {dataset_version} was recorded "
                "(its sha256 differs from the manifest): re-materialize image_dataset, then the shards"
            )
        return data

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="shard-read") as pool:
        for split, chunks in plan(frame).items():
            splits[split] = []
            for number, rows in enumerate(chunks):
                buffer = io.BytesIO()
                # mtime fixed: the same images give byte-identical shards.
                with wds.TarWriter(buffer, encoder=False, mtime=0) as tar:
                    tuples = list(rows.itertuples())
                    for n, (row, data) in enumerate(zip(tuples, pool.map(read, tuples), strict=True)):
                        ext = Path(row.path).suffix.lower().lstrip(".") or "img"
                        meta = json.dumps({"path": row.path, "label": row.label, "sha256": row.sha256}).encode()
                        tar.write({"__key__": f"{number:05d}{n:06d}", ext: data, "json": meta})
                shard_key = f"{SHARDS_PREFIX}/{dataset_version}/{split}/shard-{number:05d}.tar"
                store.write_bytes(shard_key, buffer.getvalue())
                splits[split].append({"key": shard_key, "samples": len(rows), "bytes": buffer.tell()})
            say(f"{split}: {sum(s['samples'] for s in splits[split])} images in {len(splits[split])} shards")
    index = ShardIndex(key, dataset_version, classes, splits, _image_stats(frame))
    store.write_bytes(key, json.dumps(index.to_json(), indent=1).encode())  # last: marks the set complete
    return index, False


# ---- reading ---------------------------------------------------------------------------------


def epoch_shards(index: ShardIndex, split: str, epoch: int, seed: int, shuffle: bool) -> list[int]:
    """Shard numbers of ``split`` in this epoch's order: a permutation from (seed, epoch) when shuffling."""
    import numpy as np

    order = list(range(len(index.shards(split))))
    if shuffle:
        order = [int(i) for i in np.random.default_rng([seed, epoch]).permutation(order)]
    return order


def worker_batches(samples: Sequence[int], batch_size: int, loader_workers: int) -> int:
    """Batches a rank's loader yields for shards of these sizes: worker w takes shards w, w+K, … and
    batches its own stream (the last batch of each worker may be partial)."""
    k = max(1, loader_workers)
    return sum(math.ceil(sum(samples[w::k]) / batch_size) for w in range(k))


@dataclass(frozen=True)
class Preprocess:
    """How a sample becomes a tensor: size, colour mode, label order, and (train only) augmentation."""

    image_size: int
    color_mode: str
    classes: tuple[str, ...]
    augment: bool = False
    hflip: bool = False

    def __call__(self, sample: dict[str, Any]) -> tuple[Any, int]:
        """(float32 C×H×W array, class index or -1); augmentation is done per batch (`augment`)."""
        import numpy as np

        from ecosystem_assets.vision.dataset import decode_image

        meta = json.loads(sample["json"])
        image = next((v for k, v in sample.items() if not k.startswith("__") and k != "json"), None)
        if image is None:
            raise ShardError(f"sample {sample.get('__key__')} of {sample.get('__url__')} has no image")
        try:
            array = decode_image(image, self.image_size, self.color_mode)
        except Exception as exc:  # noqa: BLE001 — a decoder failure names the image
            raise ShardError(f"{meta.get('path')} in {sample.get('__url__')} does not decode: {type(exc).__name__}: {exc}") from None
        label = self.classes.index(meta["label"]) if meta["label"] in self.classes else -1
        return np.ascontiguousarray(array, dtype=np.float32), label


def augment(batch: Any, rng: Any, hflip: bool) -> Any:
    """Light augmentation of a float32 B×C×H×W batch that keeps the label of any image set (digits,
    text, oriented objects): a shift of up to 1/8 of the side (reflect padding), ±10 % brightness and
    contrast; horizontal flips only when asked (they change digits and text). Whole-batch numpy
    operations: per image, a dozen small numpy calls cost more than decoding it."""
    import numpy as np

    count, _, height, width = batch.shape
    pad = max(1, height // 8)
    padded = np.pad(batch, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode="reflect")
    shifts = rng.integers(0, 2 * pad + 1, size=(count, 2))
    out = np.empty_like(batch)
    for i, (top, left) in enumerate(shifts):
        out[i] = padded[i, :, top : top + height, left : left + width]
    if hflip:
        flip = rng.random(count) < 0.5
        out[flip] = out[flip, :, :, ::-1]
    mean = out.mean(axis=(1, 2, 3), keepdims=True)
    contrast, brightness = rng.uniform(0.9, 1.1, size=(2, count, 1, 1, 1)).astype(np.float32)
    out = (out - mean) * contrast + mean * brightness
    return np.clip(out, 0.0, 1.0, out=out)


class ShardOpener:
    """Pipeline stage: shard keys in, ``{"url", "stream"}`` out. A local store's files are opened in
    place; any other store's shard is copied whole into ``cache_dir`` (atomic rename; shards are
    immutable, so a cached copy never goes stale) and the cache is trimmed to ``cache_bytes`` by
    least-recent use. Files being read when trimmed stay readable until closed (POSIX unlink).

    Every shard's size is checked against the index before it is read: Python's streaming tar reader
    ends quietly at a header cut short, so a truncated shard would otherwise lose images silently."""

    def __init__(self, storage_url: str, sizes: dict[str, int], cache_dir: str | None, cache_bytes: int):
        self.storage_url, self.sizes, self.cache_dir, self.cache_bytes = storage_url, sizes, cache_dir, cache_bytes
        self._store: Store | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Workers open their own store (an S3 client is per process), with the AWS settings the
        # reading process has now: a fork server's workers inherit the server's environment, which
        # may be older.
        return {**self.__dict__, "_store": None, "_aws_env": {k: v for k, v in os.environ.items() if k.startswith("AWS_")}}

    def __setstate__(self, state: dict[str, Any]) -> None:
        os.environ.update(state.pop("_aws_env", {}))
        self.__dict__.update(state)

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = open_store(self.storage_url)
        return self._store

    def __call__(self, shards: Iterator[dict[str, str]]) -> Iterator[dict[str, Any]]:
        for shard in shards:  # {"url": key}, from wds.SimpleShardList
            key = shard["url"]
            try:
                stream = self.open_shard(key)
            except FileNotFoundError:
                raise ShardError(f"shard {self.store.uri(key)} is missing: re-materialize image_shards") from None
            size = os.fstat(stream.fileno()).st_size
            if size != self.sizes[key]:
                stream.close()
                raise ShardError(
                    f"shard {self.store.uri(key)} is {size} bytes but its index says {self.sizes[key]}: "
                    "truncated or replaced; re-materialize image_shards"
                )
            try:
                yield {"url": self.store.uri(key), "stream": stream}
            finally:
                stream.close()

    def open_shard(self, key: str) -> BinaryIO:
        """The shard opened for reading: in place from a local store, else from the cache (copied
        there first when missing or of the wrong size). It is opened before the cache is trimmed, so
        a trim by this or another worker cannot take it away (an open file stays readable)."""
        store = self.store
        if isinstance(store, LocalStore):
            return open(store.path(key), "rb")
        from webdataset.cache import LRUCleanup

        from ecosystem_assets.vision.sources import open_object

        root = Path(self.cache_dir or Path(tempfile.gettempdir()) / "ecosystem-assets-shards")
        path = root / hashlib.sha256(store.uri(key).encode()).hexdigest()[:32]
        with contextlib.suppress(FileNotFoundError):
            cached = open(path, "rb")  # noqa: SIM115 — returned, or closed right below
            if os.fstat(cached.fileno()).st_size == self.sizes[key]:
                with contextlib.suppress(FileNotFoundError):
                    os.utime(path)  # recently used: trimmed last
                return cached
            cached.close()
        # Partial downloads live beside the cache, not in it: a trim walks the whole cache folder and
        # would delete another worker's download in progress.
        partial = root.with_name(root.name + ".partial")
        partial.mkdir(parents=True, exist_ok=True)
        root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=partial, prefix="download-")
        try:
            with os.fdopen(fd, "wb") as out, open_object(store, key) as (chunks, _):
                for chunk in chunks:
                    out.write(chunk)
            # Opened before the rename (same file after it): another worker's trim between the two
            # cannot take it away.
            stream = open(tmp, "rb")  # noqa: SIM115 — the caller closes it
            os.replace(tmp, path)
        except StorageError as exc:
            raise ShardError(f"cannot read shard: {exc}") from None
        finally:
            Path(tmp).unlink(missing_ok=True)
        LRUCleanup(str(root), self.cache_bytes, interval=None).cleanup()
        return stream


class _Samples:
    """Pipeline stage in each worker: tar streams → samples → (train) seeded buffer shuffle →
    preprocessed (array, label) pairs. Seeds come from (seed, epoch, rank, worker), so a resumed
    epoch sees exactly the order of the original one."""

    def __init__(self, preprocess: Preprocess, seed: int, epoch: int, rank: int, shuffle_buffer: int):
        self.preprocess, self.seed, self.epoch, self.rank, self.shuffle_buffer = preprocess, seed, epoch, rank, shuffle_buffer

    def __call__(self, streams: Iterator[dict[str, Any]]) -> Iterator[tuple[Any, int]]:
        import numpy as np
        import torch.utils.data
        import webdataset as wds
        from webdataset.tariterators import group_by_keys, tar_file_expander

        info = torch.utils.data.get_worker_info()
        seed = [self.seed, self.epoch, self.rank, info.id if info else 0]
        samples: Iterator[dict[str, Any]] = group_by_keys(tar_file_expander(streams))
        if self.shuffle_buffer > 1:
            samples = wds.shuffle(
                self.shuffle_buffer, initial=self.shuffle_buffer, seed=int(np.random.SeedSequence(seed).generate_state(1)[0])
            )(samples)
        for sample in samples:
            yield self.preprocess(sample)


class _Collate:
    """Batch (x, y) tensors from preprocessed samples, augmented when the preprocessing asks for it,
    with a generator seeded by (seed, epoch, rank, worker): a resumed epoch gets the same augmentation."""

    def __init__(self, preprocess: Preprocess, seed: int, epoch: int, rank: int):
        self.preprocess, self.seed = preprocess, [seed, epoch, rank]
        self._rng: Any = None

    def __call__(self, samples: list[tuple[Any, int]]) -> tuple[Any, Any]:
        import numpy as np
        import torch
        import torch.utils.data

        batch = np.stack([x for x, _ in samples])
        if self.preprocess.augment:
            if self._rng is None:  # created in the worker that uses it
                info = torch.utils.data.get_worker_info()
                self._rng = np.random.default_rng([*self.seed, info.id if info else 0, 1])
            batch = augment(batch, self._rng, self.preprocess.hflip)
        return torch.from_numpy(batch), torch.tensor([y for _, y in samples], dtype=torch.int64)


# A worker that sends no batch for this long fails the step ("DataLoader timed out after … seconds")
# instead of leaving the rank, and the Dagster run, waiting forever.
LOADER_TIMEOUT_S = 600


def start_method(context: str | None) -> str | None:
    """How DataLoader workers start. "forkserver" (the default): every training and evaluation
    process has threads (gloo, Dagster Pipes, the last epoch's loader queues), and on CPython 3.11 a
    fork taken while another thread holds the runtime's thread-state lock leaves the child blocked
    in PyOS_AfterFork_Child forever (seen: a rank waited 12 min on a worker stuck there). The fork
    server is a fresh single-threaded process; it imports what the workers run once (preload), so
    each epoch's workers start as cheaply as a fork of the rank would."""
    if context == "forkserver":
        import multiprocessing

        multiprocessing.get_context("forkserver").set_forkserver_preload(["torch", "webdataset", "PIL.Image", __name__])
    return context


@dataclass(frozen=True)
class Reader:
    """Where shards are read from and how: one per training or evaluation process."""

    storage_url: str
    index: ShardIndex
    batch_size: int
    loader_workers: int = 2
    cache_dir: str | None = None
    cache_bytes: int = DEFAULT_CACHE_BYTES
    pin_memory: bool = False
    shuffle_buffer: int = 1000
    multiprocessing_context: str | None = "forkserver"  # how loader workers start: see start_method()

    def epoch(
        self,
        split: str,
        preprocess: Preprocess,
        *,
        epoch: int = 0,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = False,
        equal_steps: bool = False,
    ) -> tuple[Any, int]:
        """(DataLoader of (x, y) batches, batches to take) for this rank's shards of ``split`` in ``epoch``.

        The rank takes every ``world_size``-th shard of the epoch's order; its loader workers split
        those again. ``equal_steps``: every rank takes as many batches as the rank with the fewest
        (DDP needs the same number of steps everywhere); the few images beyond that wait for a later epoch.
        """
        import torch.utils.data
        import webdataset as wds

        order = epoch_shards(self.index, split, epoch, seed, shuffle)
        keys, sizes = self.index.shards(split), self.index.samples(split)
        mine = order[rank::world_size]
        batches = [
            worker_batches([sizes[i] for i in order[r::world_size]], self.batch_size, self.loader_workers) for r in range(world_size)
        ]
        steps = min(batches) if equal_steps else batches[rank]
        if not mine:  # more ranks than shards of this split: this rank has nothing to read
            return [], 0
        pipeline = wds.DataPipeline(
            wds.SimpleShardList([keys[i] for i in mine]),
            wds.split_by_worker,
            ShardOpener(self.storage_url, {e["key"]: int(e["bytes"]) for e in self.index.splits[split]}, self.cache_dir, self.cache_bytes),
            _Samples(preprocess, seed, epoch, rank, self.shuffle_buffer if shuffle else 0),
            wds.batched(self.batch_size, collation_fn=_Collate(preprocess, seed, epoch, rank), partial=True),
        )
        loader = torch.utils.data.DataLoader(
            pipeline,
            batch_size=None,
            num_workers=self.loader_workers,
            pin_memory=self.pin_memory,
            prefetch_factor=2 if self.loader_workers else None,
            multiprocessing_context=start_method(self.multiprocessing_context) if self.loader_workers else None,
            timeout=LOADER_TIMEOUT_S if self.loader_workers else 0,
        )
        return loader, steps

    def batches(self, split: str, preprocess: Preprocess, **kw: Any) -> Iterator[tuple[Any, Any]]:
        """The batches of ``epoch`` (same arguments), exactly as many as it counts."""

        loader, steps = self.epoch(split, preprocess, **kw)
        return itertools.islice(iter(loader), steps)
