"""Retention of per-run artifacts (the Evidently drift reports, one per monitoring run: ~4 MB each,
~1.2 GB a day at a 5-minute schedule). Plain Python over the `Store` interface, no Dagster.

An artifact's time is the UTC stamp in its key (``…-20261130T031500Z.html``, written by the run that
made it), not the object's mtime: the same rule on a local folder and on S3, and a copied folder
keeps its ages. The newest ``keep_runs`` are always kept, older ones only while younger than
``keep_days``. Keys without a stamp are never touched.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from ecosystem_assets.storage import Store

STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
_STAMP = re.compile(r"-(\d{8}T\d{6}Z)\.[A-Za-z0-9]+$")


def stamp(now: datetime | None = None) -> str:
    """The UTC stamp a per-run artifact's key ends with (before its extension)."""
    return (now or datetime.now(UTC)).strftime(STAMP_FORMAT)


def stamped_at(key: str) -> datetime | None:
    match = _STAMP.search(key)
    if match is None:
        return None
    try:
        return datetime.strptime(match.group(1), STAMP_FORMAT).replace(tzinfo=UTC)
    except ValueError:  # 8 + 6 digits that are no date (month 13): not ours
        return None


def expired(keys: Iterable[str], keep_runs: int, keep_days: float, now: datetime) -> list[str]:
    """The stamped keys past retention: all but the newest ``keep_runs``, older than ``keep_days``."""
    dated = sorted(((at, key) for key in keys if (at := stamped_at(key)) is not None), reverse=True)
    cutoff = now - timedelta(days=keep_days)
    return [key for at, key in dated[max(0, keep_runs) :] if at < cutoff]


def prune(store: Store, prefix: str, keep_runs: int, keep_days: float, now: datetime | None = None) -> list[str]:
    """Delete the expired artifacts under ``prefix``; returns their keys."""
    gone = expired(store.list_keys(prefix), keep_runs, keep_days, now or datetime.now(UTC))
    for key in gone:
        store.delete(key)
    return gone
