"""Raw order records → a typed DataFrame, and the de-duplication of pagination overlap.

Values are converted without losing evidence: a value that does not parse becomes null (and the
quality gate then names the row), a quantity of 2.5 stays 2.5 (and fails the integer check).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

ORDER_COLUMNS = ("order_id", "ordered_at", "region", "product", "quantity", "unit_price")
_OFFSET_RE = r"(?:Z|[+-]\d{2}:?\d{2})$"


def orders_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Typed frame of API records; columns the API left out stay absent, so the gate can say so."""
    import pandas as pd

    frame = pd.DataFrame.from_records(records) if records else pd.DataFrame(columns=list(ORDER_COLUMNS))
    present = [c for c in ORDER_COLUMNS if c in frame.columns]
    frame = frame[present + [c for c in frame.columns if c not in ORDER_COLUMNS]].copy()
    for column in ("order_id", "region", "product"):
        if column in frame:
            frame[column] = (
                frame[column].map(lambda v: None if v is None or (isinstance(v, float) and pd.isna(v)) else str(v)).astype("string")
            )
    if "ordered_at" in frame:
        text = frame["ordered_at"].astype("string")
        parsed = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")
        # A timestamp without a UTC offset is ambiguous: treat it as invalid, not as UTC.
        frame["ordered_at"] = parsed.where(text.str.contains(_OFFSET_RE, regex=True).fillna(False).astype(bool))
    for column in ("quantity", "unit_price"):
        if column in frame:
            numbers = pd.to_numeric(
                frame[column].map(lambda v: v if isinstance(v, (int, float)) and not isinstance(v, bool) else None), errors="coerce"
            )
            if column == "quantity" and numbers.notna().all() and (numbers % 1 == 0).all():
                numbers = numbers.astype("int64")
            elif column == "unit_price":
                numbers = numbers.astype("float64")
            frame[column] = numbers
    return frame.reset_index(drop=True)


def drop_identical_duplicates(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Drop records identical in every column (pagination overlap); keep conflicting ones for the gate."""
    if frame.empty:
        return frame, 0
    hashable = frame.astype("string").fillna("\x00null")
    keep = ~hashable.duplicated(keep="first")
    return frame[keep.to_numpy()].reset_index(drop=True), int((~keep).sum())
