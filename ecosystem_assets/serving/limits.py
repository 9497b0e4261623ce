"""Request bodies read with a size limit: 413 before anything is parsed or buffered past the limit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import HTTPException, Request


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(status_code=413, detail=f"request body larger than {limit:,} bytes")


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
