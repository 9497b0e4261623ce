"""Waiting in tests for something another thread or process does: poll until it holds, and when
the deadline passes fail with what was seen last, never carry on as if it had happened."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(observe: Callable[[], T], timeout: float, describe: str, *, every: float = 0.05, done: Callable[[T], object] = bool) -> T:
    """Call ``observe`` every ``every`` seconds until ``done(value)`` is true (default: the value is
    truthy) and return that value. After ``timeout`` seconds raise AssertionError naming
    ``describe`` and the last value seen (or the last exception ``observe`` raised). An
    AssertionError inside ``observe`` (say, the server process died) fails at once."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = observe()
            if done(value):
                return value
            seen = f"last saw {value!r}"
        except AssertionError:
            raise
        except Exception as exc:  # noqa: BLE001 — e.g. a server not up yet: keep polling, report it at the end
            seen = f"last attempt raised {type(exc).__name__}: {exc}"
        if time.monotonic() >= deadline:
            raise AssertionError(f"{describe}: not within {timeout:g} s; {seen[:2000]}")
        time.sleep(every)
