"""Which upstream materialization a step reads, and where a materialization writes its files.

Every artifact an asset writes lives under a key that contains the id of the run that
materialized it (`run_key`), and the materialization's metadata says where (`STORAGE_KEY`). A
downstream asset or a check never reads a fixed "current" file: it asks for the upstream
materialization Dagster's lineage points to (`upstream`) and reads the key recorded there:

- the materialization made by **this run**, when this run materialized the upstream asset (a
  job that builds a dataset and trains on it trains on that dataset, even if another run
  materialized the same asset meanwhile);
- otherwise the **latest** materialization in the instance (what the UI shows as the asset's
  current state, and what Dagster records as this materialization's input).

Two runs at once therefore each read their own data. The chosen record's run id and storage key
go into the reader's metadata (`lineage_metadata`), so the UI shows which file a result came from.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import dagster as dg

STORAGE_KEY = "storage_key"  # metadata entry: the artifact's key in ArtifactStorage


class MissingUpstream(dg.Failure):
    """The upstream asset (or some of its partitions: ``missing``) has never been materialized."""

    def __init__(self, description: str, missing: Iterable[str] = ()) -> None:
        super().__init__(description=description)
        self.missing = list(missing)


@dataclass(frozen=True)
class Upstream:
    """One materialization of an upstream asset: where it came from and what it recorded."""

    asset_key: dg.AssetKey
    run_id: str
    storage_id: int  # event id in the storage that returned it (SQLite: a run's own file differs from the index)
    partition: str | None
    metadata: Mapping[str, Any]  # plain values (MetadataValue.value)

    @property
    def storage_key(self) -> str:
        key = self.metadata.get(STORAGE_KEY)
        if not isinstance(key, str):
            raise dg.Failure(
                description=f"materialization of {self.asset_key.to_user_string()} in run {self.run_id} "
                f"records no {STORAGE_KEY!r}: re-materialize it"
            )
        return key


def run_key(prefix: str, run_id: str, name: str) -> str:
    """``prefix/<run_id>/name``: the key of a file written by the run ``run_id``."""
    return f"{prefix.rstrip('/')}/{run_id}/{name}"


def _upstream(materialization: Any, run_id: str, storage_id: int) -> Upstream:
    return Upstream(
        materialization.asset_key,
        run_id,
        storage_id,
        materialization.partition,
        {k: v.value for k, v in materialization.metadata.items()},
    )


def _this_run(instance: dg.DagsterInstance, run_id: str, asset_key: dg.AssetKey) -> dict[str | None, Upstream]:
    """The materializations of ``asset_key`` made by ``run_id``, newest per partition."""
    found: dict[str | None, Upstream] = {}
    connection = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
    for record in connection.records:
        event = record.event_log_entry.dagster_event
        if event is None or event.asset_key != asset_key:
            continue
        materialization = event.step_materialization_data.materialization
        found[materialization.partition] = _upstream(materialization, record.event_log_entry.run_id, record.storage_id)
    return found


def upstream(context: Any, asset: str | dg.AssetKey) -> Upstream:
    """The materialization of the unpartitioned ``asset`` this step reads (this run's, else the latest).
    ``context``: an asset, op or asset-check execution context."""
    key = dg.AssetKey.from_coercible(asset)
    instance, run_id = context.instance, context.run.run_id
    own = _this_run(instance, run_id, key).get(None)
    if own is not None:
        return own
    records = instance.fetch_materializations(key, limit=1).records
    if not records:
        raise MissingUpstream(description=f"{key.to_user_string()} has not been materialized yet: materialize it first")
    return _upstream(records[0].asset_materialization, records[0].run_id, records[0].storage_id)


def upstream_partitions(context: Any, asset: str | dg.AssetKey, partitions: Iterable[str]) -> dict[str, Upstream]:
    """Per partition of ``asset``: the materialization this step reads (this run's, else the latest).
    Raises MissingUpstream naming the partitions never materialized."""
    key = dg.AssetKey.from_coercible(asset)
    wanted = list(dict.fromkeys(partitions))
    instance = context.instance
    own = _this_run(instance, context.run.run_id, key)
    found = {p: own[p] for p in wanted if p in own}
    rest = [p for p in wanted if p not in found]
    if rest:
        latest = instance.get_latest_storage_id_by_partition(key, dg.DagsterEventType.ASSET_MATERIALIZATION, set(rest))
        ids = [latest[p] for p in rest if p in latest]
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            for record in instance.fetch_materializations(dg.AssetRecordsFilter(key, storage_ids=chunk), limit=len(chunk)).records:
                item = _upstream(record.asset_materialization, record.run_id, record.storage_id)
                if item.partition is not None:
                    found[item.partition] = item
    missing = [p for p in wanted if p not in found]
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise MissingUpstream(
            description=f"{key.to_user_string()} has no materialization for {len(missing)} "
            f"partition(s): {shown}; materialize (backfill) them first",
            missing=missing,
        )
    return {p: found[p] for p in wanted}


def lineage_metadata(*sources: Upstream) -> dict[str, Any]:
    """Metadata naming the upstream materializations a result was computed from: one entry per
    upstream asset (``input/<asset>``), with run id and storage key (per partition when partitioned)."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for source in sources:
        # The run id names the materialization everywhere; storage ids differ between SQLite's run and index files.
        entry = {"run_id": source.run_id, STORAGE_KEY: source.metadata.get(STORAGE_KEY)}
        if source.partition is not None:
            entry = {"partition": source.partition, **entry}
        grouped.setdefault(source.asset_key.to_user_string(), []).append(entry)
    return {
        f"input/{name}": dg.MetadataValue.json(entries[0] if len(entries) == 1 and "partition" not in entries[0] else entries)
        for name, entries in grouped.items()
    }
