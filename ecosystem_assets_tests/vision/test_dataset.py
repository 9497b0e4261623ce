"""The image dataset: manifest, content-hash version, stable splits, S3 VersionIds, bad input."""

from __future__ import annotations

import io

import pytest

from ecosystem_assets.storage import open_store
from ecosystem_assets.vision import dataset as ds
from ecosystem_assets_tests.vision.conftest import png_bytes, write_image_folder


def test_local_folder_manifest_version_and_stable_splits(tmp_path):
    store = open_store(str(tmp_path / "images"))
    keys = write_image_folder(store, {"cat": 12, "dog": 12, "owl": 12})
    store.write_bytes("README.txt", b"not part of the set")  # outside <class>/<file>: ignored
    store.write_bytes("cat/.DS_Store", b"junk")  # hidden: ignored

    first = ds.build_manifest(store)
    frame = first.frame
    assert list(frame["path"]) == sorted(keys)
    assert set(frame["label"]) == {"cat", "dog", "owl"}
    assert frame["error"].isna().all() and frame["version_id"].isna().all()
    row = frame.set_index("path").loc["dog/img-003.png"]
    data = store.read_bytes("dog/img-003.png")
    import hashlib

    assert row["sha256"] == hashlib.sha256(data).hexdigest() and row["bytes"] == len(data)
    assert (row["width"], row["height"], row["mode"]) == (8, 8, "L")
    assert row["split"] == ds.split_for(row["sha256"])
    assert set(frame["split"]) <= {"train", "val", "test"}
    assert first.version == ds.dataset_version(list(zip(frame["path"], frame["sha256"], strict=True)))

    # Re-reading unchanged data gives the same version; the manifest is written once and read back intact.
    assert ds.build_manifest(store).version == first.version
    manifest_uri = ds.write_manifest(store, first)
    assert manifest_uri.endswith(f"datasets/manifests/{first.version}.parquet")
    assert ds.read_manifest(store, first.key).equals(first.frame)
    # Immutable: a second write of the same version leaves the file alone; nothing else is written.
    stamp = (tmp_path / "images" / first.key).stat().st_mtime_ns
    assert ds.write_manifest(store, first) == manifest_uri
    assert (tmp_path / "images" / first.key).stat().st_mtime_ns == stamp
    assert [k for k in store.list_keys() if k.startswith("datasets/")] == [first.key]

    # One changed file → a new version; only that row's hash differs.
    store.write_bytes("owl/img-000.png", png_bytes(999))
    changed = ds.build_manifest(store)
    assert changed.version != first.version
    diff = changed.frame.merge(first.frame, on="path", suffixes=("", "_old"))
    assert list(diff.loc[diff["sha256"] != diff["sha256_old"], "path"]) == ["owl/img-000.png"]

    # Adding images never moves an existing one between splits.
    write_image_folder(store, {"cat": 0, "dog": 0, "owl": 0, "fox": 15}, first_seed=500)
    for i in range(10):
        store.write_bytes(f"cat/new-{i}.png", png_bytes(700 + i))
    grown = ds.build_manifest(store)
    old = changed.frame.set_index("path")["split"]
    assert len(grown.frame) == len(changed.frame) + 25
    assert grown.frame.set_index("path")["split"].loc[old.index].equals(old)


def test_s3_versioned_bucket_manifest_pins_object_versions(versioned_bucket, s3_endpoint):
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    source = ds.open_source(f"s3://{versioned_bucket}/sets/shapes")
    write_image_folder(source, {"circle": 10, "square": 10})
    manifest = ds.build_manifest(source)
    frame = manifest.frame.set_index("path")
    head = s3.head_object(Bucket=versioned_bucket, Key="sets/shapes/square/img-004.png")
    assert frame.loc["square/img-004.png", "version_id"] == head["VersionId"]
    assert frame["version_id"].notna().all()
    assert ds.build_manifest(source).version == manifest.version  # stable across re-runs

    # Overwrite one object: new dataset version, new VersionId, while the old manifest still
    # reads the bytes it was built from (the old object version).
    old_bytes = source.read_bytes("square/img-004.png")
    source.write_bytes("square/img-004.png", png_bytes(4242))
    changed = ds.build_manifest(source)
    assert changed.version != manifest.version
    assert changed.frame.set_index("path").loc["square/img-004.png", "version_id"] != head["VersionId"]
    pinned = manifest.frame[manifest.frame["path"] == "square/img-004.png"]
    x_old, _ = ds.load_split(source, pinned, pinned["split"].iloc[0], ["circle", "square"], 8, "L")
    assert (x_old[0] == ds.decode_image(old_bytes, 8, "L")).all()
    assert not (x_old[0] == ds.decode_image(png_bytes(4242), 8, "L")).all()

    # Splits stay put when objects are added.
    for i in range(8):
        source.write_bytes(f"circle/extra-{i}.png", png_bytes(900 + i))
    grown = ds.build_manifest(source).frame.set_index("path")["split"]
    before = changed.frame.set_index("path")["split"]
    assert grown.loc[before.index].equals(before)


def test_mixed_sizes_and_modes_are_normalised():
    from PIL import Image

    def encode(image, fmt="PNG"):
        buffer = io.BytesIO()
        image.save(buffer, format=fmt)
        return buffer.getvalue()

    samples = [
        png_bytes(1, (20, 10), "RGBA"),
        png_bytes(2, (33, 17), "RGB"),
        png_bytes(3, (8, 8), "L"),
        encode(Image.new("P", (12, 30), color=3)),
        encode(Image.new("RGB", (40, 40), (255, 0, 0)), "JPEG"),
    ]
    for data in samples:
        gray, rgb = ds.decode_image(data, 16, "L"), ds.decode_image(data, 16, "RGB")
        assert gray.shape == (1, 16, 16) and rgb.shape == (3, 16, 16)
        assert gray.dtype.name == "float32" and gray.min() >= 0.0 and gray.max() <= 1.0
    red = ds.decode_image(samples[-1], 8, "RGB")
    assert red[0].mean() > 0.95 and red[1].mean() < 0.05  # channel order is R, G, B


def test_corrupt_and_fake_png_are_listed_and_excluded(tmp_path):
    store = open_store(str(tmp_path / "images"))
    write_image_folder(store, {"a": 10, "b": 10})
    good = png_bytes(77)
    store.write_bytes("a/truncated.png", good[: len(good) // 2])
    store.write_bytes("b/notes.png", b"this is a text file, not an image\n")
    manifest = ds.build_manifest(store)
    bad = ds.undecodable(manifest.frame)
    assert sorted(bad["path"]) == ["a/truncated.png", "b/notes.png"]
    assert bad["error"].str.len().gt(0).all()
    assert len(manifest.usable) == 20 and "a/truncated.png" not in set(manifest.usable["path"])
    x, y = ds.load_split(store, manifest.frame, "train", manifest.classes, 8, "L")
    assert len(x) == len(y) == len(manifest.usable[manifest.usable["split"] == "train"])


def test_digits_default_is_written_once(tmp_path):
    store = open_store(str(tmp_path / "storage"))
    source = ds.ensure_digits(store)
    keys = [k for k in store.list_keys(ds.DIGITS_PREFIX) if k.endswith(".png")]
    assert len(keys) == 1797
    stamp = (tmp_path / "storage" / ds.DIGITS_PREFIX / "0" / "0000.png").stat().st_mtime_ns
    ds.ensure_digits(store)
    assert (tmp_path / "storage" / ds.DIGITS_PREFIX / "0" / "0000.png").stat().st_mtime_ns == stamp
    listed = ds.list_images(source)
    assert len(listed) == 1797 and {label for _, label in listed} == {str(d) for d in range(10)}


def test_checks_find_missing_splits_and_leakage(tmp_path):
    store = open_store(str(tmp_path / "images"))
    write_image_folder(store, {"a": 30, "b": 2})
    frame = ds.build_manifest(store).frame
    missing = ds.missing_class_splits(frame)
    present_b = set(frame.loc[frame["label"] == "b", "split"])
    assert missing == [("b", s) for s in ("train", "val", "test") if s not in present_b] and missing
    assert ds.leaked_hashes(frame) == set()
    # A manifest built any other way (e.g. by path) could leak: the check sees identical content in train and test.
    tampered = frame.copy()
    tampered.loc[0, "split"], tampered.loc[1, "split"] = "train", "test"
    tampered.loc[1, "sha256"] = tampered.loc[0, "sha256"]
    assert ds.leaked_hashes(tampered) == {tampered.loc[0, "sha256"]}


def test_bad_sources_fail_with_clear_errors(tmp_path, versioned_bucket, s3_endpoint):
    empty = open_store(str(tmp_path / "empty"))
    with pytest.raises(ds.DatasetError, match=r"no images under .*empty"):
        ds.build_manifest(empty)
    single = open_store(str(tmp_path / "single"))
    write_image_folder(single, {"only": 5})
    with pytest.raises(ds.DatasetError, match=r"only one class \('only'\)"):
        ds.build_manifest(single)
    with pytest.raises(ds.DatasetError, match=r"cannot list images at s3://no-such-bucket-x/.*NoSuchBucket"):
        ds.build_manifest(ds.open_source("s3://no-such-bucket-x/images"))
    garbage = open_store(str(tmp_path / "garbage"))
    garbage.write_bytes("a/x.png", b"text")
    garbage.write_bytes("b/y.png", b"text")
    with pytest.raises(ds.DatasetError, match=r"none of the 2 files .* decodes"):
        ds.build_manifest(garbage)


def test_unreachable_endpoint_and_bad_credentials(versioned_bucket, s3_endpoint, monkeypatch):
    import requests

    from ecosystem_assets_tests.servers.ports import free_port

    write_image_folder(ds.open_source(f"s3://{versioned_bucket}/imgs"), {"a": 2, "b": 2})
    dead = free_port()  # a port nothing listens on
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{dead}")
    with pytest.raises(ds.DatasetError, match=f"cannot list images at s3://{versioned_bucket}/imgs: .*127.0.0.1:{dead}"):
        ds.build_manifest(ds.open_source(f"s3://{versioned_bucket}/imgs"))
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)

    # moto's own switch turns on request authentication; unknown keys are then refused.
    previous = requests.post(f"{s3_endpoint}/moto-api/reset-auth", data=b"0", timeout=10).json()["PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT"]
    try:
        with pytest.raises(ds.DatasetError, match="InvalidAccessKeyId"):
            ds.build_manifest(ds.open_source(f"s3://{versioned_bucket}/imgs"))
    finally:
        requests.post(f"{s3_endpoint}/moto-api/reset-auth", data=previous.encode(), timeout=10)
