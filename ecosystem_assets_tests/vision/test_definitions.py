"""The vision code location: its shape, and that loading it stays light."""

from __future__ import annotations

import subprocess
import sys

import dagster as dg


def test_loading_the_definitions_imports_no_heavy_library():
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import ecosystem_assets.vision.definitions"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    modules = {line.split("|")[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
    assert "ecosystem_assets.vision.definitions" in modules
    heavy = {m for m in modules if m.split(".")[0] in {"torch", "mlflow", "sklearn", "pandas", "numpy", "PIL", "boto3", "dagster_mlflow"}}
    assert not heavy, sorted(heavy)[:10]


def test_vision_definitions_shape(vision_defs):
    defs = vision_defs()
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys() if graph.get(k).group_name == "vision"}
    assert keys == {"image_dataset", "image_shards", "cnn_model", "cnn_evaluation"}
    assert {graph.get(dg.AssetKey(k)).group_name for k in keys} == {"vision"}
    checks = {(c.asset_key.to_user_string(), c.name) for c in graph.asset_check_keys if c.asset_key.to_user_string() in keys}
    assert checks == {
        ("image_dataset", "image_files_decode"),
        ("image_dataset", "classes_in_every_split"),
        ("image_dataset", "no_train_test_leakage"),
        ("cnn_evaluation", "cnn_accuracy_above_threshold"),
    }
    assert graph.get(dg.AssetKey("image_shards")).parent_keys == {dg.AssetKey("image_dataset")}
    assert graph.get(dg.AssetKey("cnn_model")).parent_keys == {dg.AssetKey("image_shards")}
    assert defs.resolve_job_def("vision_training_job") is not None
    for key in keys:
        assert graph.get(dg.AssetKey(key)).description, f"{key} has no docstring"


def test_the_image_source_is_a_resource_set_from_the_setting(vision_defs, monkeypatch, tmp_path):
    assert vision_defs().resources["image_source"].url is None  # unset → the digits default
    monkeypatch.setenv("IMAGE_DATASET_URL", str(tmp_path / "pictures"))
    defs = vision_defs()
    assert defs.resources["image_source"].url == str(tmp_path / "pictures")
    assert "image_source" in defs.resolve_assets_def("image_dataset").required_resource_keys
