"""Settings → the whole code location. Tests build their own with their own settings."""

from __future__ import annotations

import dagster as dg

from ecosystem_assets.resources.wiring import build_resources
from ecosystem_assets.sales.definitions import sales_definitions
from ecosystem_assets.settings import Settings


def build_definitions(settings: Settings) -> dg.Definitions:
    return dg.Definitions.merge(sales_definitions(settings), dg.Definitions(resources=build_resources(settings)))
