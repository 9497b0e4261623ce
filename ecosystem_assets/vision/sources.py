"""Where images are read from: a local folder, an S3 prefix (object VersionIds included) or a
folder inside artifact storage, all behind the `Store` interface.

Reading S3 is done here rather than through `S3Store` for what it does not give: the VersionId of
what was read, and reading a pinned version.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from ecosystem_assets.storage import S3Store, Store, open_store, s3_error


class PrefixStore:
    """A view of ``base`` under ``prefix`` (the digits default lives inside artifact storage)."""

    def __init__(self, base: Store, prefix: str):
        self.base, self.prefix = base, prefix.strip("/")
        self.url = f"{base.url.rstrip('/')}/{self.prefix}"

    def full(self, key: str) -> str:
        return f"{self.prefix}/{key}"

    def write_bytes(self, key: str, data: bytes) -> str:
        return self.base.write_bytes(self.full(key), data)

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
