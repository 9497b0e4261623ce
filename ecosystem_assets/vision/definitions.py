"""Everything scenario 2 (image classifier) contributes to the code location.

Resources (``storage``, ``image_source`` from ``IMAGE_DATASET_URL``, ``mlflow_tracking``, and
``training`` that launches torchrun locally or as a PyTorchJob) come from `ecosystem_assets.resources.wiring`.
"""

import dagster as dg

from ecosystem_assets.run_tags import GPU_TRAINING, PYTORCHJOB_TRAINING
from ecosystem_assets.settings import Settings
from ecosystem_assets.vision.assets import cnn_evaluation, cnn_model, image_dataset, image_shards
from ecosystem_assets.vision.checks import DATASET_CHECKS


def vision_definitions(settings: Settings) -> dg.Definitions:
    """The vision assets, checks and job. ``settings.training_backend`` decides where the job's run
    pod goes on Kubernetes (its run tags); the image source and the training backend themselves
    arrive as the ``image_source`` and ``training`` resources."""
    job = dg.define_asset_job(
        "vision_training_job",
        selection=dg.AssetSelection.groups("vision"),
        description="Dataset → checks → shards → DDP training under torchrun → evaluation and promotion.",
        # On Kubernetes: the whole run on a GPU node (local), or a CPU run whose PyTorchJob gets the
        # GPUs (pytorchjob); the run queue admits one run of this job at a time. The training itself
        # is held to one at a time by cnn_model's pool (assets.TRAINING_POOL), which also holds back
        # an ad-hoc materialization of cnn_model: such a run carries none of these tags.
        tags=PYTORCHJOB_TRAINING if settings.training_backend == "pytorchjob" else GPU_TRAINING,
    )
    return dg.Definitions(
        assets=[image_dataset, image_shards, cnn_model, cnn_evaluation],
        asset_checks=DATASET_CHECKS,
        jobs=[job],
    )
