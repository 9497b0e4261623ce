"""Vision assets: versioned image dataset → training shards → CNN trained under torchrun (via Pipes) →
evaluation and promotion.

Thin Dagster wiring over plain modules; torch, mlflow, PIL and pandas are imported inside assets.
No asset reads a "current" file: each records where its artifact is (``lineage.STORAGE_KEY``) and
the next one reads the upstream materialization of its own run, else the latest that passed its blocking checks (`lineage.upstream`).
"""

import dataclasses
import hashlib
import json
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import dagster as dg
from pydantic import Field

from ecosystem_assets.asset_metadata import markdown_image, table_metadata, table_preview
from ecosystem_assets.lineage import STORAGE_KEY, lineage_metadata, upstream
from ecosystem_assets.resources.mlflow import MlflowTracking
from ecosystem_assets.resources.storage import ArtifactStorage
from ecosystem_assets.resources.training import TrainingBackend
from ecosystem_assets.resources.vision import ImageSource
from ecosystem_assets.vision.checks import ACCURACY_CHECK, accuracy_check_result

if TYPE_CHECKING:
    from ecosystem_assets.vision.train import TrainSpec


def _source_code_version() -> str:
    """Hash of the code that determines the weights: a change marks cnn_model stale."""
    digest = hashlib.sha256()
    for name in ("dataset.py", "shards.py", "model.py", "train.py", "checkpoints.py"):
        digest.update((Path(__file__).parent / name).read_bytes())
    return digest.hexdigest()[:12]


CODE_VERSION = _source_code_version()  # cnn_model's: changes with the code that determines the weights
OWNERS = ["team:ml-platform"]
# Code versions of the other assets: bump one when its logic changes, so Dagster marks what it made as stale.
DATASET_CODE_VERSION = "1"
SHARDS_CODE_VERSION = "1"
EVALUATION_CODE_VERSION = "1"
EXPERIMENT = "image-classifier"
EVALUATION_PREFIX = "models/cnn/evaluations"  # + /<run id>/: confusion_matrix.png, evaluation.json
# The Dagster pool of cnn_model: with a limit of 1 on the instance (`dagster instance concurrency
# set gpu-training 1`), one training at a time, whichever run materializes it — vision_training_job
# or an ad-hoc materialization, which carries none of the job's run tags. Named like the run queue's
# tag value of the job (run_tags.RUN_QUEUE), which still keeps a second job run from taking a GPU node.
TRAINING_POOL = "gpu-training"


def git_commit() -> str:
    """The commit of the running code: ECOSYSTEM_CODE_VERSION when set (the image sets it from its
    GIT_COMMIT build argument, deploy/Dockerfile; it has no git), else `git rev-parse HEAD`, else "unknown"."""
    if version := os.environ.get("ECOSYSTEM_CODE_VERSION", "").strip():
        return version
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


class CnnTrainingConfig(dg.Config):
    max_epochs: int = Field(default=30, ge=1, description="Upper bound on epochs; training usually stops earlier (patience).")
    patience: int = Field(
        default=5, ge=0, description="Stop after this many epochs without a better validation accuracy (0: always run max_epochs)."
    )
    batch_size: int = Field(default=32, ge=1, description="Per process: the global batch is batch_size × processes.")
    learning_rate: float = Field(default=2e-3, gt=0)
    lr_schedule: Literal["plateau", "constant"] = Field(
        default="plateau", description="'plateau': halve the learning rate after 2 epochs without a better validation accuracy."
    )
    image_size: int = Field(
        default=0,
        ge=0,
        description="Images are resized to image_size × image_size (a multiple of 4, at least 8); "
        "0: the dataset's median side rounded to a multiple of 4, between 16 and 32.",
    )
    color_mode: Literal["auto", "L", "RGB"] = Field(
        default="auto", description="'L' (grayscale) or 'RGB': every image is converted to it; 'auto': RGB when most images are in colour."
    )
    augment: bool = Field(default=True, description="Light augmentation of training images: small shifts, ±10 % brightness/contrast.")
    hflip: bool = Field(default=False, description="Also flip training images left-right (not for digits or text).")
    loader_workers: int = Field(
        default=-1,
        ge=-1,
        description="DataLoader worker processes per training process (decode, resize, augment); 0: in the training process; "
        "-1: a quarter of the node's cores per process, 1 to 4.",
    )
    nproc_per_node: int = Field(
        default=0,
        ge=0,
        description="Training processes per node; 0 → one per GPU, or 2 on CPU (local), TRAINING_GPUS_PER_NODE or 1 (pytorchjob).",
    )
    threads_per_process: int = Field(
        default=0, ge=0, description="CPU threads per process; 0 → the node's cores divided among the processes."
    )
    seed: int = 0
    resume: bool = Field(
        default=True,
        description="Continue from the last checkpoint of this run's re-execution chain (a re-execution from failure "
        "resumes the run it re-executes; a new run starts fresh), if the configuration and data are unchanged.",
    )


class CnnEvaluationConfig(dg.Config):
    accuracy_threshold: float = Field(default=0.90, ge=0.0, le=1.0)


@dg.asset(group_name="vision", kinds={"python", "parquet"}, owners=OWNERS, code_version=DATASET_CODE_VERSION)
def image_dataset(context: dg.AssetExecutionContext, storage: ArtifactStorage, image_source: ImageSource) -> dg.MaterializeResult:
    """The labelled image set the classifier learns from, frozen as an immutable manifest.

    Every image is listed with its class, size, sha256, S3 VersionId and train/val/test split
    (from its content hash, so adding images never moves old ones). The data version is the
    content hash of the whole set: unchanged data keeps the version, and models trained on an
    older version show as stale. Undecodable files are listed and excluded. The materialization
    records the manifest's key, the source and the classes: that is what training and the checks read.

    Incremental: an image whose size and ETag/VersionId (local: mtime) match its row in the manifest
    of the latest materialization of the same source reuses that row; only new or changed images are read.
    """
    from ecosystem_assets.lineage import MissingUpstream
    from ecosystem_assets.storage import StorageError
    from ecosystem_assets.vision import dataset as ds

    try:
        source = image_source.open(storage.store)
        try:
            last = upstream(context, "image_dataset")  # no run materializes it twice: the latest
        except MissingUpstream:
            last = None
        recorded = (last.metadata.get(STORAGE_KEY), last.metadata.get("source_url")) if last else (None, None)
        previous, why = ds.previous_manifest(storage.store, recorded[0], recorded[1], source.url)
        # Same source but nothing to reuse (file gone or corrupt, older format) is worth a warning; the run goes on.
        (context.log.warning if previous is None and recorded[0] and recorded[1] == source.url else context.log.info)(why)
        manifest = ds.build_manifest(source, previous, log=context.log.info)
        uri = ds.write_manifest(storage.store, manifest)
    except (ds.DatasetError, StorageError) as exc:
        raise dg.Failure(description=f"image_dataset: {exc}") from None
    frame, usable = manifest.frame, manifest.usable
    context.log.info(
        f"dataset version {manifest.version} from {image_source.label}: {len(usable)} usable of {len(frame)} files; "
        f"{manifest.images_hashed} read ({manifest.bytes_read} bytes), the rest unchanged"
    )
    sizes = usable.groupby(["width", "height", "mode"]).size().reset_index(name="images")
    return dg.MaterializeResult(
        data_version=dg.DataVersion(manifest.version),
        metadata={
            STORAGE_KEY: manifest.key,
            "dataset_version": manifest.version,
            "manifest": dg.MetadataValue.path(uri),
            "source_url": source.url,
            "source": image_source.label,
            "classes": dg.MetadataValue.json(manifest.classes),
            "files": dg.MetadataValue.int(len(frame)),
            "images": dg.MetadataValue.int(len(frame)),
            "images_hashed": dg.MetadataValue.int(manifest.images_hashed),
            "bytes_read": dg.MetadataValue.int(manifest.bytes_read),
            "bytes_total": dg.MetadataValue.int(int(frame["bytes"].sum())),
            "usable_images": dg.MetadataValue.int(len(usable)),
            "undecodable": dg.MetadataValue.int(len(frame) - len(usable)),
            "class_count": dg.MetadataValue.int(len(manifest.classes)),
            "total_bytes": dg.MetadataValue.int(int(frame["bytes"].sum())),
            "s3_versioned_objects": dg.MetadataValue.int(int(frame["version_id"].notna().sum())),
            "class_counts": dg.MetadataValue.md(ds.class_counts(frame).to_markdown(index=False)),
            "sizes_and_modes": table_preview(sizes, rows=20),
            # The manifest is the table: one row per file listed.
            **table_metadata(frame, preview_rows=10),
        },
    )


@dg.asset(group_name="vision", deps=[image_dataset], kinds={"python", "webdataset"}, owners=OWNERS, code_version=SHARDS_CODE_VERSION)
def image_shards(context: dg.AssetExecutionContext, storage: ArtifactStorage) -> dg.MaterializeResult:
    """The usable images of the dataset version, packed once into WebDataset tar shards that training streams.

    Packs the ``image_dataset`` materialization of this run, else the latest one that passed its blocking checks: every image at
    the VersionId its manifest pins, its sha256 checked against the manifest, in content-hash order,
    under ``datasets/shards/<version>/<split>/``, with ``index.json`` written last. A version already
    packed is reused as it is (shards are immutable), so re-materializing costs one read. The data
    version is the dataset version: a model trained on these shards is fresh exactly as long as the data is.
    """
    from ecosystem_assets.storage import StorageError
    from ecosystem_assets.vision import dataset as ds
    from ecosystem_assets.vision.shards import SPLITS, ShardError, pack

    dataset = upstream(context, "image_dataset")
    version, source_url = dataset.metadata.get("dataset_version"), dataset.metadata.get("source_url")
    if not isinstance(version, str) or not isinstance(source_url, str):
        raise dg.Failure(description=f"the image_dataset materialization of run {dataset.run_id} records no dataset_version or source_url")
    try:
        frame = ds.read_manifest(storage.store, dataset.storage_key)
        index, reused = pack(storage.store, ds.open_source(source_url), frame, version, log=context.log.info)
    except (ShardError, StorageError) as exc:
        raise dg.Failure(description=f"image_shards: {exc}") from None
    context.log.info(f"shards of dataset version {version}: " + ("reused, already packed" if reused else "packed now"))
    splits = dg.MetadataValue.table(
        records=[
            dg.TableRecord(
                data={
                    "split": s,
                    "shards": len(index.shards(s)),
                    "images": sum(index.samples(s)),
                    "mb": round(sum(e["bytes"] for e in index.splits[s]) / 1e6, 1),
                }
            )
            for s in SPLITS
        ],
        schema=dg.TableSchema(
            columns=[
                dg.TableColumn("split", "string"),
                dg.TableColumn("shards", "int"),
                dg.TableColumn("images", "int"),
                dg.TableColumn("mb", "float"),
            ]
        ),
    )
    return dg.MaterializeResult(
        data_version=dg.DataVersion(version),
        metadata={
            STORAGE_KEY: index.key,
            "dataset_version": version,
            "index": dg.MetadataValue.path(storage.store.uri(index.key)),
            "classes": dg.MetadataValue.json(list(index.classes)),
            "image_stats": dg.MetadataValue.json(index.image_stats),
            "shards": dg.MetadataValue.int(sum(len(index.shards(s)) for s in SPLITS)),
            "images": dg.MetadataValue.int(sum(sum(index.samples(s)) for s in SPLITS)),
            "bytes": dg.MetadataValue.int(sum(e["bytes"] for s in SPLITS for e in index.splits[s])),
            "splits": splits,
            "reused": reused,
            **lineage_metadata(dataset),
        },
    )


@dg.asset(
    group_name="vision",
    deps=[image_shards],
    kinds={"pytorch", "mlflow"},
    owners=OWNERS,
    code_version=CODE_VERSION,
    pool=TRAINING_POOL,
)
def cnn_model(
    context: dg.AssetExecutionContext,
    config: CnnTrainingConfig,
    storage: ArtifactStorage,
    mlflow_tracking: MlflowTracking,
    training: TrainingBackend,
) -> dg.MaterializeResult:
    """The image classifier's weights, trained with PyTorch DDP under torchrun and tracked in MLflow.

    Trains on the ``image_shards`` materialization of this run, else the latest one that passed its blocking checks, streaming the
    shards (each process its own, decoded and augmented by DataLoader workers). Training runs in its
    own processes (NCCL on GPUs, gloo on CPU): beside this run (``TRAINING_BACKEND=local``) or as a
    Kubeflow PyTorchJob across ``TRAINING_NODES`` pods (``pytorchjob``). It stops when validation
    accuracy has not improved for ``patience`` epochs (the best epoch's weights are the model; the
    history says why it stopped) and checkpoints every epoch to storage, in a folder of its
    re-execution chain: a re-execution from failure of a killed run resumes from its last
    checkpoint, a new run starts fresh. One training at a time on the instance (pool
    ``gpu-training``, once its limit is set). Progress (epoch, loss, accuracy, images/s) streams
    into this run's logs through Dagster Pipes. The weights and the result record go to a folder of
    this run; the materialization records the result's key.
    """
    import io

    from PIL import Image

    from ecosystem_assets.vision.curves import ARTIFACT as CURVES_ARTIFACT
    from ecosystem_assets.vision.curves import training_curves_png

    if config.image_size and (config.image_size % 4 or config.image_size < 8):
        raise dg.Failure(description=f"image_size must be a multiple of 4 and at least 8 (two 2x poolings), got {config.image_size}")
    shards = upstream(context, "image_shards")
    classes = shards.metadata.get("classes")
    if not isinstance(classes, list) or "dataset_version" not in shards.metadata:
        raise dg.Failure(description=f"the image_shards materialization of run {shards.run_id} records no classes or dataset_version")
    _warn_if_pool_unlimited(context)
    nodes = training.node_count
    nproc = training.processes_per_node(config.nproc_per_node) or _default_nproc()
    with mlflow_tracking.run(context, EXPERIMENT) as mlf:
        run_info = mlf.active_run().info
        run_id = run_info.run_id
        spec = train_spec(
            config,
            storage_url=storage.url,
            shards_metadata=shards.metadata,
            shards_key=shards.storage_key,
            world_size=nodes * nproc,
            cpus_per_process=training.cpus_per_node() // nproc,
            mlflow_tracking_uri=mlflow_tracking.tracking_uri,
            mlflow_run_id=run_id,
            dagster_run_id=context.run_id,
            root_run_id=context.run.root_run_id,
        )
        threads = config.threads_per_process or max(1, training.cpus_per_node() // nproc)
        invocation = training.run(context, spec, storage=storage, nproc_per_node=nproc, threads=threads)
        reported = invocation.get_materialize_result()
        result_key = spec.output_key("result.json")
        if not storage.store.exists(result_key):  # what cnn_evaluation will read
            raise dg.Failure(description=f"training finished without its result record {storage.store.uri(result_key)}")
        # The curves are drawn here, not by rank 0: one picture of the whole history, resumed epochs included.
        result = json.loads(storage.store.read_bytes(result_key))
        curves = training_curves_png(result["history"], result.get("best_epoch")) if result.get("history") else None
        if curves is not None:
            mlf.log_image(Image.open(io.BytesIO(curves)), CURVES_ARTIFACT)
    return dg.MaterializeResult(
        metadata={
            **(reported.metadata or {}),
            STORAGE_KEY: result_key,
            "mlflow_run_id": run_id,
            "mlflow_run": dg.MetadataValue.url(mlflow_tracking.run_url(run_id, run_info.experiment_id)),
            **({"training_curves": dg.MetadataValue.md(markdown_image("training curves", curves))} if curves else {}),
            "training_fingerprint": spec.fingerprint,
            "global_batch_size": dg.MetadataValue.int(config.batch_size * nodes * nproc),
            "training_backend": training.backend,
            "nodes": dg.MetadataValue.int(nodes),
            "nproc_per_node": dg.MetadataValue.int(nproc),
            **invocation.metadata,
            "image_size": dg.MetadataValue.int(spec.image_size),
            "color_mode": spec.color_mode,
            **lineage_metadata(shards),
        }
    )


@dg.asset(
    group_name="vision",
    deps=[cnn_model],
    kinds={"pytorch", "mlflow"},
    owners=OWNERS,
    code_version=EVALUATION_CODE_VERSION,
    check_specs=[
        dg.AssetCheckSpec(
            ACCURACY_CHECK,
            asset="cnn_evaluation",
            blocking=True,
            description="Test accuracy ≥ accuracy_threshold (default 0.90); gates promotion to champion.",
        )
    ],
)
def cnn_evaluation(
    context: dg.AssetExecutionContext,
    config: CnnEvaluationConfig,
    storage: ArtifactStorage,
    mlflow_tracking: MlflowTracking,
) -> dg.MaterializeResult:
    """How good the classifier is on held-out images, and whether it now serves as champion.

    Evaluates the ``cnn_model`` materialization of this run, else the latest one that passed its blocking checks. Accuracy,
    per-class precision/recall and the confusion matrix on the test split go to this asset and to
    the model's MLflow run (``test_accuracy``). The model is registered as ``image-classifier``;
    alias ``champion`` moves to it only if the accuracy check passes and it is at least as
    accurate as the current champion on the same test split.
    """
    from ecosystem_assets.storage import StorageError
    from ecosystem_assets.vision.registry import EvaluationError, evaluate_and_promote

    model = upstream(context, "cnn_model")
    try:
        info = json.loads(storage.store.read_bytes(model.storage_key))
    except StorageError as exc:
        raise dg.Failure(description=f"training result of cnn_model (run {model.run_id}) unreadable: {exc}") from None
    output_prefix = f"{EVALUATION_PREFIX}/{context.run_id}"
    try:
        with mlflow_tracking.run(context, EXPERIMENT, run_id=info["mlflow_run_id"]) as mlf:
            outcome = evaluate_and_promote(
                storage.store, mlflow_tracking.client(), mlf, info, config.accuracy_threshold, context.log, output_prefix
            )
    except EvaluationError as exc:
        raise dg.Failure(description=f"cnn_evaluation: {exc}") from None
    report, decision = outcome.report, outcome.decision
    return dg.MaterializeResult(
        metadata={
            STORAGE_KEY: outcome.evaluation_key,
            "test_accuracy": report.accuracy,
            "test_images": dg.MetadataValue.int(report.count),
            "per_class": dg.MetadataValue.md(report.per_class_markdown()),
            "confusion_matrix": dg.MetadataValue.md(report.confusion_markdown() + "\n\n" + markdown_image("confusion matrix", outcome.png)),
            "confusion_matrix_png": dg.MetadataValue.path(outcome.png_uri),
            "registered_model": outcome.model_name,
            "model_version": outcome.version,
            "mlflow_model_version": dg.MetadataValue.url(mlflow_tracking.model_version_url(outcome.model_name, outcome.version)),
            "mlflow_run": dg.MetadataValue.url(mlflow_tracking.run_url(outcome.run_id)),
            "champion_version": outcome.champion_after or "none",
            "previous_champion_accuracy": outcome.champion_accuracy if outcome.champion_accuracy is not None else "n/a",
            "promoted": decision.promote,
            "promotion": decision.reason,
            "mlflow_run_id": outcome.run_id,
            "dataset_version": outcome.dataset_version,
            **lineage_metadata(model),
        },
        check_results=[accuracy_check_result(report.accuracy, config.accuracy_threshold, decision.reason)],
    )


def train_spec(
    config: CnnTrainingConfig,
    *,
    storage_url: str,
    shards_metadata: Mapping[str, Any],
    shards_key: str,
    world_size: int,
    mlflow_tracking_uri: str | None,
    mlflow_run_id: str | None,
    dagster_run_id: str,
    root_run_id: str | None = None,
    cpus_per_process: int = 1,
) -> "TrainSpec":
    """What ``cnn_model`` asks the training processes to do, from its config and the shards it read.

    Checkpoints belong to the run's re-execution chain: ``root_run_id`` (the Dagster run's
    ``root_run_id``; None for a run that is no re-execution) else ``dagster_run_id``."""
    from ecosystem_assets.vision.train import TrainSpec

    stats = shards_metadata.get("image_stats") or {}
    spec = TrainSpec(
        storage_url=storage_url,
        shards_key=shards_key,
        dataset_version=shards_metadata["dataset_version"],
        classes=tuple(shards_metadata["classes"]),
        max_epochs=config.max_epochs,
        patience=config.patience,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        lr_schedule=config.lr_schedule,
        image_size=config.image_size or default_image_size(stats),
        color_mode=default_color_mode(stats) if config.color_mode == "auto" else config.color_mode,
        augment=config.augment,
        hflip=config.hflip,
        seed=config.seed,
        world_size=world_size,
        # Decoding a thumbnail costs far less than a training step on it: a few workers keep a rank fed.
        loader_workers=config.loader_workers if config.loader_workers >= 0 else min(4, max(1, cpus_per_process // 4)),
        code_version=CODE_VERSION,
        resume=config.resume,
        mlflow_tracking_uri=mlflow_tracking_uri,
        mlflow_run_id=mlflow_run_id,
        extra_params={"git_commit": git_commit(), "dagster_run_id": dagster_run_id},
        run_group=root_run_id or dagster_run_id,
    )
    # Checkpoints are the chain's (resume); the published result is this run's own.
    return dataclasses.replace(spec, output_prefix=f"{spec.prefix}/runs/{dagster_run_id}")


def _warn_if_pool_unlimited(context: dg.AssetExecutionContext) -> None:
    """A pool without a limit holds nothing back: say so in the run, with the command that sets it."""
    storage = context.instance.event_log_storage
    if not storage.supports_global_concurrency_limits:  # an in-memory instance (tests, `dg.materialize`)
        return
    if not storage.get_concurrency_info(TRAINING_POOL).limit:
        context.log.warning(
            f"pool {TRAINING_POOL!r} has no limit on this Dagster instance, so other cnn_model runs may train at the "
            f"same time; set it with `dagster instance concurrency set {TRAINING_POOL} 1` (or in the UI: Deployment → Concurrency)"
        )


def default_image_size(stats: Mapping[str, Any]) -> int:
    """The dataset's median shorter side, rounded to a multiple of 4, within 16..32: thumbnails are not
    blown up past what they hold, and photos are cut to what this small CNN trains quickly on CPU."""
    side = min(int(stats.get("median_width") or 16), int(stats.get("median_height") or 16))
    return min(32, max(16, round(side / 4) * 4))


def default_color_mode(stats: Mapping[str, Any]) -> str:
    """RGB when at least half of the usable images are in colour, else grayscale (fewer weights, same signal)."""
    return "RGB" if float(stats.get("colour_share") or 0.0) >= 0.5 else "L"


def _default_nproc() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 2
