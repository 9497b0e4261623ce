"""Artifact storage on a local folder and on moto's S3 server: round trips and atomic writes."""

from __future__ import annotations

import threading

import pytest

from ecosystem_assets.resources.storage import ArtifactStorage
from ecosystem_assets.storage import LocalStore, StorageError, open_store


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return open_store(str(tmp_path / "store"))
    bucket = request.getfixturevalue("s3_bucket")
    return ArtifactStorage(url=f"s3://{bucket}/prefix").store  # through dagster-aws' S3Resource


def test_round_trip_list_and_local_copy(store):
    store.write_bytes("sales/summary/2026-11-26.csv", b"a,b\n1,2\n")
    store.write_bytes("sales/raw/2026-11-26.parquet", b"PAR1")
    assert store.read_bytes("sales/summary/2026-11-26.csv") == b"a,b\n1,2\n"
    assert store.exists("sales/raw/2026-11-26.parquet") and not store.exists("sales/raw/missing.parquet")
    assert sorted(store.list_keys("sales")) == ["sales/raw/2026-11-26.parquet", "sales/summary/2026-11-26.csv"]
    with store.local_copy("sales/summary/2026-11-26.csv") as path:
        assert path.read_bytes() == b"a,b\n1,2\n" and path.name == "2026-11-26.csv"
    with pytest.raises(StorageError, match="missing.csv"):
        store.read_bytes("sales/missing.csv")


def test_readers_never_see_a_half_written_object(store):
    versions = [bytes([65 + i]) * 3_000_000 for i in range(3)]  # 3 MB each: many write() calls
    store.write_bytes("big.bin", versions[0])
    seen, stop = set(), threading.Event()

    def read_loop():
        while not stop.is_set():
            seen.add(store.read_bytes("big.bin"))

    reader = threading.Thread(target=read_loop)
    reader.start()
    for i in range(12):
        store.write_bytes("big.bin", versions[i % 3])
    stop.set()
    reader.join()
    assert seen and seen <= set(versions)


def test_local_failed_write_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch):
    store = LocalStore(tmp_path)
    store.write_bytes("a/report.csv", b"old")

    def boom(*args):
        raise OSError("disk full")

    monkeypatch.setattr("os.fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        store.write_bytes("a/report.csv", b"new")
    assert store.read_bytes("a/report.csv") == b"old"
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["report.csv"]


@pytest.mark.parametrize("key", ["../escape.csv", "", "a/../../b"])
def test_keys_cannot_escape_the_root(tmp_path, key):
    with pytest.raises(StorageError, match="invalid storage key"):
        LocalStore(tmp_path).write_bytes(key, b"x")


def test_unreachable_bucket_names_the_object(s3_endpoint):
    store = ArtifactStorage(url="s3://no-such-bucket-xyz/p").store
    with pytest.raises(StorageError, match=r"s3://no-such-bucket-xyz/p/k.csv failed: NoSuchBucket"):
        store.write_bytes("k.csv", b"x")
