"""The live precision/recall behind /metrics, computed off the request path.

A scrape must answer at once whatever the database does (locked SQLite, a slow Postgres): a daemon
thread recomputes the monitoring body every ``refresh_s`` seconds and /metrics reads the last
result, with its age as a gauge of its own so a stale figure is visible."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class LiveMetrics:
    def __init__(self, compute: Callable[[], dict[str, Any]], refresh_s: float = 5.0):
        self.compute, self.refresh_s = compute, refresh_s
        self.latest: dict[str, Any] | None = None
        self.computed_at: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> None:
        try:
            self.latest, self.computed_at = self.compute(), time.time()
        except Exception as exc:  # noqa: BLE001 — keep the last figures; their age gauge shows they are stale
            log.warning("live metrics not refreshed: %s", type(exc).__name__)

    def age_s(self) -> float:
        return float("nan") if self.computed_at is None else time.time() - self.computed_at

    def start(self) -> None:
        def loop() -> None:
            while True:
                self.refresh()
                if self._stop.wait(self.refresh_s):
                    return

        self._thread = threading.Thread(target=loop, name="live-metrics", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
