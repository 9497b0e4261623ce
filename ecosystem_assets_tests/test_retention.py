"""Retention of per-run artifacts on a local folder and on moto's S3: what is deleted, what stays."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ecosystem_assets.retention import expired, prune, stamp, stamped_at
from ecosystem_assets.storage import Store, open_store

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> Store:
    if request.param == "local":
        return open_store(str(tmp_path / "store"))
    return open_store(f"s3://{request.getfixturevalue('s3_bucket')}/prefix")


def report(days_ago: float, version: int = 1) -> str:
    return f"fraud/monitoring/drift-v{version}-{stamp(NOW - timedelta(days=days_ago))}.html"


def test_old_reports_go_the_newest_and_unstamped_stay(store):
    keys = [report(d) for d in (0.1, 1, 13.9, 14.5, 30, 400)]
    others = [
        "fraud/monitoring/notes.html",
        "fraud/monitoring/drift-v1-20261399T000000Z.html",
        "fraud/other/drift-v1-20200101T000000Z.html",
    ]
    for key in keys + others:
        store.write_bytes(key, b"<html/>")
    gone = prune(store, "fraud/monitoring", keep_runs=2, keep_days=14, now=NOW)
    assert sorted(gone) == sorted(keys[3:])  # older than 14 days; another prefix is not looked at
    assert sorted(store.list_keys()) == sorted(keys[:3] + others)


def test_the_newest_runs_stay_however_old():
    keys = [report(d) for d in (100, 200, 300)]
    assert expired(keys, keep_runs=2, keep_days=14, now=NOW) == [keys[2]]
    assert expired(keys, keep_runs=0, keep_days=14, now=NOW) == keys
    assert expired(keys, keep_runs=5, keep_days=0, now=NOW) == []


def test_the_stamp_round_trips_and_a_non_date_is_not_one():
    assert stamped_at(report(0)) == NOW
    assert stamped_at("drift-v1-20261399T000000Z.html") is None and stamped_at("drift.html") is None
