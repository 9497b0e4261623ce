"""A real Postgres server for the tests: the one ECOSYSTEM_TEST_POSTGRES_URL names, or else a private
server started from the binaries that the `pgserver` wheel ships (dev extra; it runs the server as
an unprivileged user when the tests run as root, since postgres refuses root). One server per test
session, one fresh database per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def postgres_server(workdir: Path) -> Iterator[str]:
    """Yields an admin SQLAlchemy URL (postgresql+psycopg2://…) of a running server."""
    external = os.environ.get("ECOSYSTEM_TEST_POSTGRES_URL")
    if external:
        yield external
        return
    import pgserver

    server = pgserver.get_server(workdir, cleanup_mode="delete")
    try:
        # pgserver listens on a Unix socket in a private folder (no port to collide with).
        yield server.get_uri().replace("postgresql://", "postgresql+psycopg2://", 1)
    finally:
        server.cleanup()


@contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """A new, empty database on the server; dropped afterwards. Yields its URL."""
    import sqlalchemy as sa

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sa.engine.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
