"""Real card transactions from day-partitioned Parquet (``FRAUD_TRANSACTIONS_URL``).

Layout: ``<url>/date=YYYY-MM-DD/<any name>.parquet``, one or more files a day, in a local folder
or under ``s3://bucket/prefix`` (read through the project's `Store`). Each file has:

| column | type | rule |
|---|---|---|
| ``transaction_id``, ``customer_id``, ``terminal_id`` | string | not null; ``transaction_id`` unique |
| ``amount`` | integer, floating point or decimal | not null, finite, ≥ 0 |
| ``timestamp`` | timestamp with a time zone | not null, inside the file's day (UTC) |
| ``is_fraud`` | bool or integer 0/1 | null = the label has not arrived yet |
| ``fraud_scenario`` (optional) | integer | the simulator's fraud pattern; absent → null |

Other columns are ignored; files whose name starts with ``_`` or ``.`` (``_SUCCESS``, checksums)
are skipped. Any problem raises `TransactionFileError` naming the day, the file and the column.

The result has the simulator's shape (`fraud/simulate.py` ``COLUMNS``): ids as Python strings,
``amount`` float64, ``timestamp`` datetime64[ns, UTC], ``is_fraud`` int64 — or nullable Int64
when some labels are still missing — and ``fraud_scenario`` int64 (Int64 when absent or partly
null). Rows are ordered by time, then transaction id.

Only Arrow's Parquet reader runs on the bytes, column by column: no pandas metadata, pickles or
other code in a file is ever evaluated.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from ecosystem_assets.storage import LocalStore, Store

VARIABLE = "FRAUD_TRANSACTIONS_URL"
ID_COLUMNS = ("transaction_id", "customer_id", "terminal_id")
REQUIRED = (*ID_COLUMNS, "amount", "timestamp", "is_fraud")
OPTIONAL = ("fraud_scenario",)


class TransactionFileError(ValueError):
    """A transaction file (or a whole day) is missing or malformed; the message says where and what."""


def day_folder(day: date) -> str:
    return f"date={day.isoformat()}"


def _type_problem(column: str, arrow_type: Any) -> str | None:
    """What ``column`` should have been when ``arrow_type`` is wrong for it; None when it is fine."""
    import pyarrow as pa

    t = pa.types
    if t.is_dictionary(arrow_type):  # pandas categoricals arrive dictionary-encoded
        arrow_type = arrow_type.value_type
    if column in ID_COLUMNS:
        string_view = getattr(t, "is_string_view", lambda _: False)
        ok = t.is_string(arrow_type) or t.is_large_string(arrow_type) or string_view(arrow_type)
        return None if ok else "string"
    if column == "amount":
        ok = t.is_integer(arrow_type) or t.is_floating(arrow_type) or t.is_decimal(arrow_type)
        return None if ok else "a number (integer, floating point or decimal)"
    if column == "timestamp":
        return None if t.is_timestamp(arrow_type) and arrow_type.tz else "timestamp with a time zone"
    if column == "is_fraud":
        return None if t.is_boolean(arrow_type) or t.is_integer(arrow_type) else "bool or integer 0/1"
    if column == "fraud_scenario":
        return None if t.is_integer(arrow_type) else "integer"
    return None


def _describe(arrow_type: Any) -> str:
    import pyarrow as pa

    if pa.types.is_timestamp(arrow_type) and not arrow_type.tz:
        return f"{arrow_type} (no time zone)"
    return str(arrow_type)


def read_file(data: bytes, day: date, where: str) -> Any:  # -> pd.DataFrame
    """One day's file, checked and converted to the simulator's dtypes (labels may be null)."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    prefix = f"{VARIABLE} day {day}: {where}"
    # Parquet starts and ends with the magic "PAR1"; checking it first gives a clearer message
    # than Arrow's for a CSV or JSON file that was given a .parquet name.
    if len(data) < 12 or data[:4] != b"PAR1" or data[-4:] != b"PAR1":
        raise TransactionFileError(f"{prefix} is not a Parquet file")
    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))
        schema = parquet.schema_arrow
    except (pa.ArrowException, OSError) as exc:
        raise TransactionFileError(f"{prefix} is not a readable Parquet file: {exc}") from None
    missing = [c for c in REQUIRED if c not in schema.names]
    if missing:
        raise TransactionFileError(
            f"{prefix} has no column {', '.join(map(repr, missing))} (it has {', '.join(schema.names) or 'no columns'})"
        )
    columns = [c for c in (*REQUIRED, *OPTIONAL) if c in schema.names]
    for column in columns:
        expected = _type_problem(column, schema.field(column).type)
        if expected:
            raise TransactionFileError(f"{prefix} column {column!r} has type {_describe(schema.field(column).type)}, expected {expected}")
    try:
        table = parquet.read(columns=columns)
    except (pa.ArrowException, OSError) as exc:
        raise TransactionFileError(f"{prefix} could not be read as Parquet: {exc}") from None
    for column in (*ID_COLUMNS, "amount", "timestamp"):
        nulls = table.column(column).null_count
        if nulls:
            raise TransactionFileError(f"{prefix} column {column!r} has {nulls} null values")

    frame = pd.DataFrame({c: table.column(c).to_pandas() for c in columns})
    for column in ID_COLUMNS:
        frame[column] = frame[column].astype(str).astype(object)
    frame["amount"] = frame["amount"].astype("float64")
    bad = ~np.isfinite(frame["amount"]) | (frame["amount"] < 0)
    if bad.any():
        row = frame[bad].iloc[0]
        raise TransactionFileError(
            f"{prefix} column 'amount' has {int(bad.sum())} values that are negative or not finite, "
            f"e.g. {row['amount']} for transaction {row['transaction_id']}"
        )

    # Compared in the file's own unit first: a far-off time (year 2300 in µs) must be reported as
    # outside the day, not overflow the conversion to nanoseconds.
    frame["timestamp"] = frame["timestamp"].dt.tz_convert("UTC")
    start = pd.Timestamp(datetime(day.year, day.month, day.day, tzinfo=UTC))
    outside = (frame["timestamp"] < start) | (frame["timestamp"] >= start + timedelta(days=1))
    if outside.any():
        row = frame[outside].iloc[0]
        raise TransactionFileError(
            f"{prefix} column 'timestamp' has {int(outside.sum())} values outside {day} (UTC), "
            f"e.g. {row['timestamp'].isoformat()} for transaction {row['transaction_id']}"
        )
    frame["timestamp"] = frame["timestamp"].astype("datetime64[ns, UTC]")

    labels = frame["is_fraud"].astype("Int64")
    wrong = labels.notna() & ~labels.isin([0, 1])
    if wrong.any():
        row = frame[wrong.to_numpy()].iloc[0]
        raise TransactionFileError(
            f"{prefix} column 'is_fraud' has {int(wrong.sum())} values other than 0/1 or null, "
            f"e.g. {row['is_fraud']} for transaction {row['transaction_id']}"
        )
    frame["is_fraud"] = labels
    frame["fraud_scenario"] = (
        frame["fraud_scenario"].astype("Int64") if "fraud_scenario" in frame else pd.array([pd.NA] * len(frame), dtype="Int64")
    )
    return frame


def _day_keys(store: Store, day: date) -> list[str]:
    keys = []
    for key in store.list_keys(day_folder(day)):
        folder, _, name = key.rpartition("/")
        if folder != day_folder(day) or name.startswith(("_", ".")):
            continue  # sub-folders, Spark/Hadoop markers, checksums, temporary files
        keys.append(key)
    return sorted(keys)


def read_days(store: Store, first: date, last: date, url: str | None = None) -> dict:  # -> dict[date, pd.DataFrame]
    """Every day from ``first`` to ``last`` inclusive, each checked (see the module docstring)."""
    import pandas as pd

    from ecosystem_assets.fraud.simulate import COLUMNS

    base = (url or store.url).rstrip("/")
    if isinstance(store, LocalStore) and not store.root.is_dir():
        raise TransactionFileError(f"{VARIABLE}={base} is not a folder")
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    out: dict[date, pd.DataFrame] = {}
    for day in days:
        keys = _day_keys(store, day)
        if not keys:
            raise TransactionFileError(f"{VARIABLE} has no files for {day} (expected {base}/{day_folder(day)}/*.parquet)")
        parts = []
        for key in keys:
            if not key.endswith(".parquet"):
                raise TransactionFileError(f"{VARIABLE} day {day}: {store.uri(key)} is not a Parquet file (expected *.parquet)")
            part = read_file(store.read_bytes(key), day, store.uri(key))
            part["_file"] = store.uri(key)
            parts.append(part)
        out[day] = pd.concat(parts, ignore_index=True)
    _refuse_duplicates(out.items())
    for day, frame in out.items():
        frame = frame.sort_values(["timestamp", "transaction_id"], kind="stable").reset_index(drop=True)
        if frame["is_fraud"].notna().all():
            frame["is_fraud"] = frame["is_fraud"].astype("int64")  # fully labelled: exactly the simulator's dtype
        if frame["fraud_scenario"].notna().all():
            frame["fraud_scenario"] = frame["fraud_scenario"].astype("int64")
        out[day] = frame[COLUMNS]
    return out


def _refuse_duplicates(frames: Iterable) -> None:
    import pandas as pd

    frames = list(frames)
    if not frames:
        return
    every = pd.concat([f.assign(_day=day) for day, f in frames], ignore_index=True)
    repeated = every[every["transaction_id"].duplicated(keep=False)]
    if len(repeated):
        tx = repeated["transaction_id"].iloc[0]
        places = repeated[repeated["transaction_id"] == tx]
        where = "; ".join(f"{f} (day {d})" for f, d in zip(places["_file"], places["_day"], strict=True))
        count = repeated["transaction_id"].nunique()
        raise TransactionFileError(f"{VARIABLE}: {count} duplicate transaction_id values, e.g. {tx!r} appears {len(places)} times: {where}")


def training_labels(raw: Any) -> Any:  # -> tuple[pd.DataFrame, set[str]]
    """Late labels, for training: ``raw`` with unknown ``is_fraud`` counted as genuine (0, the
    handbook's convention for the terminal risk history), and the ids of those unlabelled rows
    (which the training table drops, since nothing can be learned from them)."""
    unlabelled = set(raw.loc[raw["is_fraud"].isna(), "transaction_id"])
    if not unlabelled and raw["is_fraud"].dtype == "int64":
        return raw, unlabelled
    return raw.assign(is_fraud=raw["is_fraud"].fillna(0).astype("int64")), unlabelled
