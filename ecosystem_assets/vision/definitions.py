"""Everything scenario 2 (image classifier) contributes to the code location.

Resources (``storage``, ``image_source`` from ``IMAGE_DATASET_URL``, ``mlflow_tracking``, and
``pipes_subprocess_client`` that launches torchrun) come from `ecosystem_assets.resources.wiring`.
"""

import dagster as dg

from ecosystem_assets.run_tags import GPU_TRAINING
from ecosystem_assets.settings import Settings
from ecosystem_assets.vision.assets import cnn_evaluation, cnn_model, image_dataset
from ecosystem_assets.vision.checks import DATASET_CHECKS


def vision_definitions(settings: Settings) -> dg.Definitions:
    """The vision assets, checks and job. ``settings`` is not needed here (every scenario's builder takes
    it): the one per-deployment choice, the image source, arrives as the ``image_source`` resource."""
    job = dg.define_asset_job(
        "vision_training_job",
        selection=dg.AssetSelection.groups("vision"),
        description="Dataset → checks → DDP training under torchrun → evaluation and promotion.",
        tags=GPU_TRAINING,  # on Kubernetes: a GPU node, one training at a time
    )
    return dg.Definitions(
        assets=[image_dataset, cnn_model, cnn_evaluation],
        asset_checks=DATASET_CHECKS,
        jobs=[job],
    )
