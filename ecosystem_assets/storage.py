"""Artifact storage: a local folder or an S3 prefix behind one small interface.

Keys are '/'-separated relative paths (``sales/summary/2026-11-26.csv``). Writes are atomic: a
reader sees the old object or the new one, never a half-written file (local: temp file in the same
folder + ``os.replace``; S3: a single PUT is atomic by nature). ``create_bytes`` writes only when
the key is absent, atomically against other writers (local: a hard link, which fails if the name
exists; S3: a conditional PUT, ``If-None-Match: *``): the basis of records that must exist once.

Plain Python, usable outside Dagster (the training script and the fraud service use it too).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse


def _umask() -> int:
    # Read once, at import (os.umask can only be read by setting it: not from worker threads).
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _umask()


class StorageError(RuntimeError):
    """Storage is unreachable, misconfigured or refused the request; the message says which."""


def s3_client(endpoint_url: str | None = None, region: str | None = None) -> Any:
    """The one S3 client factory: boto3's credential chain (env, profile, IRSA on EKS), ``AWS_ENDPOINT_URL``
    honoured when ``endpoint_url`` is not given (MinIO, moto), timeouts, and the S3 retry policy
    (`retries.S3_RETRIES`), so a dead endpoint fails in seconds instead of hanging a run."""
    import boto3
    from botocore.config import Config

    from ecosystem_assets.retries import S3_RETRIES

    config = Config(connect_timeout=10, read_timeout=60, retries=S3_RETRIES)
    return boto3.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)


def s3_error(action: str, uri: str, exc: BaseException) -> StorageError:
    """The one wording of an S3 failure: the action, the object or prefix, and S3's code and message."""
    response = getattr(exc, "response", None)  # botocore's ClientError carries S3's answer
    if isinstance(response, dict):
        error = response.get("Error", {})
        return StorageError(f"S3 {action} {uri} failed: {error.get('Code')} {error.get('Message', '')}".strip())
    return StorageError(f"S3 {action} {uri} failed: {type(exc).__name__}: {exc}")


class Store(Protocol):
    url: str

    def write_bytes(self, key: str, data: bytes) -> str: ...
    def create_bytes(self, key: str, data: bytes) -> bool: ...
    def delete(self, key: str) -> None: ...
    def read_bytes(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def list_keys(self, prefix: str = "") -> Iterator[str]: ...
    def uri(self, key: str) -> str: ...
    def local_copy(self, key: str) -> contextlib.AbstractContextManager[Path]: ...


def _clean_key(key: str) -> str:
    parts = [p for p in key.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise StorageError(f"invalid storage key {key!r}")
    return "/".join(parts)


class LocalStore:
    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self.url = str(self.root)

    def path(self, key: str) -> Path:
        return self.root / _clean_key(key)

    def uri(self, key: str) -> str:
        return str(self.path(key))

    @contextlib.contextmanager
    def _temp_file(self, target: Path, data: bytes) -> Iterator[str]:
        """``data`` in a temp file beside ``target``, fsynced, for the caller to publish; removed after
        (a published temp file has been renamed, or linked, by then)."""
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp's 0600 would make published files private
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            yield tmp
        finally:
            Path(tmp).unlink(missing_ok=True)

    def write_bytes(self, key: str, data: bytes) -> str:
        target = self.path(key)
        with self._temp_file(target, data) as tmp:
            os.replace(tmp, target)
        return str(target)

    def create_bytes(self, key: str, data: bytes) -> bool:
        """Write ``data`` at ``key`` unless it exists; False when it did (nothing written). The content is
        complete before the name appears: a temp file, fsynced, then hard-linked to the name."""
        target = self.path(key)
        with self._temp_file(target, data) as tmp:
            try:
                os.link(tmp, target)
            except FileExistsError:
                return False
        return True

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def read_bytes(self, key: str) -> bytes:
        path = self.path(key)
        if not path.is_file():
            raise StorageError(f"{path} does not exist")
        return path.read_bytes()

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    @contextlib.contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        """The object as a local file (here: the file itself), for readers that want a path."""
        path = self.path(key)
        if not path.is_file():
            raise StorageError(f"{path} does not exist")
        yield path

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        base = self.root / prefix if prefix else self.root
        if not base.exists():
            return
        for path in sorted(base.rglob("*")):
            if path.is_file() and not path.name.endswith(".tmp"):
                yield path.relative_to(self.root).as_posix()


class S3Store:
    """S3 (or any S3-compatible endpoint: boto3 honours ``AWS_ENDPOINT_URL``)."""

    def __init__(self, url: str, client_factory: Callable[[], Any] = s3_client):
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise StorageError(f"{url!r} is not an s3://bucket/prefix URL")
        self.url = url
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self._client_factory = client_factory
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    def _key(self, key: str) -> str:
        key = _clean_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def _call(self, action: str, key: str, fn: Callable[[], Any]) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn()
        except (BotoCoreError, ClientError) as exc:
            raise s3_error(action, self.uri(key), exc) from None

    def write_bytes(self, key: str, data: bytes) -> str:
        self._call("put", key, lambda: self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data))
        return self.uri(key)

    def create_bytes(self, key: str, data: bytes) -> bool:
        """A conditional PUT (``If-None-Match: *``): S3 stores it only if no object has the key."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*")
        except ClientError as exc:
            # 412: the key exists; 409: another conditional PUT of the key is under way (it wins).
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise s3_error("conditional put", self.uri(key), exc) from None
        except BotoCoreError as exc:
            raise s3_error("conditional put", self.uri(key), exc) from None
        return True

    def delete(self, key: str) -> None:
        self._call("delete", key, lambda: self.client.delete_object(Bucket=self.bucket, Key=self._key(key)))

    def read_bytes(self, key: str) -> bytes:
        response = self._call("get", key, lambda: self.client.get_object(Bucket=self.bucket, Key=self._key(key)))
        return response["Body"].read()

    @contextlib.contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        """The object downloaded to a temporary file, removed afterwards."""
        with tempfile.TemporaryDirectory(prefix="s3-") as tmp:
            path = Path(tmp) / Path(_clean_key(key)).name
            path.write_bytes(self.read_bytes(key))
            yield path

    def exists(self, key: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise s3_error("head", self.uri(key), exc) from None
        except BotoCoreError as exc:
            raise s3_error("head", self.uri(key), exc) from None
        return True

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        # A folder-like prefix ends in "/": "imgs" must not also list "imgs2/…".
        full = f"{self._key(prefix)}/" if prefix else (f"{self.prefix}/" if self.prefix else "")
        try:
            pages = list(self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full))
        except (BotoCoreError, ClientError) as exc:
            raise s3_error("list", f"s3://{self.bucket}/{full}", exc) from None
        strip = len(self.prefix) + 1 if self.prefix else 0
        for page in pages:
            for obj in page.get("Contents", []):
                yield obj["Key"][strip:]


def open_store(url: str, s3_client_factory: Callable[[], Any] = s3_client) -> Store:
    """A store for ``url``: ``s3://bucket/prefix`` or a local path (``file://`` accepted)."""
    if url.startswith("s3://"):
        return S3Store(url, s3_client_factory)
    if url.startswith("file://"):
        url = urlparse(url).path
    return LocalStore(url)


def write_parquet(store: Store, key: str, frame: Any) -> str:
    """Write a DataFrame as Parquet (no index) at ``key``; returns its URI. The one Parquet writer."""
    import io

    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return store.write_bytes(key, buffer.getvalue())


def read_parquet(store: Store, key: str, columns: list[str] | None = None) -> Any:
    """The DataFrame stored at ``key`` (StorageError when absent or unreadable). The one Parquet reader."""
    import io

    import pandas as pd

    data = store.read_bytes(key)
    try:
        return pd.read_parquet(io.BytesIO(data), columns=columns)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise StorageError(f"{store.uri(key)} is not a readable Parquet file: {exc}") from None
