"""The Dagster code location: `dagster dev -m ecosystem_assets.definitions`."""

from ecosystem_assets.project import build_definitions
from ecosystem_assets.settings import Settings

defs = build_definitions(Settings.from_env())
