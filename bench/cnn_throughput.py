"""Training throughput: the project's training step vs a bare PyTorch loop, same run.

Both train the same SmallCNN (same initial weights) on the same in-memory digits train split
(decoded by the project's dataset code at the default 16×16 grayscale), with the same batch size,
optimizer and batching: each epoch a random permutation of the tensors cut into batches. The
project path feeds those batches to ``train.train_epoch`` once per epoch (``Device`` batch
placement, on-device loss/accuracy accounting, read back once per epoch as the trainer does); the
baseline is the textbook loop. The data pipeline is not measured here (the shard streaming of a
real run is ``bench/vision_input.py --figure streaming``): this isolates the per-step overhead of
the project's code. The headline compares the same work (training only); a second line adds a
validation pass per epoch (``train.count_correct`` over the val tensors in batches). Rounds
alternate and the median is reported, so load from other processes on the machine hits both sides alike.

    python bench/cnn_throughput.py [--epochs 3] [--rounds 5] [--batch-size 32] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time


def load_digits_train(image_size: int):
    from ecosystem_assets.storage import open_store
    from ecosystem_assets.vision import dataset as ds

    with tempfile.TemporaryDirectory(prefix="cnn-bench-") as tmp:
        store = open_store(tmp)
        manifest = ds.build_manifest(ds.ensure_digits(store))
        x, y = ds.load_split(ds.PrefixStore(store, ds.DIGITS_PREFIX), manifest.frame, "train", manifest.classes, image_size, "L")
        x_val, y_val = ds.load_split(ds.PrefixStore(store, ds.DIGITS_PREFIX), manifest.frame, "val", manifest.classes, image_size, "L")
    return x, y, x_val, y_val, len(manifest.classes)


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def permuted_batches(x, y, batch_size: int, generator):
    """(x, y) batches of one epoch: a random permutation of the in-memory tensors, cut like the bare loop's."""
    import torch

    order = torch.randperm(len(x), generator=generator).to(x.device)
    for begin in range(0, len(x), batch_size):
        batch = order[begin : begin + batch_size]
        yield x[batch], y[batch]


def project_path(x, y, x_val, y_val, classes, args, device) -> float:
    import torch

    from ecosystem_assets.vision import train
    from ecosystem_assets.vision.model import build_model

    model = build_model(classes, "L", args.image_size, seed=0).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(0)
    where = train.Device(device)
    sync(device)
    started = time.perf_counter()
    for _ in range(args.epochs):
        stats = train.train_epoch(model, optimizer, permuted_batches(x, y, args.batch_size, generator), where)
        if x_val is not None:
            val_batches = ((x_val[i : i + args.batch_size], y_val[i : i + args.batch_size]) for i in range(0, len(x_val), args.batch_size))
            stats = torch.cat([stats, train.count_correct(model, val_batches, where)])
        stats.tolist()  # the trainer reads its epoch figures back once per epoch (the only host sync)
    sync(device)
    return args.epochs * len(x) / (time.perf_counter() - started)


def bare_loop(x, y, classes, args, device) -> float:
    import torch
    import torch.nn.functional as F

    from ecosystem_assets.vision.model import build_model

    model = build_model(classes, "L", args.image_size, seed=0).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(0)
    sync(device)
    started = time.perf_counter()
    for _ in range(args.epochs):
        order = torch.randperm(len(x), generator=generator).to(device)
        model.train()
        for begin in range(0, len(x), args.batch_size):
            batch = order[begin : begin + args.batch_size]
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
    sync(device)
    return args.epochs * len(x) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads on CPU")
    args = parser.parse_args()

    import torch

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cpu":
        # One intra-op thread by default, as each training rank on CPU gets: on a small shared
        # machine more threads than free cores makes OpenMP barriers dominate both sides.
        torch.set_num_threads(args.threads)
    x, y, x_val, y_val, classes = load_digits_train(args.image_size)
    tensors = [torch.from_numpy(a).to(device) for a in (x, y, x_val, y_val)]
    x, y, x_val, y_val = tensors

    one_epoch = argparse.Namespace(**{**vars(args), "epochs": 1})
    project_path(x, y, x_val, y_val, classes, one_epoch, device)  # warm-up
    bare_loop(x, y, classes, one_epoch, device)
    project, with_val, bare = [], [], []
    for _ in range(args.rounds):
        project.append(project_path(x, y, None, None, classes, args, device))
        bare.append(bare_loop(x, y, classes, args, device))
        with_val.append(project_path(x, y, x_val, y_val, classes, args, device))
    p, b, v = statistics.median(project), statistics.median(bare), statistics.median(with_val)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} thread(s))"
    print(
        f"device: {name}; {len(x)} train images {args.image_size}x{args.image_size}, batch {args.batch_size}, "
        f"{args.epochs} epochs x {args.rounds} rounds (median)"
    )
    rounds = lambda values: ", ".join(f"{value:,.0f}" for value in values)  # noqa: E731
    print(f"project training path: {p:,.0f} images/s  (rounds: {rounds(project)})")
    print(f"bare PyTorch loop:     {b:,.0f} images/s  (rounds: {rounds(bare)})")
    print(f"ratio project/bare: {p / b:.3f}")
    # Same path plus its per-epoch validation pass over the val split: extra work the baseline skips.
    print(f"project path incl. per-epoch validation ({len(x_val)} images): {v:,.0f} train images/s, ratio {v / b:.3f}")


if __name__ == "__main__":
    main()
