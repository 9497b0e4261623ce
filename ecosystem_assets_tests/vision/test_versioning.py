"""Incremental versioning of the image dataset: only new or changed objects are read, in bounded memory.

Real parts only: local folders and moto's S3 server (a versioned bucket included). Reads are
counted by wrapping the one function that opens an object (`dataset.open_object`), so "nothing was
read" is observed, not inferred from the manifest's own counters.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import threading
import time
from pathlib import Path

import dagster as dg
import pytest

from ecosystem_assets.lineage import STORAGE_KEY
from ecosystem_assets.storage import open_store
from ecosystem_assets.vision import dataset as ds
from ecosystem_assets_tests.vision.conftest import write_image_folder

HOUR_NS = 3600 * 10**9


def raw_png(seed: int, size: tuple[int, int] = (8, 8), mode: str = "L") -> bytes:
    """An uncompressed PNG: every seed gives different pixels and exactly the same file size."""
    import numpy as np
    from PIL import Image

    channels = {"L": (), "RGB": (3,)}[mode]
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], *channels), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode=mode).save(buffer, format="PNG", compress_level=0)
    return buffer.getvalue()


def write_raw_folder(store, classes: dict[str, int], first_seed: int = 0) -> list[str]:
    keys, seed = [], first_seed
    for label, count in classes.items():
        for i in range(count):
            keys.append(f"{label}/img-{i:03d}.png")
            store.write_bytes(keys[-1], raw_png(seed))
            seed += 1
    return keys


def settle(where: Path, age_ns: int = HOUR_NS) -> None:
    """A file, or every file of a folder, as a real dataset has them: written a while ago (a file read
    within the racy window of its mtime is read again next time, by design)."""
    stamp = time.time_ns() - age_ns
    for path in [where] if where.is_file() else where.rglob("*"):
        if path.is_file():
            os.utime(path, ns=(stamp, stamp))


class Reads:
    """Counts objects opened, bytes streamed and the most bodies open at once, through `dataset.open_object`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.keys: list[str] = []
        self.bytes = self.active = self.peak_active = 0
        self._lock = threading.Lock()
        real = ds.open_object

        @contextlib.contextmanager
        def counting(store, key, version_id=None):
            with self._lock:
                self.keys.append(key)
                self.active += 1
                self.peak_active = max(self.peak_active, self.active)
            try:
                with real(store, key, version_id) as (chunks, found):
                    yield self._count(chunks), found
            finally:
                with self._lock:
                    self.active -= 1

        monkeypatch.setattr(ds, "open_object", counting)

    def _count(self, chunks):
        for chunk in chunks:
            with self._lock:
                self.bytes += len(chunk)
            yield chunk

    def reset(self) -> None:
        self.keys, self.bytes = [], 0


def _rows(manifest) -> dict[str, dict]:
    return {row["path"]: row for row in manifest.frame.to_dict("records")}


def test_local_folder_only_new_or_changed_files_are_read(tmp_path, monkeypatch):
    folder = tmp_path / "images"
    store = open_store(str(folder))
    write_raw_folder(store, {"cat": 10, "dog": 10})
    settle(folder)
    reads = Reads(monkeypatch)

    first = ds.build_manifest(store)
    assert first.images_hashed == 20 and len(reads.keys) == 20 and reads.bytes == first.bytes_read == int(first.frame["bytes"].sum())
    assert first.frame["mtime_ns"].notna().all() and first.frame["etag"].isna().all()

    # Unchanged: no object opened, same version, same rows; the stored manifest is left alone.
    ds.write_manifest(store, first)
    stamp = (folder / first.key).stat().st_mtime_ns
    reads.reset()
    again = ds.build_manifest(store, first.frame)
    assert reads.keys == [] and reads.bytes == 0 and again.images_hashed == again.bytes_read == 0
    assert again.version == first.version and again.frame.equals(first.frame)
    ds.write_manifest(store, again)
    assert (folder / first.key).stat().st_mtime_ns == stamp

    # Same size, new bytes (and a new mtime): only that file is read, and the version moves.
    changed_key = "cat/img-003.png"
    new_bytes = raw_png(999)
    assert len(new_bytes) == len(store.read_bytes(changed_key))
    store.write_bytes(changed_key, new_bytes)
    settle(folder / "cat" / "img-003.png", age_ns=HOUR_NS // 2)
    reads.reset()
    changed = ds.build_manifest(store, again.frame)
    assert reads.keys == [changed_key] and changed.images_hashed == 1 and changed.bytes_read == len(new_bytes)
    assert changed.version != first.version
    assert _rows(changed)[changed_key]["sha256"] == hashlib.sha256(new_bytes).hexdigest()
    assert {p for p, r in _rows(changed).items() if r != _rows(first)[p]} == {changed_key}

    # Added: only the new file is read. Removed: nothing is read, the version moves.
    store.write_bytes("dog/new.png", raw_png(1234))
    settle(folder / "dog" / "new.png")
    reads.reset()
    grown = ds.build_manifest(store, changed.frame)
    assert reads.keys == ["dog/new.png"] and len(grown.frame) == 21
    (folder / "dog" / "img-000.png").unlink()
    reads.reset()
    shrunk = ds.build_manifest(store, grown.frame)
    assert reads.keys == [] and "dog/img-000.png" not in set(shrunk.frame["path"]) and shrunk.version != grown.version

    # Renamed (mtime kept by the rename): a new key is read; same content hash, new version.
    os.rename(folder / "dog" / "img-001.png", folder / "dog" / "renamed.png")
    reads.reset()
    renamed = ds.build_manifest(store, shrunk.frame)
    assert reads.keys == ["dog/renamed.png"]
    assert _rows(renamed)["dog/renamed.png"]["sha256"] == _rows(shrunk)["dog/img-001.png"]["sha256"]
    assert renamed.version != shrunk.version
    # The version keeps its definition: a full re-hash from scratch gives the same one.
    assert ds.build_manifest(store).version == renamed.version


def test_a_file_read_right_after_it_was_written_is_read_again_next_time(tmp_path, monkeypatch):
    # Within a coarse mtime tick a second same-size write would keep the mtime: such a file's mtime is not trusted.
    # The window is widened here so that a loaded machine (seconds between write and read) tests the same rule.
    monkeypatch.setattr(ds, "RACY_MTIME_NS", 10 * 60 * 1_000_000_000)
    folder = tmp_path / "images"
    store = open_store(str(folder))
    write_raw_folder(store, {"a": 3, "b": 3})
    settle(folder)
    store.write_bytes("a/fresh.png", raw_png(77))  # written just now
    reads = Reads(monkeypatch)
    first = ds.build_manifest(store)
    assert first.frame.set_index("path")["mtime_ns"].isna().to_dict() == {p: p == "a/fresh.png" for p in first.frame["path"]}
    reads.reset()
    ds.build_manifest(store, first.frame)
    assert reads.keys == ["a/fresh.png"]


def test_previous_manifest_of_another_source_missing_corrupt_or_old_reuses_nothing(tmp_path, monkeypatch):
    folder = tmp_path / "images"
    store = open_store(str(folder))
    write_raw_folder(store, {"a": 4, "b": 4})
    settle(folder)
    storage = open_store(str(tmp_path / "storage"))
    first = ds.build_manifest(store)
    ds.write_manifest(storage, first)

    frame, why = ds.previous_manifest(storage, first.key, store.url, store.url)
    assert frame is not None and frame.equals(first.frame) and "reusing" in why
    frame, why = ds.previous_manifest(storage, first.key, str(tmp_path / "elsewhere"), store.url)
    assert frame is None and "elsewhere" in why and "hashing every image" in why
    frame, why = ds.previous_manifest(storage, None, None, store.url)
    assert frame is None and "no previous manifest" in why
    frame, why = ds.previous_manifest(storage, "datasets/manifests/gone.parquet", store.url, store.url)
    assert frame is None and "unreadable" in why and "gone.parquet" in why
    storage.write_bytes("datasets/manifests/corrupt.parquet", b"PAR1 this is not parquet")
    frame, why = ds.previous_manifest(storage, "datasets/manifests/corrupt.parquet", store.url, store.url)
    assert frame is None and "unreadable" in why
    from ecosystem_assets.storage import write_parquet

    write_parquet(storage, "datasets/manifests/old.parquet", first.frame.drop(columns=["etag", "mtime_ns"]))
    frame, why = ds.previous_manifest(storage, "datasets/manifests/old.parquet", store.url, store.url)
    assert frame is None and "etag, mtime_ns" in why

    # Parses and has the columns, but the values are nonsense: everything is read again, with a log line.
    nonsense = first.frame.astype({"mtime_ns": object, "bytes": object})
    nonsense["mtime_ns"], nonsense["bytes"] = "yesterday", "many"
    reads, lines = Reads(monkeypatch), []
    rebuilt = ds.build_manifest(store, nonsense, log=lines.append)
    assert len(reads.keys) == 8 and rebuilt.version == first.version
    assert any("previous manifest not usable" in line for line in lines), lines


def test_odd_files_are_recorded_never_a_crash(tmp_path):
    folder = tmp_path / "images"
    store = open_store(str(folder))
    write_raw_folder(store, {"cat": 4, "dog": 4})
    huge = os.urandom(3 << 20)  # 3 MB against a 1 MB decode limit
    store.write_bytes("dog/huge.png", huge)
    store.write_bytes("cat/empty.png", b"")
    store.write_bytes("cat/notes.png", b"a text file with an image suffix\n")
    store.write_bytes("dog/ünïcode name %20+.png", raw_png(55))
    (folder / "cat" / "a\\b.png").write_bytes(raw_png(56))  # a backslash: a storage key would read cat/a/b.png
    os.close(os.open(os.fsencode(folder / "cat") + b"/\xff\xfe.png", os.O_CREAT | os.O_WRONLY))  # not UTF-8
    settle(folder)

    manifest = ds.build_manifest(store, max_decode_bytes=1 << 20)
    rows = _rows(manifest)
    assert rows["dog/huge.png"]["error"].startswith("larger than 1 MB")
    assert rows["dog/huge.png"]["sha256"] == hashlib.sha256(huge).hexdigest() and rows["dog/huge.png"]["bytes"] == len(huge)
    assert rows["cat/empty.png"]["error"] == "empty file (0 bytes)"
    assert rows["cat/notes.png"]["error"] == "UnidentifiedImageError: cannot identify image file" and rows["cat/notes.png"]["width"] is None
    assert rows["dog/ünïcode name %20+.png"]["error"] is None
    assert "backslash" in rows["cat/a\\b.png"]["error"] and rows["cat/a\\b.png"]["sha256"] is None
    [odd_name] = [p for p in rows if p.startswith("cat/\\x")]
    assert odd_name == "cat/\\xff\\xfe.png" and "not valid UTF-8" in rows[odd_name]["error"]
    assert len(manifest.usable) == 9
    # The manifest (odd names included) is written and read back unchanged; the checks see the bad files.
    ds.write_manifest(store, manifest)
    assert ds.read_manifest(store, manifest.key).equals(manifest.frame)
    assert len(ds.undecodable(manifest.frame)) == 5
    # A rebuild reuses the hashed rows; the unreadable names are never reused (nothing to compare).
    again = ds.build_manifest(store, manifest.frame, max_decode_bytes=1 << 20)
    assert again.images_hashed == 0 and again.version == manifest.version


def test_memory_stays_bounded_while_hashing(tmp_path, monkeypatch):
    import tracemalloc

    folder = tmp_path / "images"
    store = open_store(str(folder))
    body = len(raw_png(0, (256, 256), "RGB"))
    for i in range(96):
        store.write_bytes(f"{'ab'[i % 2]}/img-{i:03d}.png", raw_png(i, (256, 256), "RGB"))
    big = os.urandom(12 << 20)
    store.write_bytes("a/big.png", big)  # streamed: only hashed, in 1 MiB chunks
    total = 96 * body + len(big)
    warm = open_store(str(tmp_path / "warm-up"))
    write_raw_folder(warm, {"a": 1, "b": 1})
    ds.build_manifest(warm)  # first-time imports (pandas, Pillow's plugins) are not what is measured
    reads = Reads(monkeypatch)

    tracemalloc.start()
    try:
        manifest = ds.build_manifest(store, workers=3, max_decode_bytes=2 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert manifest.images_hashed == 97 and manifest.bytes_read == total == reads.bytes
    assert reads.peak_active <= 3
    # Reading everything at once would hold all 31 MB; the bound is 3 readers × (a body + a chunk) + bookkeeping.
    assert peak < 3 * (2 << 20) + 3 * (1 << 20) + (3 << 20) < total / 2, (peak, total)


def test_s3_versioned_bucket_reuses_by_etag_and_version_and_pins_the_new_version(versioned_bucket, s3_endpoint, monkeypatch):
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    source = ds.open_source(f"s3://{versioned_bucket}/sets/shapes")
    write_raw_folder(source, {"circle": 7, "square": 7})
    source.write_bytes("square/odd name + ü %2F.png", raw_png(500))
    # A backslash: the Store would read it as square/x/y.png (so it is written with boto3 directly).
    s3.put_object(Bucket=versioned_bucket, Key="sets/shapes/square/x\\y.png", Body=raw_png(501))
    reads = Reads(monkeypatch)

    first = ds.build_manifest(source, page_size=4)  # several pages
    rows = _rows(first)
    assert len(rows) == 16 and first.images_hashed == 15 and rows["square/odd name + ü %2F.png"]["error"] is None
    assert "backslash" in rows["square/x\\y.png"]["error"]
    for path, row in rows.items():
        if row["sha256"]:
            head = s3.head_object(Bucket=versioned_bucket, Key=f"sets/shapes/{path}")
            assert (row["version_id"], row["etag"]) == (head["VersionId"], head["ETag"]), path

    reads.reset()
    again = ds.build_manifest(source, first.frame, page_size=4)
    assert reads.keys == [] and again.version == first.version and again.frame.equals(first.frame)

    # Overwritten with the same size: read again, pinned to the new version; the others keep theirs.
    source.write_bytes("circle/img-002.png", raw_png(4242))
    head = s3.head_object(Bucket=versioned_bucket, Key="sets/shapes/circle/img-002.png")
    reads.reset()
    changed = ds.build_manifest(source, again.frame, page_size=4)
    assert reads.keys == ["circle/img-002.png"] and changed.version != first.version
    new_rows = _rows(changed)
    assert new_rows["circle/img-002.png"]["version_id"] == head["VersionId"] != rows["circle/img-002.png"]["version_id"]
    assert all(new_rows[p]["version_id"] == rows[p]["version_id"] for p in rows if p != "circle/img-002.png")

    # Deleted (a delete marker is now the latest): gone from the manifest, nothing read.
    s3.delete_object(Bucket=versioned_bucket, Key="sets/shapes/square/img-000.png")
    reads.reset()
    shrunk = ds.build_manifest(source, changed.frame, page_size=4)
    assert reads.keys == [] and "square/img-000.png" not in _rows(shrunk) and len(shrunk.frame) == 15


def test_s3_plain_listing_when_versioning_cannot_be_read(versioned_bucket, s3_endpoint, monkeypatch):
    import uuid

    import boto3

    from ecosystem_assets.vision import sources

    # Unversioned bucket: ETag and size decide.
    unversioned = f"plain-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=unversioned)
    plain = ds.open_source(f"s3://{unversioned}/imgs")
    write_raw_folder(plain, {"a": 3, "b": 3})
    reads = Reads(monkeypatch)
    first = ds.build_manifest(plain)
    assert first.frame["version_id"].isna().all() and first.frame["etag"].notna().all()
    reads.reset()
    assert ds.build_manifest(plain, first.frame).version == first.version and reads.keys == []
    plain.write_bytes("a/img-001.png", raw_png(999))
    reads.reset()
    assert ds.build_manifest(plain, first.frame).version != first.version and reads.keys == ["a/img-001.png"]

    # Versioned, but s3:GetBucketVersioning refused: a plain listing; the GET says which version was read.
    monkeypatch.setattr(sources, "bucket_versioned", lambda store: None)
    source = ds.open_source(f"s3://{versioned_bucket}/imgs")
    write_raw_folder(source, {"a": 3, "b": 3})
    pinned = ds.build_manifest(source)
    assert pinned.frame["version_id"].notna().all()
    reads.reset()
    again = ds.build_manifest(source, pinned.frame)
    assert reads.keys == [] and again.frame.equals(pinned.frame)


def test_a_folder_inside_artifact_storage_local_and_s3(tmp_path, s3_bucket, s3_endpoint, monkeypatch):
    # The digits default is a PrefixStore inside artifact storage: listed, read and reused the same way.
    reads = Reads(monkeypatch)
    for base in (open_store(str(tmp_path / "storage")), open_store(f"s3://{s3_bucket}/artifacts")):
        source = ds.PrefixStore(base, "datasets/pics")
        keys = write_raw_folder(source, {"a": 3, "b": 3})
        base.write_bytes("datasets/pics-other/a/x.png", raw_png(9))  # beside the folder: not part of it
        base.write_bytes("datasets/pics/a/deeper/y.png", raw_png(10))  # not <class>/<file>
        if base.url.startswith("/"):
            settle(tmp_path / "storage")
        reads.reset()
        first = ds.build_manifest(source, page_size=2)
        assert list(first.frame["path"]) == keys and sorted(reads.keys) == keys, base.url
        reads.reset()
        again = ds.build_manifest(source, first.frame, page_size=2)
        assert reads.keys == [] and again.version == first.version, base.url


# ---- image_dataset run by Dagster ----------------------------------------------------------------


def _materialize(instance, storage_url: str, source_url: str) -> tuple[dict, str, list[str]]:
    """image_dataset alone (its checks are tested elsewhere): (metadata, data version, warnings about manifests)."""
    from ecosystem_assets.resources.storage import ArtifactStorage
    from ecosystem_assets.resources.vision import ImageSource
    from ecosystem_assets.vision.assets import image_dataset

    resources = {"storage": ArtifactStorage(url=storage_url), "image_source": ImageSource(url=source_url)}
    result = dg.materialize([image_dataset], resources=resources, instance=instance)
    [materialization] = result.asset_materializations_for_node("image_dataset")
    warnings = [e.user_message for e in instance.all_logs(result.run_id) if e.level >= 30 and "manifest" in (e.user_message or "")]
    return {k: v.value for k, v in materialization.metadata.items()}, materialization.tags["dagster/data_version"], warnings


def test_image_dataset_rematerialized_reads_only_what_changed(tmp_path, dagster_instance):
    folder, other, storage_url = tmp_path / "photos", tmp_path / "photos-copy", str(tmp_path / "storage")
    write_image_folder(open_store(str(folder)), {"cat": 20, "dog": 20})
    write_image_folder(open_store(str(other)), {"cat": 20, "dog": 20})  # same bytes, another source
    settle(folder)
    settle(other)

    first, version, _ = _materialize(dagster_instance, storage_url, str(folder))
    assert first["images"] == first["images_hashed"] == 40 and first["bytes_read"] == first["bytes_total"] == first["total_bytes"] > 0
    again, same_version, warnings = _materialize(dagster_instance, storage_url, str(folder))
    assert (again["images"], again["images_hashed"], again["bytes_read"]) == (40, 0, 0) and again["bytes_total"] == first["bytes_total"]
    assert same_version == version and again[STORAGE_KEY] == first[STORAGE_KEY] and warnings == []  # cnn_model stays fresh

    # The manifest the latest materialization recorded is corrupt: everything is read again, with a warning.
    storage = open_store(storage_url)
    storage.write_bytes(again[STORAGE_KEY], b"garbage")
    repaired, repaired_version, warnings = _materialize(dagster_instance, storage_url, str(folder))
    assert repaired["images_hashed"] == 40 and repaired_version == version
    assert any("unreadable" in w and "hashing every image" in w for w in warnings), warnings
    assert len(ds.read_manifest(storage, repaired[STORAGE_KEY])) == 40  # rewritten, readable again

    # Another source (identical files): nothing reused from the previous source's manifest.
    elsewhere, _, _ = _materialize(dagster_instance, storage_url, str(other))
    assert elsewhere["images_hashed"] == 40 and elsewhere["source_url"] == str(other)
