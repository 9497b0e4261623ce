"""``image_dataset`` and its checks run by Dagster: data version, check severities, blocking, S3."""

from __future__ import annotations

import dagster as dg

from ecosystem_assets.lineage import STORAGE_KEY
from ecosystem_assets.storage import open_store
from ecosystem_assets.vision.dataset import read_manifest
from ecosystem_assets_tests.vision.conftest import png_bytes, write_image_folder


def _run(defs, instance, keys, raise_on_error=True):
    job = defs.resolve_implicit_global_asset_job_def()
    return job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey(k) for k in keys], raise_on_error=raise_on_error)


def _checks(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def _add_bad_files(store) -> None:
    good = png_bytes(31337)
    store.write_bytes("cat/truncated.png", good[: len(good) // 2])
    store.write_bytes("dog/readme.png", b"plain text that pretends to be a PNG\n")


def test_a_few_bad_files_warn_and_the_version_is_stable(tmp_path, monkeypatch, vision_defs, dagster_instance):
    folder = tmp_path / "photos"
    store = open_store(str(folder))
    write_image_folder(store, {"cat": 70, "dog": 70, "owl": 70})
    _add_bad_files(store)  # 2 of 212 files: under 1 %
    monkeypatch.setenv("IMAGE_DATASET_URL", str(folder))
    defs = vision_defs()

    result = _run(defs, dagster_instance, ["image_dataset"])
    checks = _checks(result)
    decode = checks["image_files_decode"]
    assert not decode.passed and decode.severity == dg.AssetCheckSeverity.WARN
    assert decode.metadata["undecodable_paths"].data == ["cat/truncated.png", "dog/readme.png"]
    assert checks["classes_in_every_split"].passed and checks["no_train_test_leakage"].passed

    materialization = result.asset_materializations_for_node("image_dataset")[0]
    metadata = materialization.metadata
    assert metadata["files"].value == 212 and metadata["usable_images"].value == 210 and metadata["undecodable"].value == 2
    totals = {row.split("|")[1].strip(): row.split("|")[-2].strip() for row in metadata["class_counts"].md_str.splitlines()[2:]}
    assert totals == {"cat": "70", "dog": "70", "owl": "70"}  # the two bad files are not counted
    version = metadata["dataset_version"].value
    assert materialization.tags["dagster/data_version"] == version
    assert metadata["source_url"].value == str(folder) and metadata["classes"].value == ["cat", "dog", "owl"]
    # Where the manifest is comes from the materialization, and no "current" pointer is written.
    storage = open_store(str(tmp_path / "home" / "storage"))
    assert metadata[STORAGE_KEY].value == f"datasets/manifests/{version}.parquet"
    manifest = read_manifest(storage, metadata[STORAGE_KEY].value)
    assert set(manifest.loc[manifest["error"].notna(), "path"]) == {"cat/truncated.png", "dog/readme.png"}
    # Dagster's standard metadata describes the manifest table.
    assert metadata["dagster/row_count"].value == len(manifest) == 212
    assert [c.name for c in metadata["dagster/column_schema"].schema.columns] == list(manifest.columns)
    assert len(metadata["preview"].records) == 10
    assert [k for k in storage.list_keys("datasets") if k.endswith(".json")] == []
    # Each check names the materialization it judged.
    assert decode.metadata["dataset_version"].value == version
    assert decode.metadata["input/image_dataset"].value["run_id"] == result.run_id

    again = _run(defs, dagster_instance, ["image_dataset"])
    assert again.asset_materializations_for_node("image_dataset")[0].tags["dagster/data_version"] == version
    store.write_bytes("owl/img-001.png", png_bytes(5150))
    changed = _run(defs, dagster_instance, ["image_dataset"])
    assert changed.asset_materializations_for_node("image_dataset")[0].tags["dagster/data_version"] != version


def test_many_bad_files_block_training(tmp_path, monkeypatch, vision_defs, dagster_instance):
    folder = tmp_path / "photos"
    store = open_store(str(folder))
    write_image_folder(store, {"cat": 20, "dog": 20, "owl": 20})
    _add_bad_files(store)  # 2 of 62 files: over 1 %
    monkeypatch.setenv("IMAGE_DATASET_URL", str(folder))

    result = _run(vision_defs(), dagster_instance, ["image_dataset", "image_shards", "cnn_model"], raise_on_error=False)
    decode = _checks(result)["image_files_decode"]
    assert not decode.passed and decode.severity == dg.AssetCheckSeverity.ERROR
    assert decode.metadata["undecodable"].value == 2
    assert not result.success
    assert result.asset_materializations_for_node("image_dataset")  # written, but …
    assert not result.asset_materializations_for_node("cnn_model")  # … training never ran
    started = {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}
    assert "image_dataset" in started and not started & {"image_shards", "cnn_model"}


def test_dataset_on_s3_with_storage_on_s3(versioned_bucket, s3_endpoint, monkeypatch, vision_defs, dagster_instance):
    source = open_store(f"s3://{versioned_bucket}/raw/pets")
    write_image_folder(source, {"cat": 30, "dog": 30})
    monkeypatch.setenv("IMAGE_DATASET_URL", f"s3://{versioned_bucket}/raw/pets")
    monkeypatch.setenv("ECOSYSTEM_STORAGE_URL", f"s3://{versioned_bucket}/artifacts")

    result = _run(vision_defs(), dagster_instance, ["image_dataset"])
    metadata = result.asset_materializations_for_node("image_dataset")[0].metadata
    assert metadata["usable_images"].value == 60 and metadata["s3_versioned_objects"].value == 60
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"image_files_decode": True, "classes_in_every_split": True, "no_train_test_leakage": True}
    storage = open_store(f"s3://{versioned_bucket}/artifacts")
    assert storage.exists(metadata[STORAGE_KEY].value) and metadata["source_url"].value == f"s3://{versioned_bucket}/raw/pets"


def test_unusable_source_fails_the_asset_with_the_reason(tmp_path, monkeypatch, vision_defs, dagster_instance):
    folder = tmp_path / "one-class"
    write_image_folder(open_store(str(folder)), {"cat": 4})
    monkeypatch.setenv("IMAGE_DATASET_URL", str(folder))
    result = _run(vision_defs(), dagster_instance, ["image_dataset"], raise_on_error=False)
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "only one class ('cat')" in failure.step_failure_data.error.message + str(failure.step_failure_data.user_failure_data)
