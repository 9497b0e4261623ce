"""FRAUD_TRANSACTIONS_URL: day-partitioned Parquet written by the test (local folder and moto S3),
read back exactly, run through features → model → monitoring, late labels picked up on
re-materialization, and every malformed input refused with the day, file and column named."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pytest

from ecosystem_assets.fraud.definitions import MONITORING_JOB, RETRAIN_JOB
from ecosystem_assets.fraud.features import HISTORY_DAYS
from ecosystem_assets.fraud.transaction_files import TransactionFileError
from ecosystem_assets.resources.fraud import TransactionSource
from ecosystem_assets_tests.fraud.helpers import frames

FIRST, LAST = date(2026, 6, 1), date(2026, 7, 30)  # 60 days: 14 training days + 37 of history fit
DAY = date(2026, 7, 2)


def write_days(root: Path, frame, files_per_day: int = 1) -> None:
    """``frame`` as ``root/date=YYYY-MM-DD/part-N.parquet`` (rows dealt round-robin over the files)."""
    for day, part in frame.groupby(frame["timestamp"].dt.date):
        folder = root / f"date={day}"
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(files_per_day):
            part.iloc[n::files_per_day].to_parquet(folder / f"part-{n}.parquet", index=False)


def one_day(tmp_path: Path, day: date = DAY):
    """A simulated day in its folder: (the folder's root, the day's frame, the file's path)."""
    frame = frames(day, day)
    write_days(tmp_path / "tx", frame)
    return tmp_path / "tx", frame, tmp_path / "tx" / f"date={day}" / "part-0.parquet"


def read(root: Path | str, first: date = DAY, last: date = DAY):
    return TransactionSource(url=str(root)).days(first, last)


def refused(root: Path | str, first: date = DAY, last: date = DAY) -> str:
    with pytest.raises(TransactionFileError) as err:
        read(root, first, last)
    return str(err.value)


def materialized(result, asset: str, partitions: int = 1) -> dict:
    """The metadata of ``asset``'s materialization (a range run records one per day, all alike)."""
    events = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(asset)]
    assert len(events) == partitions
    return {k: getattr(v, "value", v) for k, v in events[0].materialization.metadata.items()}


def stored(home: Path, run_id: str, day: date):
    """The transactions of ``day`` as the run ``run_id`` stored them (each run keeps its own files)."""
    from ecosystem_assets.fraud.assets import transactions_key
    from ecosystem_assets.storage import open_store, read_parquet

    return read_parquet(open_store(str(home / "storage")), transactions_key(run_id, day))


def materialize_days(defs, instance, first: date, last: date, raise_on_error: bool = True):
    return defs.resolve_implicit_global_asset_job_def().execute_in_process(
        asset_selection=[dg.AssetKey("fraud_transactions")],
        instance=instance,
        raise_on_error=raise_on_error,
        tags={"dagster/asset_partition_range_start": str(first), "dagster/asset_partition_range_end": str(last)},
    )


# --- the whole workflow on files the test wrote ---------------------------------------------------


def test_features_model_monitoring_on_parquet_days(ecosystem_env, dagster_instance, tmp_path, monkeypatch):
    import pandas as pd
    from mlflow import MlflowClient

    from ecosystem_assets.project import build_definitions
    from ecosystem_assets.settings import Settings

    written = frames(FIRST, LAST)
    # Labels of the last day's first 25 transactions have not arrived yet.
    late = written.index[written["timestamp"].dt.date == LAST][:25]
    written["is_fraud"] = written["is_fraud"].astype("Int64")
    written.loc[late, "is_fraud"] = pd.NA
    write_days(tmp_path / "tx", written, files_per_day=2)
    monkeypatch.setenv("FRAUD_TRANSACTIONS_URL", str(tmp_path / "tx"))
    settings = Settings.from_env()
    defs = build_definitions(settings)  # the real wiring: FRAUD_TRANSACTIONS_URL → TransactionSource(url=…)

    loaded = materialize_days(defs, dagster_instance, FIRST, LAST)
    meta = materialized(loaded, "fraud_transactions", partitions=60)
    assert meta["source"] == str(tmp_path / "tx") and meta["days"] == 60
    assert meta["transactions"] == len(written) and meta["unlabelled"] == 25
    assert meta["fraud_rate"] == pytest.approx(written["is_fraud"].sum() / written["is_fraud"].notna().sum())  # of labelled rows
    home = Path(ecosystem_env["ECOSYSTEM_HOME"])
    back = pd.concat([stored(home, loaded.run_id, FIRST + timedelta(days=i)) for i in range(60)], ignore_index=True)
    expected = written.sort_values(["timestamp", "transaction_id"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(back.astype({"is_fraud": "Int64"}), expected)
    assert stored(home, loaded.run_id, FIRST)["is_fraud"].dtype == "int64"  # fully labelled days keep the simulator's dtype
    # Dagster's standard metadata: the run's row count, the stored table's columns, a table preview.
    assert meta["dagster/row_count"] == len(written)
    assert [c.name for c in meta["dagster/column_schema"].columns] == list(back.columns)
    assert len(meta["preview"].records) == 10

    retrain = defs.resolve_job_def(RETRAIN_JOB).execute_in_process(
        instance=dagster_instance, run_config={"ops": {"fraud_features": {"config": {"end_date": str(LAST)}}}}
    )
    features = materialized(retrain, "fraud_features")
    assert features["unlabelled_dropped"] == 25
    in_window = (written["timestamp"].dt.date >= LAST - timedelta(days=13)).sum()
    assert features["rows"] == in_window - 25
    features_table = pd.read_parquet(home / "storage" / features["storage_key"])
    assert features["dagster/row_count"] == features["rows"] == len(features_table)
    assert [c.name for c in features["dagster/column_schema"].columns] == list(features_table.columns)
    read_from = features["input/fraud_transactions"]  # every day from the one backfill run
    assert len(read_from) == 14 + HISTORY_DAYS and {entry["run_id"] for entry in read_from} == {loaded.run_id}
    assert read_from[-1] == {
        "partition": str(LAST),
        "run_id": loaded.run_id,
        "storage_key": f"fraud/transactions/{loaded.run_id}/{LAST}.parquet",
    }
    model = materialized(retrain, "fraud_model")
    assert model["champion_after"] == "1", model["reason"]
    # The promotion decision is a visible check on fraud_model's materialization, with the metrics compared.
    [promotion] = [c for c in retrain.get_asset_check_evaluations() if c.check_name == "fraud_model_promotion"]
    assert promotion.passed and promotion.asset_key == dg.AssetKey("fraud_model")
    assert promotion.metadata["decision"].value == "promoted" and promotion.metadata["reason"].value == model["reason"]
    assert promotion.metadata["candidate_precision"].value == model["precision"] == round(model["precision"], 4)
    registered = MlflowClient(settings.mlflow_tracking_uri).get_model_version_by_alias("fraud-detector", "champion")
    assert str(registered.version) == "1"

    monitoring = defs.resolve_job_def(MONITORING_JOB).execute_in_process(instance=dagster_instance)
    assert monitoring.success and materialized(monitoring, "fraud_monitoring_metrics")["model_version"] == "1"

    # The labels arrive: re-materializing the day stores them.
    labelled = frames(LAST, LAST)
    write_days(tmp_path / "tx", labelled)
    (tmp_path / "tx" / f"date={LAST}" / "part-1.parquet").unlink()  # the source rewrote the day as one file
    again = materialize_days(defs, dagster_instance, LAST, LAST)
    assert materialized(again, "fraud_transactions")["unlabelled"] == 0
    pd.testing.assert_frame_equal(stored(home, again.run_id, LAST), labelled)
    assert stored(home, loaded.run_id, LAST)["is_fraud"].isna().sum() == 25  # the first run's file is left as it was
    # A retrain now reads the newer materialization of LAST and the backfill's of the other days.
    features = materialized(
        defs.resolve_job_def(RETRAIN_JOB).execute_in_process(
            instance=dagster_instance, run_config={"ops": {"fraud_features": {"config": {"end_date": str(LAST)}}}}
        ),
        "fraud_features",
    )
    assert features["unlabelled_dropped"] == 0 and features["rows"] == in_window
    runs = {entry["partition"]: entry["run_id"] for entry in features["input/fraud_transactions"]}
    assert runs.pop(str(LAST)) == again.run_id and set(runs.values()) == {loaded.run_id}


def test_unset_url_keeps_the_simulator(ecosystem_env, monkeypatch):
    from ecosystem_assets.resources.wiring import build_resources
    from ecosystem_assets.settings import Settings

    monkeypatch.delenv("FRAUD_TRANSACTIONS_URL", raising=False)
    source = build_resources(Settings.from_env())["transactions"]
    assert source.url is None and source.source_label.startswith("simulator")
    assert len(source.days(DAY, DAY)[DAY]) > 1000  # the default population's day


def test_asset_fails_with_the_source_message(ecosystem_env, dagster_instance, tmp_path, monkeypatch):
    from ecosystem_assets.project import build_definitions
    from ecosystem_assets.settings import Settings

    root, _, _ = one_day(tmp_path)
    monkeypatch.setenv("FRAUD_TRANSACTIONS_URL", str(root))
    result = materialize_days(build_definitions(Settings.from_env()), dagster_instance, DAY, DAY + timedelta(days=1), raise_on_error=False)
    assert not result.success
    failure = result.failure_data_for_node("fraud_transactions")
    assert failure.user_failure_data.description == (
        f"FRAUD_TRANSACTIONS_URL has no files for 2026-07-03 (expected {root}/date=2026-07-03/*.parquet)"
    )


# --- reading: exact round trip, other encodings, late labels, S3 ---------------------------------


def test_reads_other_encodings_into_the_simulator_shape(tmp_path):
    """Categorical ids, millisecond timestamps in another zone, bool labels, integer amounts, extra columns."""
    import pandas as pd

    frame = frames(DAY, DAY)
    other = frame.assign(
        customer_id=frame["customer_id"].astype("category"),
        timestamp=frame["timestamp"].dt.tz_convert("America/New_York").astype("datetime64[ms, America/New_York]"),
        is_fraud=frame["is_fraud"].astype(bool),
        amount=(frame["amount"] * 100).round().astype("int64"),
        channel="card-present",
    ).drop(columns=["fraud_scenario"])
    (tmp_path / "tx" / f"date={DAY}").mkdir(parents=True)
    other.to_parquet(tmp_path / "tx" / f"date={DAY}" / "part-0.parquet", index=False)
    got = read(tmp_path / "tx")[DAY]
    assert list(got.columns) == list(frame.columns) and got["fraud_scenario"].isna().all()
    expected = frame.assign(amount=(frame["amount"] * 100).round()).drop(columns=["fraud_scenario"])
    pd.testing.assert_frame_equal(got.drop(columns=["fraud_scenario"]), expected)


def test_late_labels_are_null_and_spark_markers_are_skipped(tmp_path):
    import pandas as pd

    root, frame, path = one_day(tmp_path)
    frame["is_fraud"] = frame["is_fraud"].astype("Int64")
    frame.loc[:9, "is_fraud"] = pd.NA
    frame.to_parquet(path, index=False)
    (path.parent / "_SUCCESS").write_bytes(b"")
    (path.parent / ".part-0.parquet.crc").write_bytes(b"\x00\x01")
    got = read(root)[DAY]
    assert got["is_fraud"].dtype == "Int64" and int(got["is_fraud"].isna().sum()) == 10
    pd.testing.assert_frame_equal(got, frame)


def test_reads_s3(s3_bucket, tmp_path):
    import boto3
    import pandas as pd

    frame = frames(DAY, DAY + timedelta(days=2))
    write_days(tmp_path / "tx", frame, files_per_day=2)
    s3 = boto3.client("s3")
    for path in sorted((tmp_path / "tx").rglob("*.parquet")):
        key = f"landing/card/{path.relative_to(tmp_path / 'tx').as_posix()}"
        s3.put_object(Bucket=s3_bucket, Key=key, Body=path.read_bytes())
    url = f"s3://{s3_bucket}/landing/card"
    got = read(url, DAY, DAY + timedelta(days=2))
    assert sorted(got) == [DAY, DAY + timedelta(days=1), DAY + timedelta(days=2)]
    pd.testing.assert_frame_equal(pd.concat(got.values(), ignore_index=True), frame)
    message = refused(url, DAY, DAY + timedelta(days=3))
    assert message == f"FRAUD_TRANSACTIONS_URL has no files for 2026-07-05 (expected {url}/date=2026-07-05/*.parquet)"


# --- refusals: each names the day, the file and the column ---------------------------------------


def test_missing_day(tmp_path):
    root, _, _ = one_day(tmp_path)
    one_day(tmp_path, DAY + timedelta(days=2))
    assert refused(root, DAY, DAY + timedelta(days=2)) == (
        f"FRAUD_TRANSACTIONS_URL has no files for 2026-07-03 (expected {root}/date=2026-07-03/*.parquet)"
    )


def test_missing_folder(tmp_path):
    assert refused(tmp_path / "nowhere") == f"FRAUD_TRANSACTIONS_URL={tmp_path / 'nowhere'} is not a folder"


def test_missing_column(tmp_path):
    root, frame, path = one_day(tmp_path)
    frame.drop(columns=["terminal_id"]).to_parquet(path, index=False)
    message = refused(root)
    assert message.startswith(f"FRAUD_TRANSACTIONS_URL day 2026-07-02: {path} has no column 'terminal_id'"), message


@pytest.mark.parametrize(
    ("column", "value", "found", "expected"),
    [
        ("amount", lambda f: f["amount"].astype(str), "string", "a number"),
        ("customer_id", lambda f: f["customer_id"].str[1:].astype(int), "int64", "string"),
        ("timestamp", lambda f: f["timestamp"].dt.tz_localize(None), "timestamp[ns] (no time zone)", "timestamp with a time zone"),
        ("timestamp", lambda f: f["timestamp"].astype(str), "string", "timestamp with a time zone"),
        ("is_fraud", lambda f: f["is_fraud"].map({0: "no", 1: "yes"}), "string", "bool or integer 0/1"),
    ],
)
def test_wrong_type(tmp_path, column, value, found, expected):
    root, frame, path = one_day(tmp_path)
    frame.assign(**{column: value(frame)}).to_parquet(path, index=False)
    message = refused(root)
    assert message.startswith(f"FRAUD_TRANSACTIONS_URL day 2026-07-02: {path} column {column!r} has type {found}, expected {expected}"), (
        message
    )


def test_timestamp_outside_its_day(tmp_path):
    root, frame, path = one_day(tmp_path)
    frame.loc[3, "timestamp"] += timedelta(days=1)
    frame.to_parquet(path, index=False)
    message = refused(root)
    late = frame.loc[3, "timestamp"]
    assert message == (
        f"FRAUD_TRANSACTIONS_URL day 2026-07-02: {path} column 'timestamp' has 1 values outside 2026-07-02 "
        f"(UTC), e.g. {late.isoformat()} for transaction {frame.loc[3, 'transaction_id']}"
    )


def test_timestamp_far_outside_its_day(tmp_path):
    """A year-2300 time in microseconds (beyond pandas' nanosecond range) is reported, not overflowed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root, frame, path = one_day(tmp_path)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    micros = table.column("timestamp").cast(pa.timestamp("us", "UTC")).to_pylist()
    micros[0] = micros[0].replace(year=2300)
    pq.write_table(
        table.set_column(table.schema.get_field_index("timestamp"), "timestamp", pa.array(micros, pa.timestamp("us", "UTC"))), path
    )
    assert "column 'timestamp' has 1 values outside 2026-07-02 (UTC), e.g. 2300-07-02T" in refused(root)


def test_timestamp_in_another_zone_counts_in_utc(tmp_path):
    """00:30 at UTC+02:00 on the day is 22:30 UTC the day before: outside the day, though its local date matches."""
    root, frame, path = one_day(tmp_path)
    frame["timestamp"] = frame["timestamp"].dt.tz_convert("Europe/Berlin")
    frame.loc[0, "timestamp"] = frame.loc[0, "timestamp"].replace(hour=0, minute=30, second=0)
    frame.to_parquet(path, index=False)
    assert "column 'timestamp' has 1 values outside 2026-07-02 (UTC), e.g. 2026-07-01T22:30:00+00:00" in refused(root)


def test_duplicate_transaction_id(tmp_path):
    root, frame, path = one_day(tmp_path)
    frame.iloc[:5].to_parquet(path.parent / "resent.parquet", index=False)
    message = refused(root)
    first = frame.loc[0, "transaction_id"]
    assert message == (
        f"FRAUD_TRANSACTIONS_URL: 5 duplicate transaction_id values, e.g. {first!r} appears 2 times: "
        f"{path} (day 2026-07-02); {path.parent / 'resent.parquet'} (day 2026-07-02)"
    )


def test_duplicate_transaction_id_across_days(tmp_path):
    root, frame, path = one_day(tmp_path)
    _, next_frame, next_path = one_day(tmp_path, DAY + timedelta(days=1))
    next_frame.loc[7, "transaction_id"] = frame.loc[2, "transaction_id"]
    next_frame.to_parquet(next_path, index=False)
    message = refused(root, DAY, DAY + timedelta(days=1))
    assert f"{path} (day 2026-07-02); {next_path} (day 2026-07-03)" in message, message


@pytest.mark.parametrize("content", [b"transaction_id,customer_id\nX1,C1\n", b"PAR1 then garbage PAR1", b""])
def test_not_parquet(tmp_path, content):
    root, _, path = one_day(tmp_path)
    (path.parent / "part-1.parquet").write_bytes(content)
    message = refused(root)
    assert message.startswith(f"FRAUD_TRANSACTIONS_URL day 2026-07-02: {path.parent / 'part-1.parquet'} is not a"), message


def test_file_without_parquet_name(tmp_path):
    root, frame, path = one_day(tmp_path)
    frame.to_csv(path.parent / "extra.csv", index=False)
    assert refused(root) == (
        f"FRAUD_TRANSACTIONS_URL day 2026-07-02: {path.parent / 'extra.csv'} is not a Parquet file (expected *.parquet)"
    )


@pytest.mark.parametrize(
    ("column", "bad", "what"),
    [
        ("amount", -1.0, "values that are negative or not finite, e.g. -1.0"),
        ("amount", float("inf"), "values that are negative or not finite, e.g. inf"),
        ("amount", float("nan"), "1 null values"),  # pandas writes NaN as a Parquet null
        ("is_fraud", 2, "values other than 0/1 or null, e.g. 2"),
        ("customer_id", None, "1 null values"),
    ],
)
def test_bad_values(tmp_path, column, bad, what):
    root, frame, path = one_day(tmp_path)
    frame[column] = frame[column].astype(object)
    frame.at[4, column] = bad
    frame[column] = frame[column].infer_objects()
    frame.to_parquet(path, index=False)
    message = refused(root)
    assert message.startswith(f"FRAUD_TRANSACTIONS_URL day 2026-07-02: {path} column {column!r} has "), message
    assert what in message, message
