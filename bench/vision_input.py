"""Image input at scale (issue 10): figures on a generated ImageFolder in S3, moto server on loopback.

The S3 endpoint is moto's server, started by this script in its own process on a free loopback
port (so its request handling does not share this process's interpreter lock with the readers).
The ImageFolder is generated here: ``--images`` 64×64 RGB PNGs of random pixels (about 12 KB each,
they barely compress), spread over ``--classes`` folders, uploaded by 10 threads.

Figures (``--figure``, one function each, registered in FIGURES):

- ``versioning``: ``dataset.build_manifest`` from scratch (every object read), then after
  overwriting ``--changed`` (1 %) of the images with new pixels, again with the first manifest as
  the previous one (the way ``image_dataset`` runs it). Goals: the re-versioning reads ≤ 2 % of the
  bytes, in ≤ 10 % of the first versioning's time. The bucket is unversioned by default: moto's
  ListObjectVersions deep-copies every stored version on every page (quadratic in the object count),
  which would measure moto; ``--versioned`` runs it anyway.

To add (the other issue 10 figures; each a ``figure_<name>(args)`` added to FIGURES, reusing
``moto_s3`` and ``generate_image_folder``):

- ``streaming``: training images/s streaming shards from S3 vs the same images preloaded as
  in-memory tensors (goal ≥ 0.8×);
- ``rss``: peak RSS of one rank with 10,000 vs 50,000 images (goal: growth ≤ 10 %).

    python bench/vision_input.py --figure versioning [--images 50000] [--changed 0.01] [--workers 8] [--versioned]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def moto_s3() -> Iterator[str]:
    """moto's S3 server in a subprocess on loopback; AWS_* variables point boto3 (and the project's
    S3 client factory) at it while the block runs. Yields the endpoint URL."""
    import urllib.request

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    try:
        deadline = time.monotonic() + 60
        while True:  # poll until the server answers (it imports moto first: seconds)
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not start on {endpoint} (exit code {server.poll()})") from None
                time.sleep(0.2)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=30)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def png(seed: int) -> bytes:
    """A 64×64 RGB PNG of random pixels, different for every seed."""
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def image_key(i: int, classes: int) -> str:
    return f"class-{i % classes:02d}/img-{i:06d}.png"


def generate_image_folder(url: str, images: int, classes: int, first_seed: int = 0, indices: range | list[int] | None = None) -> int:
    """Write ``<class>/<img>.png`` for ``indices`` (default: all ``images``) under the S3 ``url``; returns bytes written."""
    from ecosystem_assets.storage import open_store

    store = open_store(url)
    store.client  # noqa: B018 — one client, created before the threads share it (boto3 clients are thread-safe)

    def put(i: int) -> int:
        data = png(first_seed + i)
        store.write_bytes(image_key(i, classes), data)
        return len(data)

    with ThreadPoolExecutor(max_workers=10) as pool:  # botocore keeps 10 connections per client
        return sum(pool.map(put, indices if indices is not None else range(images), chunksize=64))


def create_bucket(endpoint: str, versioned: bool) -> str:
    import boto3

    name = f"bench-{uuid.uuid4().hex[:10]}"
    s3 = boto3.client("s3", endpoint_url=endpoint)
    s3.create_bucket(Bucket=name)
    if versioned:
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


def goal(label: str, ratio: float, limit: float, unit: str = "%") -> str:
    """One goal line: measured ratio against its limit, met or NOT met."""
    status = "met" if ratio <= limit else "NOT met"
    return f"  {label:<40} {ratio * 100:6.2f} {unit}   goal ≤ {limit * 100:g} {unit}   {status}"


def figure_versioning(args: argparse.Namespace) -> None:
    """First versioning vs re-versioning after changing ``args.changed`` of the images."""
    from ecosystem_assets.vision import dataset as ds

    with moto_s3() as endpoint:
        bucket = create_bucket(endpoint, args.versioned)
        url = f"s3://{bucket}/images"
        started = time.perf_counter()
        written = generate_image_folder(url, args.images, args.classes)
        print(
            f"generated {args.images:,} images ({written / 1e6:.1f} MB) in {url} "
            f"({'versioned' if args.versioned else 'unversioned'} bucket, moto on {endpoint}) in {time.perf_counter() - started:.0f} s",
            flush=True,
        )
        source = ds.open_source(url)

        started = time.perf_counter()
        first = ds.build_manifest(source, workers=args.workers)
        first_s = time.perf_counter() - started
        total = int(first.frame["bytes"].sum())
        print(f"  first versioning: {first_s:8.1f} s, read {first.bytes_read / 1e6:8.1f} MB ({first.images_hashed:,} images)", flush=True)

        count = max(1, round(args.images * args.changed))
        step = args.images / count
        changed = sorted({int(i * step) for i in range(count)})
        generate_image_folder(url, args.images, args.classes, first_seed=10_000_000, indices=changed)  # new pixels, same keys

        started = time.perf_counter()
        listed = ds.list_image_objects(source)
        list_s = time.perf_counter() - started
        started = time.perf_counter()
        again = ds.build_manifest(source, first.frame, workers=args.workers)
        again_s = time.perf_counter() - started
        print(
            f"  re-versioning after changing {len(changed):,} images ({len(changed) / args.images:.1%}): "
            f"{again_s:8.1f} s, read {again.bytes_read / 1e6:8.1f} MB ({again.images_hashed:,} images; "
            f"listing {len(listed):,} objects alone: {list_s:.1f} s)",
            flush=True,
        )
        assert again.images_hashed == len(changed), (again.images_hashed, len(changed))
        assert again.version != first.version and len(again.frame) == len(first.frame) == args.images
        print(goal("bytes read by the re-versioning / total", again.bytes_read / total, 0.02))
        print(goal("re-versioning time / first versioning's", again_s / first_s, 0.10))


# Register new figures here (see the module docstring for the two that issue 10 still asks for).
FIGURES: dict[str, Callable[[argparse.Namespace], None]] = {"versioning": figure_versioning}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--figure", choices=sorted(FIGURES), action="append", help="figure(s) to produce; default: all")
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--changed", type=float, default=0.01, help="fraction of images overwritten before re-versioning")
    parser.add_argument("--workers", type=int, default=8, help="reader threads (dataset.HASH_WORKERS by default in the asset)")
    parser.add_argument("--versioned", action="store_true", help="versioned bucket (moto lists versions in quadratic time)")
    args = parser.parse_args()
    for name in args.figure or sorted(FIGURES):
        print(f"== {name}", flush=True)
        FIGURES[name](args)


if __name__ == "__main__":
    main()
