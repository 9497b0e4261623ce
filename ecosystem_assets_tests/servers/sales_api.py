"""A real HTTP server on loopback playing the sales API, with injectable faults."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse


@dataclass
class Fault:
    """One scripted response served instead of the real page (FIFO)."""

    status: int = 200
    body: bytes | None = None  # None → the real page's JSON
    headers: dict[str, str] = field(default_factory=dict)
    hang_s: float = 0.0  # sleep before answering (past the client's timeout)
    trickle_s: float = 0.0  # send the body one byte every trickle_s seconds (never trips a per-read timeout)


@dataclass
class Request:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    at: float


class FakeSalesApi:
    def __init__(self, page_size: int = 100, overlap: int = 0, token: str | None = None, echo_auth: bool = False):
        self.page_size = page_size
        self.overlap = overlap  # each page repeats the last `overlap` orders of the previous one
        self.token = token
        self.echo_auth = echo_auth  # a 401 body repeats the Authorization header received (careless APIs do)
        self.orders: dict[str, list[dict[str, Any]]] = {}
        self.faults: deque[Fault] = deque()
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def page(self, day: str, page: int) -> dict[str, Any]:
        orders = self.orders.get(day, [])
        start = max(0, (page - 1) * self.page_size - (self.overlap if page > 1 else 0))
        end = page * self.page_size
        more = end < len(orders)
        return {"orders": orders[start:end], "next_page": page + 1 if more else None}

    def respond(self, handler: BaseHTTPRequestHandler) -> None:
        parsed = urlparse(handler.path)
        query = {k: v[0] for k, v in parse_qs(parsed.query).items()}
        with self._lock:
            self.requests.append(Request(parsed.path, query, dict(handler.headers), time.monotonic()))
            fault = self.faults.popleft() if self.faults else None
        if fault and fault.hang_s:
            time.sleep(fault.hang_s)
        if self.token and handler.headers.get("Authorization") != f"Bearer {self.token}":
            echoed = {"received": {"Authorization": handler.headers.get("Authorization")}} if self.echo_auth else {}
            return self._send(handler, 401, json.dumps({"error": "unauthorized", **echoed}).encode(), {})
        if parsed.path != "/orders" or "date" not in query:
            return self._send(handler, 404, b'{"error": "not found"}', {})
        status, headers, body = 200, {}, None
        if fault:
            status, headers, body = fault.status, fault.headers, fault.body
        if body is None:
            body = json.dumps(self.page(query["date"], int(query.get("page", "1")))).encode()
        self._send(handler, status, body, headers, fault.trickle_s if fault else 0.0)

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str], trickle_s: float = 0.0) -> None:
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(body)))
            for key, value in headers.items():
                handler.send_header(key, value)
            handler.end_headers()
            if not trickle_s:
                handler.wfile.write(body)
            for i in range(len(body) if trickle_s else 0):  # the server's pace, not the test's synchronisation
                handler.wfile.write(body[i : i + 1])
                handler.wfile.flush()
                time.sleep(trickle_s)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout and deadline tests)

    def start(self) -> FakeSalesApi:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                api.respond(self)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
