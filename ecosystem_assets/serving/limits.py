"""Request bodies read with a size limit: 413 before anything is parsed or buffered past the limit."""

from __future__ import annotations

from fastapi import HTTPException, Request


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(status_code=413, detail=f"request body larger than {limit:,} bytes")


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, or `BodyTooLarge` (413) as soon as the declared Content-Length or the bytes
    received so far pass ``limit`` (a chunked body has no Content-Length: its chunks are counted and
    the rest is never read; uvicorn closes the connection)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise BodyTooLarge(limit)
        except ValueError:  # uvicorn refuses a malformed Content-Length before the app sees it
            pass
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        if chunk:
            chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)  # one chunk: no copy
