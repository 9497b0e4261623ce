"""Versioned image dataset: ImageFolder in a Store → content-hashed manifest, stable splits, arrays.

Plain Python, no Dagster. The same functions serve a local folder, an S3 prefix (with object
VersionIds when the bucket is versioned) and the digits default written into storage. Heavy
libraries (PIL, numpy, pandas, sklearn, botocore) are imported inside functions: this module is
imported when the code location loads.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ecosystem_assets.storage import StorageError, Store, read_parquet, write_parquet

# PrefixStore and open_source are part of this module's API too: callers import one dataset module.
from ecosystem_assets.vision.sources import PrefixStore, open_source, read_object  # noqa: F401

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
# Percent buckets of the content hash: 70 train / 15 val / 15 test. Fixed forever: changing them
# would move old images between splits.
SPLIT_BOUNDS = (("train", 70), ("val", 85), ("test", 100))
DIGITS_PREFIX = "datasets/digits"
DIGITS_DONE_KEY = f"{DIGITS_PREFIX}/_COMPLETE"
MANIFEST_PREFIX = "datasets/manifests"
MANIFEST_COLUMNS = ("path", "label", "bytes", "sha256", "version_id", "split", "width", "height", "mode", "error")


class DatasetError(RuntimeError):
    """The image source is empty, unusable or unreachable; the message says which and where."""


def split_for(sha256_hex: str) -> str:
    """Split from the content hash alone: adding images never moves an old one, duplicates share a split."""
    bucket = int(sha256_hex[:8], 16) % 100
    return next(name for name, bound in SPLIT_BOUNDS if bucket < bound)


def dataset_version(pairs: Sequence[tuple[str, str]]) -> str:
    """sha256 over the sorted (relative path, content sha256) pairs."""
    digest = hashlib.sha256()
    for path, sha in sorted(pairs):
        digest.update(f"{path}\t{sha}\n".encode())
    return digest.hexdigest()


def inspect_image(data: bytes) -> tuple[int | None, int | None, str | None, str | None]:
    """(width, height, mode, error): the image is fully decoded, so truncated files are caught too."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return image.width, image.height, image.mode, None
    except Exception as exc:  # noqa: BLE001 — any decoder failure means "not a usable image"; it is recorded, not hidden
        return None, None, None, f"{type(exc).__name__}: {exc}"[:300]


def decode_image(data: bytes, image_size: int, color_mode: str) -> Any:
    """float32 array (C, H, W) in [0, 1]: converted to ``L`` or ``RGB`` and resized to a square."""
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(data)) as opened:
        image: Image.Image = opened
        if color_mode == "L" and image.mode in ("RGBA", "LA", "P"):
            image = image.convert("RGBA")  # palette/alpha → RGBA first so transparency keeps its colour
        image = image.convert(color_mode).resize((image_size, image_size), Image.Resampling.BILINEAR)
        array = np.asarray(image, dtype=np.float32) / 255.0
    return array[None, :, :] if array.ndim == 2 else array.transpose(2, 0, 1)


def list_images(store: Store) -> list[tuple[str, str]]:
    """(relative path, class) for every ``<class>/<file>`` with an image suffix; hidden files skipped."""
    try:
        keys = list(store.list_keys())
    except StorageError as exc:
        raise DatasetError(f"cannot list images at {store.url}: {exc}") from None
    found = []
    for key in keys:
        parts = key.split("/")
        if len(parts) == 2 and not any(p.startswith((".", "_")) for p in parts) and parts[1].lower().endswith(IMAGE_SUFFIXES):
            found.append((key, parts[0]))
    return sorted(found)


def _read_all(
    store: Store, keys: Sequence[str], versions: Sequence[str | None] | None = None, workers: int = 8
) -> list[tuple[bytes, str | None]]:
    versions = versions or [None] * len(keys)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        try:
            return list(pool.map(lambda kv: read_object(store, kv[0], kv[1]), zip(keys, versions, strict=True)))
        except StorageError as exc:
            raise DatasetError(f"cannot read images at {store.url}: {exc}") from None


@dataclass(frozen=True)
class Manifest:
    version: str
    source_url: str
    frame: Any  # pandas DataFrame with MANIFEST_COLUMNS, sorted by path

    @property
    def key(self) -> str:
        return manifest_key(self.version)

    @property
    def usable(self) -> Any:
        return self.frame[self.frame["error"].isna()]

    @property
    def classes(self) -> list[str]:
        return sorted(self.usable["label"].unique())


def manifest_key(version: str) -> str:
    return f"{MANIFEST_PREFIX}/{version}.parquet"


def build_manifest(source: Store) -> Manifest:
    """Hash, decode-test and split every image of ``source``; raise DatasetError if nothing usable."""
    import pandas as pd

    listed = list_images(source)
    if not listed:
        raise DatasetError(f"no images under {source.url}: expected ImageFolder layout <class>/<file>.png with at least two classes")
    blobs = _read_all(source, [path for path, _ in listed])
    rows = []
    for (path, label), (data, version_id) in zip(listed, blobs, strict=True):
        sha = hashlib.sha256(data).hexdigest()
        width, height, mode, error = inspect_image(data)
        rows.append(
            dict(
                path=path,
                label=label,
                bytes=len(data),
                sha256=sha,
                version_id=version_id,
                split=split_for(sha),
                width=width,
                height=height,
                mode=mode,
                error=error,
            )
        )
    frame = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS)).astype({"width": "Int64", "height": "Int64"})
    pairs = [(str(r["path"]), str(r["sha256"])) for r in rows]
    manifest = Manifest(dataset_version(pairs), source.url, frame)
    classes = manifest.classes
    if not classes:
        raise DatasetError(f"none of the {len(rows)} files under {source.url} decodes as an image")
    if len(classes) < 2:
        raise DatasetError(f"only one class ({classes[0]!r}) under {source.url}: a classifier needs at least two class folders")
    return manifest


def write_manifest(store: Store, manifest: Manifest) -> str:
    """Write the manifest at its content-keyed ``manifest.key`` once; returns its URI.

    Nothing points at it: the asset's materialization records the key. Two runs on the same data
    write the same bytes to the same key (atomically), so concurrent runs cannot clobber each other.
    """
    if not store.exists(manifest.key):
        write_parquet(store, manifest.key, manifest.frame)
    return store.uri(manifest.key)


def read_manifest(store: Store, key: str) -> Any:
    """The manifest DataFrame at ``key`` (a key recorded by an ``image_dataset`` materialization)."""
    return read_parquet(store, key)


def load_split(source: Store, frame: Any, split: str, classes: Sequence[str], image_size: int, color_mode: str) -> tuple[Any, Any]:
    """(x float32 N×C×H×W, y int64 N) of the usable images of ``split``, in manifest order, pinned to their VersionIds."""
    import numpy as np

    rows = frame[(frame["split"] == split) & frame["error"].isna()]
    index = {name: i for i, name in enumerate(classes)}
    versions = [v if isinstance(v, str) else None for v in rows["version_id"]]
    blobs = _read_all(source, list(rows["path"]), versions)
    channels = 1 if color_mode == "L" else 3
    x = (
        np.stack([decode_image(data, image_size, color_mode) for data, _ in blobs])
        if blobs
        else np.zeros((0, channels, image_size, image_size), np.float32)
    )
    y = np.array([index.get(label, -1) for label in rows["label"]], dtype=np.int64)
    return x, y


def ensure_digits(store: Store) -> PrefixStore:
    """scikit-learn's bundled digits as ``datasets/digits/<digit>/<n>.png`` in storage, written once."""
    source = PrefixStore(store, DIGITS_PREFIX)
    if store.exists(DIGITS_DONE_KEY):
        return source
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.clip(np.rint(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)  # 0..16 → 0..255

    def write(i: int) -> None:
        buffer = io.BytesIO()
        Image.fromarray(pixels[i], mode="L").save(buffer, format="PNG")
        source.write_bytes(f"{digits.target[i]}/{i:04d}.png", buffer.getvalue())

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(write, range(len(pixels))))
    store.write_bytes(DIGITS_DONE_KEY, json.dumps({"images": len(pixels)}).encode())
    return source


# ---- dataset checks (pure: manifest frame in, findings out) ------------------------------------


def undecodable(frame: Any) -> Any:
    return frame[frame["error"].notna()][["path", "label", "bytes", "error"]]


def missing_class_splits(frame: Any) -> list[tuple[str, str]]:
    usable = frame[frame["error"].isna()]
    present = set(zip(usable["label"], usable["split"], strict=True))
    return [(label, split) for label in sorted(usable["label"].unique()) for split, _ in SPLIT_BOUNDS if (label, split) not in present]


def leaked_hashes(frame: Any) -> set[str]:
    usable = frame[frame["error"].isna()]
    return set(usable.loc[usable["split"] == "train", "sha256"]) & set(usable.loc[usable["split"] == "test", "sha256"])


def class_counts(frame: Any) -> Any:
    """class × split counts of usable images, with a total column."""
    usable = frame[frame["error"].isna()]
    table = usable.pivot_table(index="label", columns="split", values="path", aggfunc="count", fill_value=0)
    table = table.reindex(columns=[s for s, _ in SPLIT_BOUNDS], fill_value=0)
    table["total"] = table.sum(axis=1)
    return table.reset_index().rename(columns={"label": "class"})
