"""Settings → the whole code location. Tests build their own with their own settings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg

from ecosystem_assets.alerts.definitions import alerts_definitions
from ecosystem_assets.fraud.definitions import fraud_definitions
from ecosystem_assets.resources.wiring import build_resources
from ecosystem_assets.sales.definitions import sales_definitions
from ecosystem_assets.settings import Settings
from ecosystem_assets.vision.definitions import vision_definitions


def build_definitions(settings: Settings, resource_overrides: Mapping[str, Any] | None = None) -> dg.Definitions:
    """All scenarios' definitions plus the resources the settings select (``resource_overrides`` win)."""
    resources = {**build_resources(settings), **(resource_overrides or {})}
    return dg.Definitions.merge(
        sales_definitions(settings),
        vision_definitions(settings),
        fraud_definitions(settings),
        alerts_definitions(settings),
        dg.Definitions(resources=resources),
    )
