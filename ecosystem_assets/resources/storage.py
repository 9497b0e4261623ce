"""Artifact storage resource: local folder or S3 through dagster-aws' `S3Resource`."""

from __future__ import annotations

from functools import cached_property

import dagster as dg

from ecosystem_assets.storage import Store, open_store


class ArtifactStorage(dg.ConfigurableResource):
    """Where assets keep their files: ``/local/path`` or ``s3://bucket/prefix``.

    For S3 the client comes from dagster-aws' `S3Resource`; boto3 reads credentials from the usual
    chain (env, profile, IRSA on EKS) and honours ``AWS_ENDPOINT_URL`` (MinIO, moto, LocalStack).
    """

    url: str
    s3_endpoint_url: str | None = None
    s3_region: str | None = None

    def _s3_client(self):
        from dagster_aws.s3 import S3Resource

        return S3Resource(endpoint_url=self.s3_endpoint_url, region_name=self.s3_region).get_client()

    @cached_property
    def store(self) -> Store:
        return open_store(self.url, self._s3_client)
