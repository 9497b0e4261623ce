"""Where images are read from: a local folder, an S3 prefix (object VersionIds included) or a
folder inside artifact storage, all behind the `Store` interface.

Reading S3 is done here rather than through `S3Store` for what it does not give: the VersionId of
what was read, reading a pinned version, listing with sizes and ETags/VersionIds (local: sizes and
mtimes) page by page, and streaming an object in chunks.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ecosystem_assets.storage import LocalStore, S3Store, StorageError, Store, open_store, s3_error


class PrefixStore:
    """A view of ``base`` under ``prefix`` (the digits default lives inside artifact storage)."""

    def __init__(self, base: Store, prefix: str):
        self.base, self.prefix = base, prefix.strip("/")
        self.url = f"{base.url.rstrip('/')}/{self.prefix}"

    def full(self, key: str) -> str:
        return f"{self.prefix}/{key}"

    def write_bytes(self, key: str, data: bytes) -> str:
        return self.base.write_bytes(self.full(key), data)

    def create_bytes(self, key: str, data: bytes) -> bool:
        return self.base.create_bytes(self.full(key), data)

    def delete(self, key: str) -> None:
        self.base.delete(self.full(key))

    def read_bytes(self, key: str) -> bytes:
        return self.base.read_bytes(self.full(key))

    def exists(self, key: str) -> bool:
        return self.base.exists(self.full(key))

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        # S3 prefixes are plain string prefixes: keep only keys really *inside* the folder.
        folder = self.prefix + "/"
        for key in self.base.list_keys(self.full(prefix) if prefix else self.prefix):
            if key.startswith(folder):
                yield key[len(folder) :]

    def uri(self, key: str) -> str:
        return self.base.uri(self.full(key))

    def local_copy(self, key: str) -> contextlib.AbstractContextManager[Path]:
        return self.base.local_copy(self.full(key))


def open_source(url: str) -> Store:
    """The store for ``IMAGE_DATASET_URL``; S3 calls get timeouts and few retries so a dead endpoint fails fast."""
    return open_store(url)  # S3: storage.s3_client, the project's one factory (timeouts, retry policy)


def read_object(store: Store, key: str, version_id: str | None = None) -> tuple[bytes, str | None]:
    """Bytes of ``key`` and the S3 VersionId that was read (None for local files and unversioned buckets)."""
    if isinstance(store, PrefixStore):
        return read_object(store.base, store.full(key), version_id)
    if not isinstance(store, S3Store):
        return store.read_bytes(key), None
    from botocore.exceptions import BotoCoreError, ClientError

    request = {"Bucket": store.bucket, "Key": store._key(key)}
    if version_id:
        request["VersionId"] = version_id
    try:
        response = store.client.get_object(**request)
        data = response["Body"].read()
    except (BotoCoreError, ClientError) as exc:
        raise s3_error("get", store.uri(key), exc) from None
    found = response.get("VersionId")
    return data, (found if found and found != "null" else None)


# ---- listing with change tokens, and streamed reads (incremental versioning) -------------------

READ_CHUNK = 1 << 20  # bytes per read call when streaming an object (hashing never needs the whole body)
LIST_WORKERS = 8  # S3 folders listed at once


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One listed object and what says whether it changed since it was last hashed.

    S3: ``size`` + ``etag`` (+ ``version_id``, the latest version, on a versioned bucket);
    local files: ``size`` + ``mtime_ns``. ``key`` is relative to the source.
    """

    key: str
    size: int
    etag: str | None = None
    version_id: str | None = None
    mtime_ns: int | None = None


def list_objects(store: Store, max_depth: int | None = None, page_size: int = 1000) -> Iterator[ObjectInfo]:
    """Every object of ``store`` with its size and change token, lazily, page by page.

    ``max_depth``: keys with more '/'-separated parts are skipped (local folders are then not walked
    deeper). S3 is listed with boto3 paginators (``page_size`` keys per request, one page in memory
    at a time); a versioned bucket is listed by version so each key comes with its latest VersionId.
    Raises StorageError when the source cannot be listed.
    """
    if isinstance(store, PrefixStore):
        folder = store.prefix + "/"
        depth = None if max_depth is None else max_depth + store.prefix.count("/") + 1
        for info in _list_from(store.base, store.prefix, depth, page_size):
            if info.key.startswith(folder):
                yield ObjectInfo(info.key[len(folder) :], info.size, info.etag, info.version_id, info.mtime_ns)
        return
    yield from _list_from(store, "", max_depth, page_size)


def _list_from(store: Store, prefix: str, max_depth: int | None, page_size: int) -> Iterator[ObjectInfo]:
    if isinstance(store, S3Store):
        yield from _list_s3(store, prefix, max_depth, page_size)
    elif isinstance(store, LocalStore):
        yield from _list_local(store, prefix, max_depth)
    elif isinstance(store, PrefixStore):
        for info in list_objects(store, None, page_size):
            if not prefix or info.key.startswith(prefix.rstrip("/") + "/"):
                yield info
    else:  # any other Store: no change token, so nothing of it is ever reused
        for key in store.list_keys(prefix):
            yield ObjectInfo(key, -1)


def _list_local(store: LocalStore, prefix: str, max_depth: int | None) -> Iterator[ObjectInfo]:
    base = store.root / prefix if prefix else store.root
    if not base.is_dir():
        return
    start = 0 if not prefix else len(Path(prefix).parts)
    # Iterative walk, one directory's entries at a time. With a depth limit, symlinked class folders
    # are followed (datasets are often assembled from links): the limit keeps link loops finite.
    follow = max_depth is not None
    stack = [(base, start)]
    while stack:
        folder, depth = stack.pop()
        try:
            with os.scandir(folder) as scan:
                entries = sorted(scan, key=lambda e: e.name)
        except OSError as exc:
            raise StorageError(f"cannot list {folder}: {exc}") from None
        subfolders = []
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=follow):
                    if max_depth is None or depth + 1 < max_depth:
                        subfolders.append((Path(entry.path), depth + 1))
                    continue
                if not entry.is_file() or entry.name.endswith(".tmp") or (max_depth is not None and depth + 1 > max_depth):
                    continue  # broken links, sockets …; .tmp: LocalStore's half-written files
                stat = entry.stat()
            except OSError:
                continue  # vanished since the directory was read
            key = Path(entry.path).relative_to(store.root).as_posix()
            yield ObjectInfo(key, stat.st_size, mtime_ns=stat.st_mtime_ns)
        stack.extend(reversed(subfolders))  # popped in name order


def bucket_versioned(store: S3Store) -> bool | None:
    """True if versioning is (or was) enabled on the bucket, False if never, None if we may not ask."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        status = store.client.get_bucket_versioning(Bucket=store.bucket).get("Status")
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("AccessDenied", "403"):
            return None
        raise s3_error("get versioning of", f"s3://{store.bucket}", exc) from None
    except BotoCoreError as exc:
        raise s3_error("get versioning of", f"s3://{store.bucket}", exc) from None
    return status in ("Enabled", "Suspended")


def _list_s3(store: S3Store, prefix: str, max_depth: int | None, page_size: int) -> Iterator[ObjectInfo]:
    from botocore.exceptions import BotoCoreError, ClientError

    inside = "/".join(p for p in (store.prefix, prefix.strip("/")) if p)
    full = f"{inside}/" if inside else ""  # a folder-like prefix: "imgs" must not also list "imgs2/…"
    strip = len(store.prefix) + 1 if store.prefix else 0
    # Versioned: list versions, keep each key's latest (a key whose latest is a delete marker is
    # gone). Unknown (no s3:GetBucketVersioning): plain listing; the GET then says which version was read.
    versioned = bucket_versioned(store)
    operation, field = ("list_object_versions", "Versions") if versioned else ("list_objects_v2", "Contents")
    depth_of_folders = len(prefix.strip("/").split("/")) + 2 if prefix.strip("/") else 2  # parts of a key inside a folder

    def pages(under: str, folders_only: bool) -> Iterator[dict]:
        request: dict = {"Bucket": store.bucket, "Prefix": under, "PaginationConfig": {"PageSize": page_size}}
        if folders_only:
            request["Delimiter"] = "/"
        return store.client.get_paginator(operation).paginate(**request)  # lazily: one page in memory at a time

    def entries(page: dict) -> Iterator[ObjectInfo]:
        for obj in page.get(field, []):
            if versioned and not obj.get("IsLatest"):
                continue
            key = obj["Key"][strip:]
            if max_depth is not None and key.count("/") >= max_depth:
                continue
            version = obj.get("VersionId")
            yield ObjectInfo(key, int(obj["Size"]), obj.get("ETag"), version if version and version != "null" else None)

    def folder(under: str) -> list[ObjectInfo]:
        return [info for page in pages(under, False) for info in entries(page)]

    try:
        # The files right under the prefix, and its folders (an ImageFolder's classes) ...
        folders: list[str] = []
        for page in pages(full, True):
            yield from entries(page)
            folders += [common["Prefix"] for common in page.get("CommonPrefixes", [])]
        if max_depth is not None and max_depth < depth_of_folders:
            return
        # ... each folder then listed by its own paginator, several at once: a listing page takes S3
        # about 0.1 s, so one paginator over a million keys would wait for minutes.
        with ThreadPoolExecutor(max_workers=max(1, min(LIST_WORKERS, len(folders)))) as pool:
            for listed in pool.map(folder, folders):
                yield from listed
    except (BotoCoreError, ClientError) as exc:
        raise s3_error("list", f"s3://{store.bucket}/{full}", exc) from None


@contextlib.contextmanager
def open_object(store: Store, key: str, version_id: str | None = None) -> Iterator[tuple[Iterator[bytes], str | None]]:
    """(chunks of at most READ_CHUNK bytes, S3 VersionId read) of ``key``, streamed, never whole in memory.

    Raises StorageError when the object cannot be opened, or OSError from a local file.
    """
    if isinstance(store, PrefixStore):
        with open_object(store.base, store.full(key), version_id) as opened:
            yield opened
        return
    if isinstance(store, LocalStore):
        with store.path(key).open("rb") as handle:
            yield iter(lambda: handle.read(READ_CHUNK), b""), None
        return
    if not isinstance(store, S3Store):
        yield iter([store.read_bytes(key)]), None
        return
    from botocore.exceptions import BotoCoreError, ClientError

    request = {"Bucket": store.bucket, "Key": store._key(key)}
    if version_id:
        request["VersionId"] = version_id
    try:
        response = store.client.get_object(**request)
    except (BotoCoreError, ClientError) as exc:
        raise s3_error("get", store.uri(key), exc) from None
    body = response["Body"]
    found = response.get("VersionId")

    def chunks() -> Iterator[bytes]:
        try:
            yield from body.iter_chunks(READ_CHUNK)
        except (BotoCoreError, ClientError) as exc:  # the connection dropped mid-body
            raise s3_error("get", store.uri(key), exc) from None

    try:
        yield chunks(), (found if found and found != "null" else None)
    finally:
        body.close()
