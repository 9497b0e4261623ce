"""Fixtures for the sales scenario: the fake sales API and an SMTP server, both on loopback."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ecosystem_assets_tests.servers.sales_api import FakeSalesApi
from ecosystem_assets_tests.servers.smtp import SmtpServer, self_signed_cert


@pytest.fixture
def sales_api() -> Iterator[FakeSalesApi]:
    api = FakeSalesApi(page_size=100).start()
    yield api
    api.stop()


@pytest.fixture
def smtp_server(tmp_path: Path) -> Iterator[Callable[..., SmtpServer]]:
    """Factory: smtp_server(security, credentials=None) starts one server; all are stopped after the test."""
    started: list[SmtpServer] = []

    def start(security: str = "none", credentials: tuple[str, str] | None = None) -> SmtpServer:
        cert = self_signed_cert(tmp_path) if security != "none" else None
        server = SmtpServer(security, cert, credentials).__enter__()
        server.cert_file = cert[0] if cert else None
        started.append(server)
        return server

    yield start
    for server in started:
        server.__exit__(None, None, None)
