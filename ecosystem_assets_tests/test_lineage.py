"""lineage.upstream: a step reads its own run's upstream materialization, else the latest one."""

import dagster as dg

from ecosystem_assets.lineage import STORAGE_KEY, lineage_metadata, run_key, upstream, upstream_partitions

DAYS = dg.DailyPartitionsDefinition(start_date="2026-09-01", end_date="2026-09-04")
seen: dict[str, object] = {}


@dg.asset
def source(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={STORAGE_KEY: run_key("source", context.run.run_id, "data.parquet")})


@dg.asset(deps=[source])
def reader(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    found = upstream(context, "source")
    seen["reader"] = found
    return dg.MaterializeResult(metadata=lineage_metadata(found))


@dg.asset(partitions_def=DAYS)
def days(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={STORAGE_KEY: run_key("days", context.run.run_id, f"{context.partition_key}.parquet")})


@dg.asset(deps=[days])
def window(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    found = upstream_partitions(context, "days", DAYS.get_partition_keys())
    seen["window"] = found
    return dg.MaterializeResult(metadata=lineage_metadata(*found.values()))


def _run_id(result: dg.ExecuteInProcessResult) -> str:
    assert result.success
    return result.run_id


def test_reads_own_run_then_latest():
    instance = dg.DagsterInstance.ephemeral()
    first = _run_id(dg.materialize([source], instance=instance))
    second = _run_id(dg.materialize([source], instance=instance))
    # Without materializing `source` itself, the reader takes the latest materialization.
    third = _run_id(dg.materialize([source, reader], selection=[reader], instance=instance))
    assert seen["reader"].run_id == second and seen["reader"].storage_key == f"source/{second}/data.parquet"
    # A run that materializes both reads its own, not the latest before it.
    both = _run_id(dg.materialize([source, reader], instance=instance))
    assert seen["reader"].run_id == both != first
    recorded = instance.get_latest_materialization_event(dg.AssetKey("reader")).asset_materialization.metadata
    assert recorded["input/source"].value["run_id"] == both and third != both


def test_partitions_missing_named_then_read_per_partition():
    instance = dg.DagsterInstance.ephemeral()
    keys = DAYS.get_partition_keys()
    early = _run_id(dg.materialize([days], partition_key=keys[0], instance=instance))
    refused = dg.materialize([days, window], selection=[window], instance=instance, raise_on_error=False)
    assert "days has no materialization for 2 partition(s): 2026-09-02, 2026-09-03" in _failure(refused)
    later = [_run_id(dg.materialize([days], partition_key=k, instance=instance)) for k in keys[1:]]
    again = _run_id(dg.materialize([days], partition_key=keys[0], instance=instance))
    _run_id(dg.materialize([days, window], selection=[window], instance=instance))
    found = seen["window"]
    assert [found[k].run_id for k in keys] == [again, *later] and early != again
    assert found[keys[1]].storage_key == f"days/{later[0]}/{keys[1]}.parquet"


def test_missing_unpartitioned_upstream_is_named():
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([source, reader], selection=[reader], instance=instance, raise_on_error=False)
    assert "source has not been materialized yet" in _failure(result)


def _failure(result: dg.ExecuteInProcessResult) -> str:
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    return failure.step_failure_data.error.message + (failure.step_failure_data.user_failure_data.description or "")
