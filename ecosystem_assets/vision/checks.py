"""Checks on the vision assets.

The dataset checks judge the manifest of the ``image_dataset`` materialization Dagster's lineage
points to (the one made by the check's own run, else the latest that passed its blocking checks: `lineage.upstream`), read from
the key that materialization recorded; they block training on bad data. Each names the dataset
version and the materialization it judged.

The accuracy check is evaluated inside ``cnn_evaluation`` (its spec lives there) because the
promotion it gates happens in the same step; its result is built here.
"""

from typing import Any

import dagster as dg

from ecosystem_assets.lineage import Upstream, lineage_metadata, upstream
from ecosystem_assets.resources.storage import ArtifactStorage

ACCURACY_CHECK = "cnn_accuracy_above_threshold"
MAX_UNDECODABLE_FRACTION = 0.01  # above this the source is broken, not merely untidy


def _judged_manifest(context: dg.AssetCheckExecutionContext, storage: ArtifactStorage) -> tuple[dict[str, Any], Any]:
    """(metadata naming the judged materialization, its manifest frame)."""
    from ecosystem_assets.storage import StorageError
    from ecosystem_assets.vision.dataset import read_manifest

    dataset: Upstream = upstream(context, "image_dataset")
    try:
        frame = read_manifest(storage.store, dataset.storage_key)
    except StorageError as exc:
        raise dg.Failure(description=f"manifest of image_dataset (run {dataset.run_id}) unreadable: {exc}") from None
    return {"dataset_version": dataset.metadata.get("dataset_version"), **lineage_metadata(dataset)}, frame


def decode_severity(total: int, bad: int) -> dg.AssetCheckSeverity | None:
    """None when every file decodes; WARN for a few (≤ 1 %); ERROR (blocks training) above that."""
    if bad == 0:
        return None
    return dg.AssetCheckSeverity.ERROR if bad > MAX_UNDECODABLE_FRACTION * total else dg.AssetCheckSeverity.WARN


# The checks' docstrings are their descriptions in the UI (Dagster takes the docstring when no
# description is given), so the two cannot drift apart.
@dg.asset_check(asset="image_dataset", blocking=True)
def image_files_decode(context: dg.AssetCheckExecutionContext, storage: ArtifactStorage) -> dg.AssetCheckResult:
    """Every listed file decodes as an image. Corrupt, truncated or non-image files are listed and left
    out of training; a few (≤ 1 %) is a warning, more blocks training."""
    from ecosystem_assets.vision.dataset import undecodable

    judged, frame = _judged_manifest(context, storage)
    bad = undecodable(frame)
    severity = decode_severity(len(frame), len(bad))
    rows = "\n".join(f"| {r.path} | {r.bytes} | {str(r.error).replace('|', '/')[:120]} |" for r in bad.head(50).itertuples())
    return dg.AssetCheckResult(
        passed=severity is None,
        severity=severity or dg.AssetCheckSeverity.WARN,
        description=f"{len(bad)} of {len(frame)} files do not decode" if len(bad) else f"all {len(frame)} files decode",
        metadata={
            **judged,
            "files": dg.MetadataValue.int(len(frame)),
            "undecodable": dg.MetadataValue.int(len(bad)),
            "undecodable_fraction": float(len(bad) / max(1, len(frame))),
            "undecodable_paths": dg.MetadataValue.json(sorted(bad["path"])),
            "excluded": dg.MetadataValue.md("| path | bytes | error |\n|---|---:|---|\n" + rows if len(bad) else "_none_"),
        },
    )


@dg.asset_check(asset="image_dataset", blocking=True)
def classes_in_every_split(context: dg.AssetCheckExecutionContext, storage: ArtifactStorage) -> dg.AssetCheckResult:
    """Every class has usable images in train, val and test."""
    from ecosystem_assets.vision.dataset import class_counts, missing_class_splits

    judged, frame = _judged_manifest(context, storage)
    missing = missing_class_splits(frame)
    return dg.AssetCheckResult(
        passed=not missing,
        description=("missing: " + ", ".join(f"{c}/{s}" for c, s in missing)) if missing else "every class in every split",
        metadata={
            **judged,
            "missing": dg.MetadataValue.json([f"{c}/{s}" for c, s in missing]),
            "class_counts": dg.MetadataValue.md(class_counts(frame).to_markdown(index=False)),
        },
    )


@dg.asset_check(asset="image_dataset", blocking=True)
def no_train_test_leakage(context: dg.AssetCheckExecutionContext, storage: ArtifactStorage) -> dg.AssetCheckResult:
    """No identical image content in both train and test."""
    from ecosystem_assets.vision.dataset import leaked_hashes

    judged, frame = _judged_manifest(context, storage)
    leaked = leaked_hashes(frame)
    paths = sorted(frame.loc[frame["sha256"].isin(leaked), "path"])
    return dg.AssetCheckResult(
        passed=not leaked,
        description=f"{len(leaked)} contents appear in train and test" if leaked else "no train/test leakage",
        metadata={**judged, "leaked_contents": dg.MetadataValue.int(len(leaked)), "leaked_paths": dg.MetadataValue.json(paths[:200])},
    )


def accuracy_check_result(accuracy: float, threshold: float, promotion: str) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=ACCURACY_CHECK,
        asset_key="cnn_evaluation",
        passed=accuracy >= threshold,
        severity=dg.AssetCheckSeverity.ERROR,
        # The promotion decision is in the metadata: it may restate these numbers, so not repeated here.
        description=f"test accuracy {accuracy:.4f} {'≥' if accuracy >= threshold else '<'} the threshold {threshold:.2f}",
        metadata={"test_accuracy": float(accuracy), "threshold": float(threshold), "promotion": promotion},
    )


DATASET_CHECKS = [image_files_decode, classes_in_every_split, no_train_test_leakage]
