"""lineage.upstream: a step reads its own run's upstream materialization, else the latest one whose
blocking checks passed (re-executions: ecosystem_assets_tests/test_lineage_reexecution.py)."""

from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from ecosystem_assets.lineage import STORAGE_KEY, lineage_metadata, run_key, upstream, upstream_partitions
from ecosystem_assets.resources.storage import ArtifactStorage
from ecosystem_assets.storage import Store, open_store
from ecosystem_assets_tests.sales.orders_data import make_orders
from ecosystem_assets_tests.servers.sales_api import FakeSalesApi

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


# Blocking checks: a reader never takes a materialization whose blocking check failed, or that no
# blocking check judged, as "the latest" (a run that materializes it still reads its own).


class Gate(dg.Config):
    passed: bool = True
    severity: str = "ERROR"


@dg.asset(check_specs=[dg.AssetCheckSpec("gate", asset="gated", blocking=True)])
def gated(context: dg.AssetExecutionContext, config: Gate):
    """Recorded first, then judged in the same step (as fraud_features and sales_summary_csv are)."""
    yield dg.MaterializeResult(metadata={STORAGE_KEY: run_key("gated", context.run.run_id, "table.parquet")})
    yield dg.AssetCheckResult(check_name="gate", passed=config.passed, severity=dg.AssetCheckSeverity[config.severity])


@dg.asset(deps=[gated])
def consumer(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    found = upstream(context, "gated")
    seen["consumer"] = found
    return dg.MaterializeResult(metadata=lineage_metadata(found))


def _gated(instance: dg.DagsterInstance, **gate) -> str:
    result = dg.materialize([gated], instance=instance, run_config={"ops": {"gated": {"config": gate}}}, raise_on_error=False)
    return result.run_id


def _consumed(instance: dg.DagsterInstance) -> str:
    _run_id(dg.materialize([gated, consumer], selection=[consumer], instance=instance))
    return seen["consumer"].run_id


def test_the_latest_is_the_newest_whose_blocking_checks_passed():
    instance = dg.DagsterInstance.ephemeral()
    good = _gated(instance)
    bad = _gated(instance, passed=False)
    assert instance.get_latest_materialization_event(dg.AssetKey("gated")).run_id == bad  # recorded, then refused
    assert _consumed(instance) == good and seen["consumer"].storage_key == f"gated/{good}/table.parquet"
    warned = _gated(instance, passed=False, severity="WARN")  # a failed WARN stops nothing in Dagster: read
    assert _consumed(instance) == warned
    _gated(instance, passed=False)
    assert _consumed(instance) == warned


def test_no_materialization_that_passed_is_refused_naming_the_runs_and_the_check():
    instance = dg.DagsterInstance.ephemeral()
    bad = _gated(instance, passed=False)
    result = dg.materialize([gated, consumer], selection=[consumer], instance=instance, raise_on_error=False)
    assert f"gated has no materialization that passed its blocking checks among its newest 1: run {bad}: gate failed" in _failure(result)


class Photos(dg.Config):
    usable: bool = True


@dg.asset
def photos(context: dg.AssetExecutionContext, config: Photos) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={STORAGE_KEY: run_key("photos", context.run.run_id, "manifest"), "usable": config.usable})


@dg.asset_check(asset=photos, blocking=True)
def photos_usable(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    """A check step of its own (as image_dataset's): it judges the materialization lineage points to."""
    judged = upstream(context, "photos")
    return dg.AssetCheckResult(passed=bool(judged.metadata["usable"]), metadata=lineage_metadata(judged))


@dg.asset(deps=[photos])
def album(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    found = upstream(context, "photos")
    seen["album"] = found
    return dg.MaterializeResult(metadata=lineage_metadata(found))


def _photos(
    instance: dg.DagsterInstance, usable: bool = True, *, checked: bool = True, also: list | None = None
) -> dg.ExecuteInProcessResult:
    """photos (and ``also``), with its check or with the check left out of the run."""
    selection = dg.AssetSelection.assets(photos, *(also or []))
    return dg.materialize(
        [photos, photos_usable, *(also or [])],
        selection=selection if checked else selection.without_checks(),
        instance=instance,
        run_config={"ops": {"photos": {"config": {"usable": usable}}}},
        raise_on_error=False,
    )


def _album(instance: dg.DagsterInstance) -> str:
    # The check is part of the definitions (as in the code location): that is where the reader learns it is blocking.
    _run_id(dg.materialize([photos, photos_usable, album], selection=[album], instance=instance))
    return seen["album"].run_id


def test_a_materialization_no_blocking_check_judged_is_not_the_latest_and_a_check_judges_the_newest():
    instance = dg.DagsterInstance.ephemeral()
    checked = _run_id(_photos(instance))
    unchecked = _photos(instance, usable=False, checked=False)  # the check left out of the run
    assert unchecked.success and unchecked.get_asset_check_evaluations() == []
    assert _album(instance) == checked
    # A run that materializes photos without the check reads its own (Dagster runs album there too).
    own = _photos(instance, checked=False, also=[album])
    assert own.get_asset_check_evaluations() == [] and seen["album"].run_id == own.run_id != unchecked.run_id
    assert _album(instance) == checked  # still unjudged
    # The check run on its own judges the newest photos (its own asset: never gated) and records which.
    judge_only = dg.materialize([photos, photos_usable], selection=dg.AssetSelection.checks(photos_usable), instance=instance)
    [evaluation] = judge_only.get_asset_check_evaluations()
    assert evaluation.passed and evaluation.metadata["input/photos"].value["run_id"] == own.run_id
    assert _album(instance) == own.run_id  # judged by another run's evaluation: passed
    refused = _photos(instance, usable=False)
    assert not refused.success and _album(instance) == own.run_id


class Day(dg.Config):
    passed: bool = True


@dg.asset(partitions_def=DAYS, check_specs=[dg.AssetCheckSpec("day_gate", asset="gated_days", blocking=True)])
def gated_days(context: dg.AssetExecutionContext, config: Day):
    yield dg.MaterializeResult(metadata={STORAGE_KEY: run_key("gated_days", context.run.run_id, f"{context.partition_key}.parquet")})
    yield dg.AssetCheckResult(check_name="day_gate", passed=config.passed)


@dg.asset(deps=[gated_days])
def gated_window(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    found = upstream_partitions(context, "gated_days", DAYS.get_partition_keys())
    seen["gated_window"] = found
    return dg.MaterializeResult(metadata=lineage_metadata(*found.values()))


def test_partitions_read_their_newest_materialization_that_passed():
    instance = dg.DagsterInstance.ephemeral()
    first, second, third = DAYS.get_partition_keys()

    def day(key: str, passed: bool = True) -> str:
        config = {"ops": {"gated_days": {"config": {"passed": passed}}}}
        return dg.materialize([gated_days], partition_key=key, instance=instance, run_config=config, raise_on_error=False).run_id

    good = {first: day(first), second: day(second)}
    day(first, passed=False)
    refused = [day(third, passed=False), day(third, passed=False)]
    window = dg.materialize([gated_days, gated_window], selection=[gated_window], instance=instance, raise_on_error=False)
    assert (
        f"gated_days has no materialization that passed its blocking checks for 1 partition(s): {third} (run {refused[1]}: "
        f"day_gate failed; and 1 more)" in _failure(window)
    )
    good[third] = day(third)
    _run_id(dg.materialize([gated_days, gated_window], selection=[gated_window], instance=instance))
    assert {k: v.run_id for k, v in seen["gated_window"].items()} == good


# The project's assets: a downstream asset materialized alone skips what its upstream's blocking checks refused.

SALES_DAY = "2026-11-26"


class _LastRowLost:
    """A store whose summary CSV uploads lose their last row (as a truncated upload would)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def write_bytes(self, key: str, data: bytes) -> str:
        if key.startswith("sales/summary/"):
            data = b"".join(data.splitlines(keepends=True)[:-1])
        return self._inner.write_bytes(key, data)


class LossySummaries(ArtifactStorage):
    @cached_property
    def store(self) -> Store:
        return _LastRowLost(open_store(self.url))  # type: ignore[return-value]


@pytest.fixture
def sales_api() -> Iterator[FakeSalesApi]:
    api = FakeSalesApi(page_size=100).start()
    yield api
    api.stop()


def test_the_email_alone_attaches_the_newest_summary_that_reconciled(sales_api, ecosystem_env, dagster_instance, monkeypatch):
    from ecosystem_assets_tests.sales.pipeline import attachment, definitions, local_file, materialization, outbox, parse_eml, run_assets
    from ecosystem_assets_tests.sales.pipeline import storage_key as key_of

    monkeypatch.setenv("SALES_API_URL", sales_api.url)
    sales_api.orders[SALES_DAY] = make_orders(SALES_DAY, 321)
    good = run_assets(definitions(), dagster_instance, SALES_DAY, "raw_sales", "sales_summary_csv")
    assert good.success
    lossy = run_assets(
        definitions(storage=LossySummaries(url=str(local_file(ecosystem_env, "")))),
        dagster_instance,
        SALES_DAY,
        "raw_sales",
        "sales_summary_csv",
    )
    [reconciled] = [c for c in lossy.get_asset_check_evaluations() if c.check_name == "summary_matches_raw_orders"]
    assert not lossy.success and not reconciled.passed  # the short CSV was recorded, then refused

    email = run_assets(definitions(), dagster_instance, SALES_DAY, "sales_report_email")
    assert email.success
    read = materialization(email, "sales_report_email")["input/sales_summary_csv"]
    assert read == [{"partition": SALES_DAY, "run_id": good.run_id, STORAGE_KEY: key_of(good, "sales_summary_csv")}]
    [message] = outbox(ecosystem_env)
    assert attachment(parse_eml(message))[1] == local_file(ecosystem_env, key_of(good, "sales_summary_csv")).read_bytes()


def test_image_shards_alone_packs_the_newest_dataset_that_passed_its_checks(tmp_path, ecosystem_env, dagster_instance, monkeypatch):
    from ecosystem_assets.project import build_definitions
    from ecosystem_assets.settings import Settings
    from ecosystem_assets_tests.vision.conftest import write_image_folder

    clean, defective = tmp_path / "clean", tmp_path / "defective"
    write_image_folder(open_store(str(clean)), {"cat": 40, "dog": 40, "owl": 40})
    write_image_folder(open_store(str(defective)), {"cat": 40, "dog": 40, "owl": 1}, first_seed=1000)  # owl misses splits

    def run(source: Path, asset: str) -> dg.ExecuteInProcessResult:
        monkeypatch.setenv("IMAGE_DATASET_URL", str(source))
        job = build_definitions(Settings.from_env()).resolve_implicit_global_asset_job_def()
        return job.execute_in_process(instance=dagster_instance, asset_selection=[dg.AssetKey(asset)], raise_on_error=False)

    good = run(clean, "image_dataset")
    assert good.success and len(good.get_asset_check_evaluations()) == 3
    bad = run(defective, "image_dataset")
    assert not bad.success and [c.check_name for c in bad.get_asset_check_evaluations() if not c.passed] == ["classes_in_every_split"]

    shards = run(defective, "image_shards")
    assert shards.success, _failure(shards) if not shards.success else ""
    [dataset] = good.asset_materializations_for_node("image_dataset")
    [packed] = shards.asset_materializations_for_node("image_shards")
    assert packed.metadata["input/image_dataset"].value["run_id"] == good.run_id
    assert packed.metadata["dataset_version"].value == dataset.metadata["dataset_version"].value
