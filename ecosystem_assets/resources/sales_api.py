"""Sales API client: pages through ``GET /orders?date=&page=`` with retries, or the demo feed.

Transient faults (connection errors, timeouts, 429 honouring ``Retry-After``, 5xx) are retried
with exponential backoff (the policy: `retries.sales_api`); any other 4xx and malformed bodies fail at once. Errors name the status,
the URL and the page, never the bearer token: it is stripped and checked as a header value before
the first request, and every text that leaves the client (errors, retry warnings) goes through
`redact.scrub` first, since an API may echo the Authorization header in a 401 body or the token in a 500.
"""

from __future__ import annotations

import json
import time
from datetime import date
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import dagster as dg
from pydantic import Field

from ecosystem_assets import retries
from ecosystem_assets.sales.redact import header_value_problem, scrub

MAX_PAGES = 10_000  # a feed that never says next_page=null is a bug, not an endless day


class SalesApiError(RuntimeError):
    """The sales API refused or garbled a request; not worth retrying."""


class SalesApiUnavailable(RuntimeError):
    """The sales API kept failing transiently until retries ran out."""


class SalesApiResource(dg.ConfigurableResource):
    """Orders of one day from the sales API, or from the deterministic demo feed when no URL is set."""

    base_url: str | None = Field(default=None, description="Base URL; unset → built-in demo feed.")
    token: str | None = Field(default=None, description="Bearer token (wire with dg.EnvVar).")
    timezone: str = Field(default="UTC", description="Zone the demo feed's days are in.")
    timeout_s: float = Field(default=30.0, description="Connect timeout, and the longest wait for any one read.")
    deadline_s: float = Field(default=120.0, description="Total time one request may take, body included; an overrun is retried.")
    max_retries: int = 5
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0

    @property
    def source(self) -> str:
        return _without_userinfo(self.base_url) if self.base_url else "demo feed"

    def fetch_orders(self, day: date, log: Any = None) -> tuple[list[dict[str, Any]], int]:
        """All orders of ``day`` (in page order, duplicates kept) and the number of pages read."""
        if not self.base_url:
            from ecosystem_assets.sales import demo_feed

            return demo_feed.orders_for_day(day, self.timezone), 1
        try:
            return self._fetch_pages(day, log)
        except (SalesApiError, SalesApiUnavailable) as exc:
            raise type(exc)(self._scrub(str(exc))) from None  # the last line of defence; texts are scrubbed where built too
        except Exception as exc:  # noqa: BLE001 — requests, urllib3, http.client: any text may quote the token
            raise SalesApiError(self._scrub(f"sales API request failed: {type(exc).__name__}: {exc}")) from None

    def _scrub(self, text: str) -> str:
        """``text`` without the token, the URL's password or any Authorization header value."""
        password = urlsplit(self.base_url).password if self.base_url else None
        return scrub(text, self.token, password)

    def _headers(self) -> dict[str, str]:
        """The request headers; the token stripped (a secret mounted from a file ends in a newline) and
        refused, without showing it, when it cannot be a header value (requests would quote it whole)."""
        headers = {"Accept": "application/json"}
        token = (self.token or "").strip()
        if token:
            problem = header_value_problem(token)
            if problem:
                raise SalesApiError(f"SALES_API_TOKEN {problem}: it cannot be sent as an HTTP header; fix the secret")
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def _fetch_pages(self, day: date, log: Any) -> tuple[list[dict[str, Any]], int]:
        import requests

        orders: list[dict[str, Any]] = []
        page = 1
        with requests.Session() as session:
            session.headers.update(self._headers())
            while True:
                body = self._get_page(session, day, page, log)
                orders.extend(body["orders"])
                next_page = body.get("next_page")
                if next_page is None:
                    return orders, page
                if not isinstance(next_page, int) or next_page <= page or next_page > MAX_PAGES:
                    raise SalesApiError(
                        f"sales API page {page} of {day} gave next_page={next_page!r}; expected a larger page number or null"
                    )
                page = next_page

    def _get_page(self, session: Any, day: date, page: int, log: Any) -> dict[str, Any]:
        import requests

        query = urlencode({"date": day.isoformat(), "page": page})
        url, shown = f"{self.base_url}/orders?{query}", f"{self.source}/orders?{query}"  # `shown`: no credentials

        def attempt(_: int) -> dict[str, Any]:
            started = time.monotonic()
            wait = min(self.timeout_s, self.deadline_s)
            try:
                with session.get(url, timeout=(wait, wait), stream=True) as response:
                    status, text = response.status_code, self._read_body(response, started)
            except requests.Timeout as exc:  # before ConnectionError: ConnectTimeout is both
                raise retries.Transient(f"{type(exc).__name__} after {self.timeout_s:g}s timeout") from None
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
                raise retries.Transient(type(exc).__name__) from None
            if status == 200:
                return self._parse(status, text, shown, page)
            if status == 429:
                raise retries.Transient("HTTP 429", retries.retry_after_seconds(response.headers.get("Retry-After")))
            if status >= 500:
                raise retries.Transient(f"HTTP {status}: {self._snippet(text, 120)}")
            raise SalesApiError(f"sales API returned HTTP {status} for {shown} (page {page}): {self._snippet(text, 200)}")

        def warn(failed: int, wait: float, problem: retries.Transient) -> None:
            if log is not None:
                log.warning(
                    self._scrub(f"sales API {problem.problem} for {shown} (page {page}); retry {failed}/{self.max_retries} in {wait:.1f}s")
                )

        started = time.monotonic()
        try:
            return retries.sales_api(self.max_retries, self.backoff_s, self.max_backoff_s).call(attempt, warn)
        except retries.GaveUp as exc:
            raise SalesApiUnavailable(
                f"sales API still failing after {exc.attempts} attempts in {time.monotonic() - started:.1f}s for {shown} "
                f"(page {page}): last error {exc.last.problem}"
            ) from None

    def _read_body(self, response: Any, started: float) -> str:
        """The response body as text, cut off ``deadline_s`` after ``started`` (a `retries.Transient`: an
        overrun uses up one attempt of the retry budget, like a timeout).

        Why by hand: requests' and urllib3's read timeout bounds each socket read, so a server that trickles
        a byte every few seconds never trips it, and neither library has a total timeout (urllib3's
        ``Timeout.total`` only shortens the read timeout by the connect time). Reading with ``read1`` (what
        has arrived, up to 64 KiB) while the socket gets only the time left before each read ends the
        request at the deadline whatever the pace, without a watchdog thread. Headers are read before this,
        under the per-read timeout capped at the deadline.
        """
        from urllib3.exceptions import HTTPError, ReadTimeoutError

        chunks: list[bytes] = []
        received = 0
        while True:
            left = started + self.deadline_s - time.monotonic()
            if left <= 0:
                raise self._overrun(started, received)
            sock = getattr(response.raw.connection, "sock", None)
            if sock is not None:
                sock.settimeout(min(self.timeout_s, left))
            try:
                chunk = response.raw.read1(65536, decode_content=True)
            except ReadTimeoutError:
                if time.monotonic() - started >= self.deadline_s:
                    raise self._overrun(started, received) from None
                raise retries.Transient(f"ReadTimeout after {self.timeout_s:g}s timeout") from None
            except HTTPError as exc:  # the connection broke mid-body
                raise retries.Transient(type(exc).__name__) from None
            if not chunk:
                return b"".join(chunks).decode(response.encoding or "utf-8", errors="replace")
            chunks.append(chunk)
            received += len(chunk)

    def _overrun(self, started: float, received: int) -> retries.Transient:
        elapsed = time.monotonic() - started
        return retries.Transient(
            f"deadline of {self.deadline_s:g}s exceeded after {elapsed:.1f}s ({received:,} bytes of the body received)"
        )

    def _snippet(self, text: str, length: int) -> str:
        """The start of a response body for an error message: scrubbed *before* it is cut (a cut token escapes the patterns)."""
        return repr(self._scrub(text)[:length])

    def _parse(self, status: int, text: str, url: str, page: int) -> dict[str, Any]:
        try:
            body = json.loads(text)
        except ValueError:
            raise SalesApiError(
                f"sales API returned HTTP {status} with malformed JSON for {url} (page {page}): {self._snippet(text, 120)}"
            ) from None
        if not isinstance(body, dict) or not isinstance(body.get("orders"), list):
            raise SalesApiError(f"sales API returned HTTP {status} for {url} (page {page}) without an 'orders' list")
        if not all(isinstance(order, dict) for order in body["orders"]):
            raise SalesApiError(f"sales API page {page} ({url}) has orders that are not JSON objects")
        return body


def _without_userinfo(url: str) -> str:
    """``url`` without ``user:password@``: how the API is named in metadata and errors."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    return urlunsplit(parts._replace(netloc=f"{netloc}:{parts.port}" if parts.port else netloc))
