"""Dagster's standard metadata for table-like assets: row count, column schema and a table preview.

Domain-free: a DataFrame in, metadata entries out (`table_metadata`). pandas is only touched through
the frame passed in (no import at module level): the code location must load fast. Values are made
JSON-safe (numpy scalars to Python numbers, NaN/NaT to None, timestamps to ISO text, floats rounded
for display). Also: a PNG as an inline image of Markdown metadata (`markdown_image`).
"""

from __future__ import annotations

import math
from typing import Any

import dagster as dg

ROW_COUNT = "dagster/row_count"
COLUMN_SCHEMA = "dagster/column_schema"
PREVIEW = "preview"
PREVIEW_ROWS = 10
DISPLAY_DIGITS = 4  # metrics (accuracy, precision, recall, rates)
MONEY_DIGITS = 2


def rounded(value: float | None, digits: int = DISPLAY_DIGITS) -> float | None:
    """``value`` rounded for display; None (and NaN) stay None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return round(float(value), digits)


def metric(value: float, digits: int = DISPLAY_DIGITS) -> dg.FloatMetadataValue:
    """A number the UI plots, rounded for display."""
    return dg.MetadataValue.float(round(float(value), digits))


def _column_type(dtype: Any) -> str:
    kind = getattr(dtype, "kind", "O")
    if str(dtype) in ("bool", "boolean"):
        return "bool"
    return {"i": "int", "u": "int", "f": "float", "b": "bool", "M": "timestamp", "m": "timedelta"}.get(kind, "string")


def table_schema(frame: Any) -> dg.TableSchema:
    """The frame's columns with a simple type name each (int, float, bool, timestamp, string)."""
    return dg.TableSchema(columns=[dg.TableColumn(str(name), _column_type(dtype)) for name, dtype in frame.dtypes.items()])


def json_safe(value: Any, digits: int = DISPLAY_DIGITS) -> str | int | float | bool | None:
    """One cell as a value a TableRecord accepts."""
    try:
        if value is None or value != value:  # None, NaN, NaT
            return None
    except (TypeError, ValueError):  # a value that cannot be compared (pd.NA)
        return None
    if hasattr(value, "item") and not isinstance(value, str | bytes):  # numpy scalar
        value = value.item()
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else round(value, digits)
    if hasattr(value, "isoformat"):  # datetime, date, pandas Timestamp
        return str(value.isoformat())
    return str(value)


def table_preview(frame: Any, rows: int = PREVIEW_ROWS, schema: dg.TableSchema | None = None) -> dg.TableMetadataValue:
    """The first ``rows`` rows as table metadata (shown as a table in the UI)."""
    head = frame.head(rows)
    records = [
        dg.TableRecord(data={str(k): json_safe(v) for k, v in zip(head.columns, row, strict=True)})
        for row in head.itertuples(index=False, name=None)
    ]
    return dg.MetadataValue.table(records=records, schema=schema or table_schema(frame))


def table_metadata(frame: Any, preview_rows: int = PREVIEW_ROWS, preview_key: str = PREVIEW) -> dict[str, Any]:
    """``dagster/row_count``, ``dagster/column_schema`` and a table preview (``preview_rows`` rows; 0: none)."""
    schema = table_schema(frame)
    meta: dict[str, Any] = {ROW_COUNT: dg.MetadataValue.int(len(frame)), COLUMN_SCHEMA: dg.MetadataValue.table_schema(schema)}
    if preview_rows:
        meta[preview_key] = table_preview(frame, preview_rows, schema)
    return meta


def markdown_image(alt: str, png: bytes) -> str:
    """Markdown showing ``png`` inline on the asset page, as a data: URI (Dagster's Markdown renderer
    allows data: image sources): no file or server to reach. Keep such images small (tens of KB),
    they are stored in every materialization event."""
    import base64

    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"
