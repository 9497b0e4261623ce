"""Artifact storage resource: a local folder or an S3 prefix."""

from __future__ import annotations

from functools import cached_property
from typing import Any

import dagster as dg

from ecosystem_assets.storage import Store, open_store, s3_client


class ArtifactStorage(dg.ConfigurableResource):
    """Where assets keep their files: ``/local/path`` or ``s3://bucket/prefix``.

    S3 clients come from `storage.s3_client` (the project's one factory: timeouts, retry policy);
    boto3 reads credentials from the usual chain (env, profile, IRSA on EKS) and honours
    ``AWS_ENDPOINT_URL`` (MinIO, moto, LocalStack) unless ``s3_endpoint_url`` is set.
    """

    url: str
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    # Per-run artifacts (`retention.prune`): the newest keep_runs always stay, older ones keep_days.
    keep_days: float = 14.0
    keep_runs: int = 48

    def _s3_client(self) -> Any:
        return s3_client(self.s3_endpoint_url, self.s3_region)

    @cached_property
    def store(self) -> Store:
        return open_store(self.url, self._s3_client)
