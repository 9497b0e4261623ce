"""Training shards: packed once per version from the pinned images, read back disjointly per rank
and per loader worker, through a bounded cache from S3; tampered shards fail with their name."""

from __future__ import annotations

import hashlib
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ecosystem_assets.storage import open_store
from ecosystem_assets.vision import dataset as ds
from ecosystem_assets.vision import shards as sh
from ecosystem_assets_tests.vision.conftest import png_bytes, write_image_folder


def _folder(tmp_path: Path, counts: dict[str, int] | None = None):
    source = open_store(str(tmp_path / "images"))
    write_image_folder(source, counts or {"cat": 40, "dog": 40, "owl": 40})
    source.write_bytes("owl/broken.png", b"\x89PNG not really")  # listed, undecodable: never packed
    return source, ds.build_manifest(source)


def _members(path: Path) -> dict[str, dict]:
    """sample key → {ext: bytes} of a shard, read with the standard library's tarfile."""
    samples: dict[str, dict] = {}
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            key, ext = member.name.split(".", 1)
            samples.setdefault(key, {})[ext] = tar.extractfile(member).read()
    return samples


def test_pack_writes_every_usable_image_once_and_reuses_the_set(tmp_path):
    source, manifest = _folder(tmp_path)
    storage = open_store(str(tmp_path / "storage"))
    index, reused = sh.pack(storage, source, manifest.frame, manifest.version)
    assert not reused and index.key == sh.index_key(manifest.version) and index.classes == ("cat", "dog", "owl")

    usable = manifest.usable
    packed = {}
    for split in sh.SPLITS:
        assert sum(index.samples(split)) == int((usable["split"] == split).sum())
        for entry in index.splits[split]:
            assert entry["key"].startswith(f"datasets/shards/{manifest.version}/{split}/")
            samples = _members(Path(storage.uri(entry["key"])))
            assert len(samples) == entry["samples"]
            for parts in samples.values():
                meta = json.loads(parts["json"])
                assert hashlib.sha256(parts["png"]).hexdigest() == meta["sha256"]  # the bytes the manifest pinned
                packed[meta["path"]] = (split, meta["sha256"], meta["label"])
    expected = {p: (s, h, lab) for p, s, h, lab in zip(usable["path"], usable["split"], usable["sha256"], usable["label"], strict=True)}
    assert packed == expected and "owl/broken.png" not in packed

    # Immutable and keyed by the version: packing again reads nothing and rewrites nothing.
    before = {p: p.stat().st_mtime_ns for p in Path(storage.url, "datasets").rglob("*")}
    again, reused = sh.pack(storage, None, manifest.frame, manifest.version)  # no source needed: nothing is read
    assert reused and again == index
    assert before == {p: p.stat().st_mtime_ns for p in Path(storage.url, "datasets").rglob("*")}
    # Deterministic: the same version packed elsewhere gives byte-identical shards.
    other, _ = sh.pack(open_store(str(tmp_path / "elsewhere")), source, manifest.frame, manifest.version)
    for split in sh.SPLITS:
        for a, b in zip(index.splits[split], other.splits[split], strict=True):
            assert (tmp_path / "storage" / a["key"]).read_bytes() == (tmp_path / "elsewhere" / b["key"]).read_bytes()


def test_pack_refuses_an_image_changed_after_the_version_was_recorded(tmp_path):
    source, manifest = _folder(tmp_path)
    source.write_bytes("dog/img-007.png", png_bytes(999_999))  # same key, other pixels: not this version any more
    storage = open_store(str(tmp_path / "storage"))
    with pytest.raises(sh.ShardError, match=r"dog/img-007\.png changed since dataset version .*re-materialize image_dataset"):
        sh.pack(storage, source, manifest.frame, manifest.version)
    assert not storage.exists(sh.index_key(manifest.version))  # no index: the half-written set is never used


@dataclass(frozen=True)
class PathIds(sh.Preprocess):
    """Yields each sample's row number in the manifest instead of pixels, to see who read what (an
    instance field: loader workers start from a fork server and get only what is pickled)."""

    rows: dict[str, int] = field(default_factory=dict)

    def __call__(self, sample):
        import numpy as np

        return np.array([self.rows[json.loads(sample["json"])["path"]]], dtype=np.float32), 0


def test_ranks_and_loader_workers_read_disjoint_shards_that_cover_the_split(digits_store):
    store, manifest, index = digits_store
    rows = {p: i for i, p in enumerate(manifest.frame["path"])}
    train_rows = {rows[p] for p in manifest.usable.loc[manifest.usable["split"] == "train", "path"]}
    reader = sh.Reader(store.url, index, batch_size=16, loader_workers=2)
    ids = PathIds(8, "L", index.classes, rows=rows)

    def read(rank: int, world_size: int, epoch: int = 0, equal_steps: bool = False) -> list[list[int]]:
        batches = reader.batches("train", ids, epoch=epoch, seed=3, rank=rank, world_size=world_size, shuffle=True, equal_steps=equal_steps)
        return [[int(v) for v in x.flatten()] for x, _ in batches]

    world = 3  # does not divide the 32 shards: ranks get 11, 11 and 10
    per_rank = [[i for batch in read(rank, world) for i in batch] for rank in range(world)]
    seen = [set(r) for r in per_rank]
    assert all(len(r) == len(s) for r, s in zip(per_rank, seen, strict=True))  # nothing twice within a rank
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])  # disjoint
    assert seen[0] | seen[1] | seen[2] == train_rows  # and together the whole split
    # DDP: every rank takes as many batches as the rank with the fewest.
    steps = [len(read(rank, world, equal_steps=True)) for rank in range(world)]
    assert len(set(steps)) == 1 and steps[0] == min(len(read(rank, world)) for rank in range(world))
    # The epoch decides the order, the same way in every process; another epoch, another order.
    assert read(0, world, epoch=4) == read(0, world, epoch=4) != read(0, world, epoch=5)


def test_s3_shards_stream_through_a_bounded_local_cache(digits_store, s3_bucket, tmp_path):
    _, manifest, _ = digits_store
    storage = open_store(f"s3://{s3_bucket}/storage")
    source = ds.PrefixStore(digits_store.store, ds.DIGITS_PREFIX)
    index, _ = sh.pack(storage, source, manifest.frame, manifest.version)
    largest = max(e["bytes"] for e in index.splits["train"])
    cache = tmp_path / "cache"
    limit = 3 * largest  # 3 of 32 shards
    reader = sh.Reader(storage.url, index, batch_size=32, loader_workers=2, cache_dir=str(cache), cache_bytes=limit)
    images = sh.Preprocess(8, "L", index.classes, augment=True)
    seen = 0
    for x, y in reader.batches("train", images, epoch=0, shuffle=True):
        assert x.shape[1:] == (1, 8, 8) and float(x.min()) >= 0.0 and float(x.max()) <= 1.0
        seen += len(y)
    assert seen == sum(index.samples("train"))
    cached = [p for p in cache.iterdir() if p.is_file()]
    assert cached and sum(p.stat().st_size for p in cached) <= limit  # the rest was trimmed, least recent first
    assert not list((tmp_path / "cache.partial").iterdir())  # no half-downloaded leftovers


def test_tampered_index_or_shard_fails_with_a_message_naming_it(digits_store, tmp_path):
    _, manifest, index = digits_store
    storage = open_store(str(tmp_path / "storage"))
    key = sh.index_key(manifest.version)
    good = index.to_json()

    for body, message in (
        (b"{not json", "is not JSON"),
        (json.dumps({**good, "format": "mds/1"}).encode(), "format 'mds/1'"),
        (json.dumps({**good, "splits": {"train": []}}).encode(), "KeyError"),
        (
            json.dumps({**good, "splits": {**good["splits"], "test": [{"key": "../../etc/passwd", "samples": 1, "bytes": 1}]}}).encode(),
            "not a shard of this version",
        ),
    ):
        storage.write_bytes(key, body)
        with pytest.raises(sh.ShardError, match=message):
            sh.read_index(storage, key)
    with pytest.raises(sh.ShardError, match="shard index unreadable"):
        sh.read_index(storage, sh.index_key("0" * 64))

    # A shard cut short (a truncated upload, a full disk): reading it fails and names it.
    first = index.splits["val"][0]["key"]
    data = Path(digits_store.store.uri(first)).read_bytes()
    storage.write_bytes(first, data[: len(data) // 2])
    broken = sh.ShardIndex(key, index.dataset_version, index.classes, {**index.splits, "val": index.splits["val"][:1]})
    reader = sh.Reader(storage.url, broken, batch_size=8, loader_workers=0)
    with pytest.raises(sh.ShardError, match=r"shard .*shard-00000\.tar is \d+ bytes but its index says \d+: truncated or replaced"):
        list(reader.batches("val", sh.Preprocess(8, "L", index.classes)))
    # A shard that is gone: named, with what to do.
    Path(storage.uri(first)).unlink()
    with pytest.raises(sh.ShardError, match=r"shard .*shard-00000\.tar is missing: re-materialize image_shards"):
        list(reader.batches("val", sh.Preprocess(8, "L", index.classes)))


def test_shard_count_keeps_readers_busy_and_shards_bounded():
    assert sh.shard_count(0, 0) == 0
    assert sh.shard_count(5, 5_000) == 1  # too few images to split
    assert sh.shard_count(1_269, 200_000) == 32  # digits' train split: a shard for each of up to 32 readers
    assert sh.shard_count(700_000, 700_000 * 12_000) == 126  # large: 8.4 GB in shards of at most 64 MB (2**26 bytes)
