"""Versioned image dataset: ImageFolder in a Store → content-hashed manifest, stable splits, arrays.

Versioning is incremental: the source is listed page by page with each object's size and change
token (S3 ETag + VersionId, local mtime); an object whose token matches its row in the previous
manifest reuses that row, and only new or changed objects are read, streamed by a few threads
(each holds at most one body, larger ones are hashed in chunks and never decoded).

Plain Python, no Dagster. The same functions serve a local folder, an S3 prefix (with object
VersionIds when the bucket is versioned) and the digits default written into storage. Heavy
libraries (PIL, numpy, pandas, sklearn, botocore) are imported inside functions: this module is
imported when the code location loads.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from ecosystem_assets.storage import StorageError, Store, read_parquet, write_parquet

# PrefixStore and open_source are part of this module's API too: callers import one dataset module.
from ecosystem_assets.vision.sources import ObjectInfo, PrefixStore, list_objects, open_object, open_source, read_object  # noqa: F401

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
# Percent buckets of the content hash: 70 train / 15 val / 15 test. Fixed forever: changing them
# would move old images between splits.
SPLIT_BOUNDS = (("train", 70), ("val", 85), ("test", 100))
DIGITS_PREFIX = "datasets/digits"
DIGITS_DONE_KEY = f"{DIGITS_PREFIX}/_COMPLETE"
MANIFEST_PREFIX = "datasets/manifests"
MANIFEST_COLUMNS = ("path", "label", "bytes", "sha256", "version_id", "split", "width", "height", "mode", "error", "etag", "mtime_ns")
# What a previous manifest needs for its rows to be reused (manifests written before are read, not reused).
CHANGE_COLUMNS = ("path", "bytes", "sha256", "etag", "version_id", "mtime_ns")
# Files above this are hashed in chunks but not decoded: a photo a classifier learns from is a few MB
# (a 24-megapixel JPEG ~10 MB, a 12-megapixel lossless PNG ~25 MB); bigger ones are raw scans, videos or
# disk images named .png. It also bounds memory: each of the HASH_WORKERS readers holds at most one
# body, so bodies in memory stay under 8 × 32 MiB = 256 MiB whatever the source holds.
MAX_DECODE_BYTES = 32 << 20
HASH_WORKERS = 8
# A local file modified less than this before it was read may change again within the same mtime
# tick (coarse filesystem clocks: 2 s on FAT/exFAT, 1 s on HFS+ and some NFS servers): its mtime is not
# recorded, so the next version reads it again rather than trusting an mtime that may not have moved.
RACY_MTIME_NS = 2_000_000_000


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
            # Pillow only warns between its bomb threshold and twice it; decoding such a bitmap per thread is what we refuse.
            if image.width * image.height > (Image.MAX_IMAGE_PIXELS or 2**62):
                return None, None, None, f"{image.width}×{image.height} pixels: more than Pillow's decompression-bomb limit, not decoded"
            image.load()
            return image.width, image.height, image.mode, None
    except Exception as exc:  # noqa: BLE001 — any decoder failure means "not a usable image"; it is recorded, not hidden
        # Pillow names the in-memory buffer by address: dropped, so the same bytes always give the same row.
        return None, None, None, re.sub(r" <_io\.BytesIO object at 0x[0-9a-fA-F]+>", "", f"{type(exc).__name__}: {exc}")[:300]


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


def image_label(key: str) -> str | None:
    """The class of ``<class>/<file>`` with an image suffix, else None (hidden files and other layouts)."""
    parts = key.split("/")
    if len(parts) != 2 or not all(parts) or any(p.startswith((".", "_")) for p in parts):
        return None
    return parts[0] if parts[1].lower().endswith(IMAGE_SUFFIXES) else None


def list_image_objects(store: Store, page_size: int = 1000) -> list[tuple[ObjectInfo, str]]:
    """(listed object, class) for every image of the ImageFolder, sorted by key; only images are kept in memory."""
    try:
        found = [(info, label) for info in list_objects(store, max_depth=2, page_size=page_size) if (label := image_label(info.key))]
    except StorageError as exc:
        raise DatasetError(f"cannot list images at {store.url}: {exc}") from None
    return sorted(found, key=lambda item: item[0].key)


def list_images(store: Store) -> list[tuple[str, str]]:
    """(relative path, class) for every ``<class>/<file>`` with an image suffix; hidden files skipped."""
    return [(info.key, label) for info, label in list_image_objects(store)]


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
    """A dataset version: its manifest rows and what building it cost."""

    version: str
    source_url: str
    frame: Any  # pandas DataFrame with MANIFEST_COLUMNS, sorted by path
    images_hashed: int = 0  # objects read this time (the rest reused their previous row)
    bytes_read: int = 0

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
    """Where the manifest of ``version`` lives in artifact storage."""
    return f"{MANIFEST_PREFIX}/{version}.parquet"


def _printable(key: str) -> str:
    # Local file names need not be UTF-8 (they arrive as surrogate escapes): shown escaped, never read.
    return key.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _unaddressable(key: str) -> str | None:
    """Why a listed key cannot be read back through a Store key (then it is recorded, not read), or None."""
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return "file name is not valid UTF-8: not read"
    if "\\" in key:
        return "name contains a backslash, which storage keys read as a folder separator: not read"
    return None


def _row(info: ObjectInfo, label: str, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(MANIFEST_COLUMNS)
    row.update(path=_printable(info.key), label=_printable(label), bytes=max(info.size, 0), version_id=info.version_id)
    row.update(values)
    return row


def _hash_object(source: Store, info: ObjectInfo, label: str, max_decode_bytes: int) -> dict[str, Any]:
    """Stream one object through sha256 and decode-test it; the body is dropped before returning.

    At most ``max_decode_bytes`` (plus one chunk) are held; a larger object is only hashed. A local
    file the OS refuses is a recorded error; a store that fails raises StorageError.
    """
    started = time.time_ns()
    digest, size, kept = hashlib.sha256(), 0, True
    parts: list[bytes] = []
    try:
        with open_object(source, info.key, info.version_id) as (chunks, version_id):
            for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                if kept and size > max_decode_bytes:
                    kept = False
                    parts.clear()  # from here on only the hash runs
                elif kept:
                    parts.append(chunk)
    except OSError as exc:  # local file: permission, vanished, a directory … (S3 failures are StorageError)
        return _row(info, label, error=f"cannot read: {type(exc).__name__}: {exc}"[:300])  # no token: read again next time
    sha = digest.hexdigest()
    width = height = mode = None
    if size == 0:
        error: str | None = "empty file (0 bytes)"
    elif not kept:
        error = f"larger than {max_decode_bytes / (1 << 20):g} MB ({size} bytes): hashed, not decoded"
    else:
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        parts.clear()
        width, height, mode, error = inspect_image(data)
        del data
    racy = info.mtime_ns is not None and started - info.mtime_ns < RACY_MTIME_NS
    return _row(
        info,
        label,
        bytes=size,
        sha256=sha,
        version_id=version_id or info.version_id,
        split=split_for(sha),
        width=width,
        height=height,
        mode=mode,
        error=error,
        etag=info.etag,
        mtime_ns=None if racy else info.mtime_ns,
    )


def _hash_objects(
    source: Store,
    todo: Sequence[tuple[ObjectInfo, str]],
    workers: int,
    max_decode_bytes: int,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    """Rows of ``todo``, read by ``workers`` threads; at most 2 × workers tasks are queued at once, and
    each running task holds one body, so memory does not grow with the number of objects."""
    rows: list[dict[str, Any]] = []
    window, step = 2 * workers, max(1000, len(todo) // 10)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="image-hash") as pool:
        pending: set[Future[dict[str, Any]]] = set()
        try:
            for info, label in todo:
                if len(pending) >= window:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        rows.append(future.result())
                        if len(rows) % step == 0:
                            log(f"hashed {len(rows)} of {len(todo)} new or changed images")
                pending.add(pool.submit(_hash_object, source, info, label, max_decode_bytes))
            rows.extend(future.result() for future in wait(pending).done)
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    return rows


def _reused_rows(listed: Any, previous: Any) -> Any:
    """The rows of ``previous`` for the objects of ``listed`` (a listing frame) whose key, size and change
    token (S3: ETag and, when listed, VersionId; local: mtime in ns) are unchanged, with the listing's
    label and tokens. Raises KeyError/TypeError/ValueError on a frame that is not a manifest."""
    old = previous.drop_duplicates("path").add_suffix("_prev").rename(columns={"path_prev": "path"})
    merged = listed.merge(old, on="path", how="left")

    def same(column: str) -> Any:  # both present and equal; missing on either side never matches
        a, b = merged[column], merged[f"{column}_prev"]
        return (a.eq(b) & a.notna() & b.notna()).to_numpy(dtype=bool)

    size = merged["size"].to_numpy(dtype="float64") == merged["bytes_prev"].astype("float64").to_numpy()
    # mtimes in ns exceed float precision: compared as nullable integers.
    mtime = merged["mtime_ns"].astype("Int64").eq(merged["mtime_ns_prev"].astype("Int64")).fillna(False).to_numpy(dtype=bool)
    version = merged["version_id"].isna().to_numpy(dtype=bool) | same("version_id")
    hashed = merged["sha256_prev"].map(lambda v: isinstance(v, str) and len(v) == 64).to_numpy(dtype=bool)
    rows = merged[size & ((same("etag") & version) | mtime) & hashed & merged["unread"].isna().to_numpy(dtype=bool)]
    values = {c: rows[f"{c}_prev"].to_numpy() for c in ("bytes", "sha256", "width", "height", "mode", "error")}
    return rows.assign(
        **values,
        # A plain listing (bucket versioning unknown) names no VersionId: keep the one pinned before, same ETag.
        version_id=rows["version_id"].where(rows["version_id"].notna(), rows["version_id_prev"]),
        split=rows["sha256_prev"].map(split_for),  # from the hash, whatever the old file says
    )[list(MANIFEST_COLUMNS)]


def _normalise(frame: Any) -> Any:
    """Column order and dtypes that survive a Parquet round trip unchanged (missing values as None)."""
    frame = frame[list(MANIFEST_COLUMNS)].sort_values("path", kind="stable").reset_index(drop=True)
    frame = frame.astype({"bytes": "int64", "width": "Int64", "height": "Int64", "mtime_ns": "Int64"})
    for column in ("path", "label", "sha256", "version_id", "split", "mode", "error", "etag"):
        frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    return frame


def build_manifest(
    source: Store,
    previous: Any = None,
    *,
    workers: int = HASH_WORKERS,
    max_decode_bytes: int = MAX_DECODE_BYTES,
    page_size: int = 1000,
    log: Callable[[str], None] | None = None,
) -> Manifest:
    """Hash, decode-test and split every image of ``source``; raise DatasetError if nothing usable.

    ``previous``: the manifest frame of the last version *of the same source* (`previous_manifest`);
    its rows are reused for objects whose size and ETag/VersionId (local: mtime) still match, and
    only the other objects are read. Without it every object is read.
    """
    import pandas as pd

    say = log or (lambda _message: None)
    listed = list_image_objects(source, page_size)
    if not listed:
        raise DatasetError(f"no images under {source.url}: expected ImageFolder layout <class>/<file>.png with at least two classes")
    odd = [_unaddressable(info.key) for info, _ in listed]
    table = pd.DataFrame(
        {
            "path": [_printable(info.key) for info, _ in listed],
            "label": [_printable(label) for _, label in listed],
            "size": [info.size for info, _ in listed],
            "etag": [info.etag for info, _ in listed],
            "version_id": [info.version_id for info, _ in listed],
            "mtime_ns": pd.array([info.mtime_ns for info, _ in listed], dtype="Int64"),
            "unread": odd,
        }
    )
    frames: list[Any] = []
    reused: set[str] = set()
    if previous is not None:
        try:
            rows = _reused_rows(table, previous)
        except (KeyError, TypeError, ValueError) as exc:  # parses, but is not a manifest: start over
            say(f"previous manifest not usable ({type(exc).__name__}: {exc}): hashing every image")
        else:
            frames += [rows] if len(rows) else []
            reused = set(rows["path"])
    unread = [_row(info, label, error=reason) for (info, label), reason in zip(listed, odd, strict=True) if reason is not None]
    todo = [
        (info, label) for (info, label), reason in zip(listed, odd, strict=True) if reason is None and _printable(info.key) not in reused
    ]
    say(
        f"{len(listed)} images listed under {source.url}: {len(reused)} unchanged, {len(todo)} to read ({sum(i.size for i, _ in todo if i.size > 0)} bytes)"
    )
    try:
        hashed = _hash_objects(source, todo, workers, max_decode_bytes, say)
    except StorageError as exc:
        raise DatasetError(f"cannot read images at {source.url}: {exc}") from None
    if hashed or unread:
        new = pd.DataFrame(hashed + unread, columns=list(MANIFEST_COLUMNS))
        # Built from the Python ints: a column with a None would otherwise go through float64 and lose the ns.
        new["mtime_ns"] = pd.array([r["mtime_ns"] for r in hashed + unread], dtype="Int64")
        frames.append(new)
    frame = _normalise(pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0])
    version = dataset_version([(str(p), s or "") for p, s in zip(frame["path"], frame["sha256"], strict=True)])
    manifest = Manifest(version, source.url, frame, images_hashed=len(hashed), bytes_read=sum(r["bytes"] for r in hashed if r["sha256"]))
    classes = manifest.classes
    if not classes:
        raise DatasetError(f"none of the {len(frame)} files under {source.url} decodes as an image")
    if len(classes) < 2:
        raise DatasetError(f"only one class ({classes[0]!r}) under {source.url}: a classifier needs at least two class folders")
    return manifest


def previous_manifest(store: Store, key: str | None, recorded_source_url: str | None, source_url: str) -> tuple[Any, str]:
    """(frame to reuse hashes from, or None; why), for the manifest ``key`` recorded with ``recorded_source_url``.

    Only a manifest of the same source is reused, and only one written with change tokens; a
    missing or unreadable one means hashing everything again, never a failure.
    """
    if not key:
        return None, "no previous manifest: hashing every image"
    if recorded_source_url != source_url:
        return None, f"previous manifest {key} is of {recorded_source_url}, not {source_url}: hashing every image"
    try:
        frame = read_manifest(store, key)
    except StorageError as exc:
        return None, f"previous manifest unreadable ({exc}): hashing every image"
    missing = [c for c in CHANGE_COLUMNS if c not in frame.columns]
    if missing:
        return None, f"previous manifest {key} has no {', '.join(missing)} (written before incremental versioning): hashing every image"
    return frame, f"reusing rows of {key} whose size and ETag/VersionId/mtime still match"


def write_manifest(store: Store, manifest: Manifest) -> str:
    """Write the manifest at its content-keyed ``manifest.key``; returns its URI.

    Nothing points at it: the asset's materialization records the key. Two runs on the same data
    write the same rows to the same key (atomically), so concurrent runs cannot clobber each other.
    An existing file is rewritten only when its rows differ, which for the same version means only
    the change tokens (a touched file, a re-uploaded identical object, an old manifest without
    them): the images it describes and their pinned bytes are the same.
    """
    if store.exists(manifest.key):
        try:
            if read_manifest(store, manifest.key).equals(manifest.frame):
                return store.uri(manifest.key)
        except StorageError:
            pass  # unreadable: replace it
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
