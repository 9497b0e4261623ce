"""Artifact storage on a local folder and on moto's S3 server: round trips and atomic writes.

The atomic-write test runs a writer and a reader in their own processes (this module's `_writer` and
`_reader`, so the module imports nothing heavy at the top) and kills the writer with SIGKILL in the
middle of a write.
"""

from __future__ import annotations

import itertools
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ecosystem_assets.storage import LocalStore, StorageError, open_store

REPO = Path(__file__).resolve().parents[1]
VERSIONS = b"ABCDEFGH"  # object version i is VERSIONS[i] repeated: a torn or mixed object shows
KILL_AT = 12  # the writer is killed as it starts its 13th write, after 12 whole ones


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    from ecosystem_assets.resources.storage import ArtifactStorage

    if request.param == "local":
        return open_store(str(tmp_path / "store"))
    bucket = request.getfixturevalue("s3_bucket")
    return ArtifactStorage(url=f"s3://{bucket}/prefix").store  # through the resource, as the assets use it


def test_round_trip_list_and_local_copy(store):
    store.write_bytes("sales/summary/2026-11-26.csv", b"a,b\n1,2\n")
    store.write_bytes("sales/raw/2026-11-26.parquet", b"PAR1")
    assert store.read_bytes("sales/summary/2026-11-26.csv") == b"a,b\n1,2\n"
    assert store.exists("sales/raw/2026-11-26.parquet") and not store.exists("sales/raw/missing.parquet")
    assert sorted(store.list_keys("sales")) == ["sales/raw/2026-11-26.parquet", "sales/summary/2026-11-26.csv"]
    with store.local_copy("sales/summary/2026-11-26.csv") as path:
        assert path.read_bytes() == b"a,b\n1,2\n" and path.name == "2026-11-26.csv"
    with pytest.raises(StorageError, match=r"missing\.csv"):
        store.read_bytes("sales/missing.csv")


def _writer(url: str, size: int) -> None:
    """Child process: writes versions B, C, D, … of big.bin for ever, saying "writing <i>" before each."""
    store = open_store(url)
    for i in itertools.count():
        version = (i + 1) % len(VERSIONS)
        data = VERSIONS[version : version + 1] * size
        print(f"writing {i}", flush=True)
        store.write_bytes("big.bin", data)


def _reader(url: str, size: int) -> None:
    """Child process: reads big.bin until its stdin closes; one line per read: the version's letter, or
    "BAD <length> <first byte> <last byte>" for anything but a whole version, then "@<monotonic time
    the read began>" (one clock for all processes: CLOCK_MONOTONIC)."""
    store = open_store(url)
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    while not stop.is_set():
        began = time.monotonic()
        data = store.read_bytes("big.bin")
        whole = len(data) == size and data[:1] in [VERSIONS[i : i + 1] for i in range(len(VERSIONS))] and data == data[:1] * size
        read = data[:1].decode() if whole else f"BAD {len(data)} {data[:1]!r} {data[-1:]!r}"
        print(f"{read} @{began}", flush=True)


def _child(role: str, url: str, size: int) -> subprocess.Popen:
    code = f"from ecosystem_assets_tests.test_storage import {role}; {role}({url!r}, {size})"
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _lines(process: subprocess.Popen) -> queue.Queue:
    """The child's stdout lines as they come (None at the end)."""
    lines: queue.Queue = queue.Queue()

    def pump() -> None:
        for line in process.stdout:
            lines.put(line.strip())
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _next(lines: queue.Queue, what: str) -> str:
    line = lines.get(timeout=120)
    assert line is not None, f"the {what} process ended"
    return line


def _wait_for_temp_file(root: Path, timeout_s: float = 120) -> None:
    """Spins until a write's temp file exists under root (a sleep would let the write finish)."""
    deadline = time.monotonic() + timeout_s
    while not any(entry.name.endswith(".tmp") for entry in os.scandir(root)):
        assert time.monotonic() < deadline, "no write began"


@pytest.mark.parametrize(("kind", "size"), [("local", 32 * 1024 * 1024), ("s3", 4 * 1024 * 1024)])
def test_a_writer_killed_mid_write_never_exposes_a_partial_object(kind, size, tmp_path, request):
    root = tmp_path / "store"
    url = str(root) if kind == "local" else f"s3://{request.getfixturevalue('s3_bucket')}/prefix"
    store = open_store(url)
    store.write_bytes("big.bin", b"A" * size)
    reader = _child("_reader", url, size)
    reads = _lines(reader)
    seen = [_next(reads, "reader")]  # the reader is reading before any writer starts
    try:
        for _ in range(20):  # a kill can still land after a write's rename: try again
            writer = _child("_writer", url, size)
            announced = _lines(writer)
            while _next(announced, "writer") != f"writing {KILL_AT}":
                pass
            if kind == "local":
                _wait_for_temp_file(root)  # the write has begun: kill it now, not between two writes
            os.kill(writer.pid, signal.SIGKILL)
            writer.wait()
            # Locally a killed write leaves its temp file behind: the proof that the kill was mid-write.
            # (On S3 the PUT dies with its connection; nothing to see.)
            if kind == "s3" or list(root.rglob("*.tmp")):
                break
        else:
            pytest.fail("twenty kills all landed between writes")
        killed_at, after_kill = time.monotonic(), 0
        while after_kill < 3:  # the reader goes on reading after the kill: three reads begun after it
            seen.append(_next(reads, "reader"))
            after_kill += float(seen[-1].rpartition("@")[2]) > killed_at
    finally:
        reader.stdin.close()
        reader.wait(timeout=120)
    while (line := reads.get(timeout=120)) is not None:
        seen.append(line)
    seen = [line.rpartition(" @")[0] for line in seen]

    assert [line for line in seen if line.startswith("BAD")] == []
    last_whole = VERSIONS[KILL_AT % len(VERSIONS) : KILL_AT % len(VERSIONS) + 1]
    assert len(set(seen)) >= 3 and last_whole.decode() in seen  # it read old and new objects, nothing in between
    assert store.read_bytes("big.bin") == last_whole * size  # the last whole write, not the killed one
    assert list(store.list_keys()) == ["big.bin"]  # the killed write's temp file is not a key


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640)])
def test_local_files_are_published_with_the_usual_modes(tmp_path, umask, mode):
    """Readable by others under the usual umask (022): a file server or another user can read the
    report; what the umask withholds (027) stays withheld. The store reads the umask at import, so
    each runs in a process started under it."""
    script = (
        f"import os, sys; os.umask({umask:#o}); from ecosystem_assets.storage import LocalStore; "
        "s = LocalStore(sys.argv[1]); s.write_bytes('a/report.csv', b'x'); s.create_bytes('a/record.json', b'{}')"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, timeout=120)
    assert {(tmp_path / "a" / name).stat().st_mode & 0o777 for name in ("report.csv", "record.json")} == {mode}


def test_local_failed_write_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch):
    store = LocalStore(tmp_path)
    store.write_bytes("a/report.csv", b"old")

    def boom(*args):
        raise OSError("disk full")

    monkeypatch.setattr("os.fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        store.write_bytes("a/report.csv", b"new")
    assert store.read_bytes("a/report.csv") == b"old"
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["report.csv"]


@pytest.mark.parametrize("key", ["../escape.csv", "", "a/../../b"])
def test_keys_cannot_escape_the_root(tmp_path, key):
    with pytest.raises(StorageError, match="invalid storage key"):
        LocalStore(tmp_path).write_bytes(key, b"x")


def test_unreachable_bucket_names_the_object(s3_endpoint):
    from ecosystem_assets.resources.storage import ArtifactStorage

    store = ArtifactStorage(url="s3://no-such-bucket-xyz/p").store
    with pytest.raises(StorageError, match=r"s3://no-such-bucket-xyz/p/k.csv failed: NoSuchBucket"):
        store.write_bytes("k.csv", b"x")
