"""Where the image classifier's pictures come from: the one per-deployment setting of the vision assets."""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

if TYPE_CHECKING:
    from ecosystem_assets.storage import Store

DIGITS_LABEL = "scikit-learn digits (written to storage under datasets/digits/)"


class ImageSource(dg.ConfigurableResource):
    """An ImageFolder (``<class>/<file>``) in a local folder or under ``s3://bucket/prefix``.

    Unset, scikit-learn's digits are written once as PNGs into artifact storage and read from there,
    through the same code path as any other source.
    """

    url: str | None = Field(default=None, description="IMAGE_DATASET_URL: local folder or s3://bucket/prefix; unset → the digits.")

    @property
    def label(self) -> str:
        """Where the images come from, for logs and metadata."""
        return self.url or DIGITS_LABEL

    def open(self, storage: Store) -> Store:
        """The images as a store; ``storage`` holds the digits default."""
        from ecosystem_assets.vision import dataset as ds

        return ds.open_source(self.url) if self.url else ds.ensure_digits(storage)
