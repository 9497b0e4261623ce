"""Everything scenario 2 (image classifier) contributes to the code location.

Resources (``storage``, ``mlflow_tracking``, and ``pipes_subprocess_client`` that launches
torchrun) come from `ecosystem_assets.resources.wiring`.
"""

import dagster as dg

from ecosystem_assets.run_tags import GPU_TRAINING
from ecosystem_assets.settings import Settings
from ecosystem_assets.vision.assets import build_vision_assets
from ecosystem_assets.vision.checks import DATASET_CHECKS


def vision_definitions(settings: Settings) -> dg.Definitions:
    job = dg.define_asset_job(
        "vision_training_job", selection=dg.AssetSelection.groups("vision"),
        description="Dataset → checks → DDP training under torchrun → evaluation and promotion.",
        tags=GPU_TRAINING,  # on Kubernetes: a GPU node, one training at a time
    )
    return dg.Definitions(
        assets=build_vision_assets(settings.image_dataset_url),
        asset_checks=DATASET_CHECKS,
        jobs=[job],
    )
