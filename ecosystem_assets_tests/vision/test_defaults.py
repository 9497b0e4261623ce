"""A user's first dataset trains to a passing model with the default configuration, no tuning.

The set is what a first dataset looks like: three classes of drawn shapes, 150 images each, of
mixed sizes (40–160 px, any aspect), colour modes (RGB, L, P, RGBA) and colours, the shape placed
and sized at random. With the defaults the image size (32) and colour mode (RGB) come from the data,
training stops on its own, and the test accuracy clears the 0.90 promotion gate.
"""

from __future__ import annotations

import io

CLASSES = ("circle", "square", "triangle")


def _shape_png(label: str, seed: int) -> bytes:
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    width, height = (int(v) for v in rng.integers(40, 161, size=2))

    def luminance(rgb: tuple[int, ...]) -> float:
        return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]

    # Any colours, but a shape a person sees at a glance, in grey too: luminances at least 90 apart.
    background = tuple(int(v) for v in rng.integers(0, 256, size=3))
    colour = background
    while abs(luminance(colour) - luminance(background)) < 90:
        colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
    image = Image.new("RGB", (width, height), background)
    side = min(width, height) * rng.uniform(0.4, 0.8)
    x0 = rng.uniform(0, width - side)
    y0 = rng.uniform(0, height - side)
    box = (x0, y0, x0 + side, y0 + side)
    draw = ImageDraw.Draw(image)
    if label == "circle":
        draw.ellipse(box, fill=colour)
    elif label == "square":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([(x0 + side / 2, y0), (x0, y0 + side), (x0 + side, y0 + side)], fill=colour)
    mode = ("RGB", "RGB", "L", "P", "RGBA")[seed % 5]
    buffer = io.BytesIO()
    image.convert(mode).save(buffer, format="PNG")
    return buffer.getvalue()


def test_default_config_trains_a_first_dataset_past_the_gate(tmp_path, one_torch_thread):
    import torch

    from ecosystem_assets.storage import open_store
    from ecosystem_assets.vision import dataset as ds
    from ecosystem_assets.vision import train
    from ecosystem_assets.vision.assets import CnnTrainingConfig, train_spec
    from ecosystem_assets.vision.model import build_model
    from ecosystem_assets.vision.shards import Preprocess, Reader, pack

    source, storage = open_store(str(tmp_path / "shapes")), open_store(str(tmp_path / "storage"))
    for c, label in enumerate(CLASSES):
        for i in range(150):
            source.write_bytes(f"{label}/{i:03d}.png", _shape_png(label, 1000 * c + i))
    manifest = ds.build_manifest(source)
    assert set(manifest.usable["mode"]) == {"RGB", "L", "P", "RGBA"} and manifest.usable["width"].nunique() > 50
    index, _ = pack(storage, source, manifest.frame, manifest.version)

    metadata = {"dataset_version": manifest.version, "classes": list(index.classes), "image_stats": index.image_stats}
    spec = train_spec(
        CnnTrainingConfig(),  # the defaults, untouched
        storage_url=storage.url,
        shards_metadata=metadata,
        shards_key=index.key,
        world_size=1,
        mlflow_tracking_uri=None,
        mlflow_run_id=None,
        dagster_run_id="first-dataset",
    )
    assert (spec.image_size, spec.color_mode, spec.augment, spec.hflip) == (32, "RGB", True, False)

    outcome = train.run(spec)
    assert outcome.result is not None
    # It stopped at the right epoch for the reason it gives, and kept the best epoch's weights.
    stop, history = outcome.result["stop_reason"], outcome.history
    best = max(history, key=lambda r: (r["val_accuracy"], -r["epoch"]))
    assert outcome.result["best_epoch"] == best["epoch"]
    if stop.startswith("validation accuracy did not improve"):
        assert history[-1]["epoch"] == best["epoch"] + spec.patience < spec.max_epochs, stop
    else:
        assert stop == f"reached max_epochs {spec.max_epochs}" and history[-1]["epoch"] == spec.max_epochs, stop

    # Test accuracy of the result (the best epoch's weights), on the test shards, as cnn_evaluation reads them.
    model = build_model(len(spec.classes), spec.color_mode, spec.image_size, spec.seed)
    model.load_state_dict(outcome.state_dict)
    reader = Reader(storage.url, index, 64, loader_workers=0)
    correct, seen = train.count_correct(
        model, reader.batches("test", Preprocess(spec.image_size, spec.color_mode, spec.classes)), train.Device(torch.device("cpu"))
    ).tolist()
    assert seen == sum(index.samples("test")) > 50
    print(f"{len(outcome.history)} epochs, best {outcome.result['best_epoch']}, {stop}; test accuracy {correct / seen:.3f}")
    assert correct / seen >= 0.90, f"test accuracy {correct / seen:.3f} with the defaults; history: {outcome.history}"
