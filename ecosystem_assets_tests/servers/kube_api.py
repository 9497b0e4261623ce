"""A real HTTP server on loopback answering the part of the Kubernetes API that
`vision/pytorchjob.py: PipesPyTorchJobClient` uses, for tests (no cluster can run here).

Only these routes, with the API server's status codes and `Status` bodies:

- ``POST   /apis/kubeflow.org/v1/namespaces/{ns}/pytorchjobs``         201 (409 if the name exists)
- ``GET    /apis/kubeflow.org/v1/namespaces/{ns}/pytorchjobs/{name}``  200 / 404
- ``DELETE /apis/kubeflow.org/v1/namespaces/{ns}/pytorchjobs/{name}``  200 / 404
- ``GET    /api/v1/namespaces/{ns}/pods/{name}``                       200 / 404
- ``GET    /api/v1/namespaces/{ns}/pods/{name}/log?container=…&follow=true``: 404 until the
  pod exists, then the log, chunked and flushed line by line until the container ends

Every request must carry the kubeconfig's bearer token. What the operator and the kubelet would
do (status conditions, pods, their logs) the test does through this object's methods, or through
``on_create`` / ``on_delete`` callbacks.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import yaml

TOKEN = "test-token"
JOBS = re.compile(r"^/apis/kubeflow\.org/v1/namespaces/([^/]+)/pytorchjobs(?:/([^/]+))?$")
POD = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)(/log)?$")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Log:
    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.ended = False
        self.cond = threading.Condition()


class FakeKubeApi:
    """State and a server; ``requests`` records (method, path) of every call."""

    def __init__(self) -> None:
        self.jobs: dict[tuple[str, str], dict[str, Any]] = {}
        self.deleted: list[tuple[str, str]] = []
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.logs: dict[tuple[str, str], _Log] = {}
        self.requests: list[tuple[str, str]] = []
        self.on_create: Callable[[dict[str, Any]], None] | None = None
        self.on_delete: Callable[[dict[str, Any]], None] | None = None
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None

    # --- what the operator and the kubelet would do -------------------------------------------

    def set_conditions(self, namespace: str, name: str, *types: str, message: str = "") -> None:
        """The job's conditions: the last type given is the current one (status True), like the operator."""
        with self._lock:
            job = self.jobs[(namespace, name)]
            conditions = [
                {"type": t, "status": "True" if i == len(types) - 1 else "False", "reason": f"PyTorchJob{t}", "message": message}
                for i, t in enumerate(types)
            ]
            job["status"] = {"conditions": conditions, "startTime": _now()}

    def start_container(self, namespace: str, pod: str, restart_count: int = 0) -> None:
        with self._lock:
            self.pods[(namespace, pod)] = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": pod, "namespace": namespace, "uid": str(uuid.uuid4())},
                "status": {
                    "phase": "Running",
                    "containerStatuses": [
                        {
                            "name": "pytorch",
                            "ready": True,
                            "restartCount": restart_count,
                            "image": "image",
                            "imageID": "image",
                            "state": {"running": {"startedAt": _now()}},
                        }
                    ],
                },
            }
            self.logs[(namespace, pod)] = _Log()

    def write_log(self, namespace: str, pod: str, text: str) -> None:
        log = self.logs[(namespace, pod)]
        with log.cond:
            log.lines.append(text.encode())
            log.cond.notify_all()

    def end_container(self, namespace: str, pod: str, exit_code: int) -> None:
        with self._lock:
            status = self.pods[(namespace, pod)]["status"]
            status["phase"] = "Succeeded" if exit_code == 0 else "Failed"
            status["containerStatuses"][0]["state"] = {"terminated": {"exitCode": exit_code, "finishedAt": _now()}}
        log = self.logs[(namespace, pod)]
        with log.cond:
            log.ended = True
            log.cond.notify_all()

    def _created(self, job: dict[str, Any]) -> None:
        """Runs ``on_create``; if the test's script breaks, the job fails (a client never waits forever)."""
        assert self.on_create is not None
        try:
            self.on_create(job)
        except Exception as exc:
            namespace, name = job["metadata"]["namespace"], job["metadata"]["name"]
            with self._lock:
                if (namespace, name) in self.jobs:
                    self.set_conditions(namespace, name, "Created", "Failed", message=f"the test's on_create failed: {exc!r}")
            raise

    # --- the server ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def kubeconfig(self, path: Path, namespace: str) -> Path:
        """A kubeconfig for this server, as `kubectl config view --raw` would write it."""
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "fake",
                    "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                    "users": [{"name": "runner", "user": {"token": TOKEN}}],
                    "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "runner", "namespace": namespace}}],
                }
            )
        )
        return path

    def __enter__(self) -> FakeKubeApi:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive and chunked bodies, like the API server

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                api._handle(self, "GET")

            def do_POST(self) -> None:
                api._handle(self, "POST")

            def do_DELETE(self) -> None:
                api._handle(self, "DELETE")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        for log in self.logs.values():  # let streaming handlers finish
            with log.cond:
                log.ended = True
                log.cond.notify_all()
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _status(self, handler: BaseHTTPRequestHandler, code: int, reason: str, message: str) -> None:
        body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason, "code": code}
        self._send(handler, code, body)

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        parsed = urlparse(handler.path)
        with self._lock:
            self.requests.append((method, parsed.path))
        if handler.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self._status(handler, 401, "Unauthorized", "Unauthorized")
        if match := JOBS.match(parsed.path):
            return self._jobs(handler, method, match.group(1), match.group(2))
        if (match := POD.match(parsed.path)) and method == "GET":
            namespace, pod, log = match.groups()
            if log:
                return self._log(handler, namespace, pod, parse_qs(parsed.query))
            with self._lock:
                found = json.loads(json.dumps(self.pods.get((namespace, pod))))
            if found is None:
                return self._status(handler, 404, "NotFound", f'pods "{pod}" not found')
            return self._send(handler, 200, found)
        return self._status(handler, 404, "NotFound", f"the server could not find the requested resource ({method} {parsed.path})")

    def _jobs(self, handler: BaseHTTPRequestHandler, method: str, namespace: str, name: str | None) -> None:
        if method == "POST" and name is None:
            body = json.loads(handler.rfile.read(int(handler.headers["Content-Length"])))
            key = (namespace, body["metadata"]["name"])
            with self._lock:
                if key in self.jobs:
                    return self._status(handler, 409, "AlreadyExists", f'pytorchjobs.kubeflow.org "{key[1]}" already exists')
                body["metadata"] |= {"uid": str(uuid.uuid4()), "creationTimestamp": _now(), "namespace": namespace}
                self.jobs[key] = body
                created = json.loads(json.dumps(body))
            self._send(handler, 201, created)
            if self.on_create:
                threading.Thread(target=self._created, args=(created,), daemon=True).start()
            return None
        if name is None:
            return self._status(handler, 405, "MethodNotAllowed", "method not allowed")
        with self._lock:
            job = self.jobs.get((namespace, name))
            if job is None:
                return self._status(handler, 404, "NotFound", f'pytorchjobs.kubeflow.org "{name}" not found')
            if method == "GET":
                return self._send(handler, 200, json.loads(json.dumps(job)))
            if method == "DELETE":
                handler.rfile.read(int(handler.headers.get("Content-Length") or 0))  # V1DeleteOptions
                del self.jobs[(namespace, name)]
                self.deleted.append((namespace, name))
                deleted = job
            else:
                return self._status(handler, 405, "MethodNotAllowed", "method not allowed")
        if self.on_delete:
            self.on_delete(deleted)
        return self._send(handler, 200, {"kind": "Status", "apiVersion": "v1", "status": "Success", "details": {"name": name}})

    def _log(self, handler: BaseHTTPRequestHandler, namespace: str, pod: str, query: dict[str, list[str]]) -> None:
        with self._lock:
            found = self.pods.get((namespace, pod))
            log = self.logs.get((namespace, pod))
        if found is None or log is None:
            return self._status(handler, 404, "NotFound", f'pods "{pod}" not found')
        if query.get("container") != ["pytorch"]:
            return self._status(handler, 400, "BadRequest", f"container {query.get('container')} is not valid for pod {pod}")
        # Go's strconv.ParseBool, as the API server parses it (the Python client sends "True").
        follow = (query.get("follow") or ["false"])[0] in ("1", "t", "T", "TRUE", "true", "True")
        # Chunked, flushed as lines arrive, as the API server streams a followed log; the body
        # ends when the container does.
        handler.send_response(200)
        handler.send_header("Content-Type", "text/plain")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.send_header("Connection", "close")
        handler.end_headers()
        sent = 0
        while True:
            with log.cond:
                while follow and sent == len(log.lines) and not log.ended:
                    log.cond.wait(timeout=1.0)
                chunk, sent = b"".join(log.lines[sent:]), len(log.lines)
                ended = log.ended or not follow
            if chunk:
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                handler.wfile.flush()
            if ended and sent == len(log.lines):
                handler.wfile.write(b"0\r\n\r\n")
                handler.wfile.flush()
                return None
