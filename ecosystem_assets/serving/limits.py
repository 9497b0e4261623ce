"""Request bodies: declared as JSON (415 otherwise) and read with a size limit (413 before anything
is parsed or buffered past the limit)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from fastapi import HTTPException, Request

from ecosystem_assets.serving.api_models import excerpt


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(status_code=413, detail=f"request body larger than {limit:,} bytes")


class NotJson(HTTPException):
    def __init__(self, problem: str, rule: str = "request bodies are JSON, sent with Content-Type: application/json"):
        super().__init__(status_code=415, detail=f"{problem}: {rule}")


def require_json(content_type: Sequence[str]) -> None:
    """Refuse (415, before a byte of the body is read) a body not declared as
    ``Content-Type: application/json``; a ``charset`` parameter, if given, must be UTF-8.
    ``content_type``: every Content-Type header of the request. Why it matters: a web page can send
    text/plain, form and multipart bodies to any address, the service on a developer's loopback
    included, without the browser asking first (a CORS "simple request"); application/json it can
    send only after a CORS preflight, which this service never grants."""
    if content_type == ["application/json"]:  # what every client of ours sends: no parsing
        return
    if len(content_type) != 1:
        raise NotJson("no Content-Type header" if not content_type else "more than one Content-Type header")
    media, *parameters = content_type[0].split(";")
    if media.strip().lower() != "application/json":
        raise NotJson(f"Content-Type {_shown(content_type[0])}")
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            raise NotJson(f"Content-Type {_shown(content_type[0])}", "JSON bodies are UTF-8 (charset=utf-8, or no charset)")


def _shown(value: str) -> str:
    return repr(excerpt(value))  # at most 100 characters of the client's header, as every error body echoes


async def read_limited(declared: str | bytes | None, chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """The whole body, or `BodyTooLarge` (413) as soon as the declared Content-Length or the bytes
    received so far pass ``limit`` (a chunked body has no Content-Length: its chunks are counted and
    the rest is never read; uvicorn closes the connection)."""
    if declared is not None:
        try:
            if int(declared) > limit:
                raise BodyTooLarge(limit)
        except ValueError:  # uvicorn refuses a malformed Content-Length before the app sees it
            pass
    parts, size = [], 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        if chunk:
            parts.append(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)  # one chunk: no copy


async def read_body(request: Request, limit: int) -> bytes:
    """A FastAPI request's body (`read_limited`)."""
    return await read_limited(request.headers.get("content-length"), request.stream(), limit)


async def asgi_chunks(receive: Any) -> AsyncIterator[bytes]:
    """The body chunks of a plain ASGI request; `ClientDisconnect` when the client goes away."""
    from starlette.requests import ClientDisconnect

    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return
