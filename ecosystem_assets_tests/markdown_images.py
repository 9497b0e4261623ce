"""Images embedded in Markdown metadata (``![alt](data:image/png;base64,…)``), decoded and checked as
the browser will need them: valid base64, the PNG signature, and an image PIL can decode whole."""

from __future__ import annotations

import base64
import io
import re

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_INLINE_PNG = re.compile(r"!\[[^\]]*\]\(data:image/png;base64,([^)\s]*)\)")


def inline_pngs(markdown: str) -> list[tuple[bytes, tuple[int, int]]]:
    """Each inline PNG of ``markdown`` as (bytes, (width, height)); fails on one that is not a whole PNG."""
    from PIL import Image

    found = []
    for encoded in _INLINE_PNG.findall(markdown):
        raw = base64.b64decode(encoded, validate=True)
        assert raw.startswith(PNG_SIGNATURE), f"not a PNG: starts with {raw[:8]!r}"
        with Image.open(io.BytesIO(raw)) as image:
            assert image.format == "PNG"
            image.load()  # decodes every pixel: a truncated file fails here
            found.append((raw, image.size))
    return found
