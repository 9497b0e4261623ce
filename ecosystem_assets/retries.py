"""How each outside system is retried, in one place (tenacity; botocore's own retries for S3).

A caller raises `Transient` for a failure worth another attempt (with the wait the server asked
for, if it did) and any other exception for a permanent one, which is never retried: a bad token,
password or certificate does not get better, and retrying it can lock the account. When every
attempt failed transiently the policy raises `GaveUp` with the attempt count and the last problem,
for the caller to turn into its own error message.

The waits come from the resources' config (``backoff_s``, ``retry_delay_s``), so tests run with
millisecond waits and production with seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # tenacity is imported when a policy is built (it pulls in asyncio: the code location loads lighter)
    from tenacity import RetryCallState

T = TypeVar("T")

# S3 (storage.s3_client): botocore's "standard" mode retries throttling, 5xx and connection errors
# with jittered backoff itself; few attempts, so a dead endpoint fails fast.
S3_RETRIES = {"max_attempts": 3, "mode": "standard"}


class Transient(Exception):
    """A failure worth another attempt; ``retry_after``: the seconds the server asked us to wait."""

    def __init__(self, problem: str, retry_after: float | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.retry_after = retry_after


class GaveUp(Exception):
    """Every attempt failed transiently."""

    def __init__(self, attempts: int, last: Transient) -> None:
        super().__init__(f"gave up after {attempts} attempts: {last.problem}")
        self.attempts = attempts
        self.last = last


OnRetry = Callable[[int, float, Transient], None]  # (failed attempt number, seconds to wait, its problem)


@dataclass(frozen=True)
class Policy:
    """One outside system's retry policy: how many attempts, and how long to wait between them."""

    attempts: int  # the first one included
    backoff: Any  # a tenacity wait strategy: the wait after a failed attempt
    max_wait_s: float = float("inf")  # also caps a server's Retry-After
    sleep: Callable[[float], None] = time.sleep

    def _wait(self, state: RetryCallState) -> float:
        failure = state.outcome.exception() if state.outcome else None
        if isinstance(failure, Transient) and failure.retry_after is not None:
            return min(failure.retry_after, self.max_wait_s)
        return min(float(self.backoff(state)), self.max_wait_s)

    def call(self, fn: Callable[[int], T], on_retry: OnRetry | None = None) -> T:
        """``fn(attempt_number)`` until it returns; `Transient` is retried, anything else raised at once.
        Raises `GaveUp` when the attempts are spent."""
        from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_attempt

        def before_sleep(state: RetryCallState) -> None:
            failure = state.outcome.exception() if state.outcome else None
            if on_retry is not None and isinstance(failure, Transient) and state.next_action is not None:
                on_retry(state.attempt_number, state.next_action.sleep, failure)

        retrying = Retrying(
            stop=stop_after_attempt(max(1, self.attempts)),
            wait=self._wait,
            retry=retry_if_exception_type(Transient),
            before_sleep=before_sleep,
            sleep=self.sleep,
        )
        try:
            for attempt in retrying:
                with attempt:
                    return fn(attempt.retry_state.attempt_number)
        except RetryError as exc:
            last = exc.last_attempt
            failure = last.exception()
            assert isinstance(failure, Transient)  # only Transient is retried
            raise GaveUp(last.attempt_number, failure) from None
        raise AssertionError("tenacity stopped without an outcome")  # pragma: no cover


def sales_api(max_retries: int, backoff_s: float, max_backoff_s: float) -> Policy:
    """The sales API: connection errors, timeouts, 429 and 5xx are retried ``max_retries`` times,
    waiting ``backoff_s``·2ⁿ (at most ``max_backoff_s``) or what ``Retry-After`` says."""
    from tenacity import wait_exponential

    return Policy(max_retries + 1, wait_exponential(multiplier=backoff_s, max=max_backoff_s), max_backoff_s)


def smtp(max_attempts: int, delay_s: float) -> Policy:
    """SMTP: ``max_attempts`` in all, waiting ``delay_s``, 2·``delay_s``, … (a busy server recovers in seconds)."""
    from tenacity import wait_incrementing

    return Policy(max_attempts, wait_incrementing(start=delay_s, increment=delay_s))


def polling(wait_s: float, interval_s: float) -> Policy:
    """Waiting for another process to finish something: look every ``interval_s`` for ``wait_s`` in all."""
    from tenacity import wait_fixed

    return Policy(max(1, int(wait_s / interval_s)) + 1, wait_fixed(interval_s))


def retry_after_seconds(value: str | None) -> float | None:
    """An HTTP ``Retry-After`` header (seconds or an HTTP date) as seconds from now; None if absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None
