"""A re-execution (from failure, or of selected steps) reads what its parent run built, not the
latest materialization: a retrain that failed during an outage and is re-executed afterwards
trains on the table its own run built, even when someone materialized the table again meanwhile;
and a re-executed step does not read its parent's upstream when a blocking check failed on it.

The runs go through Dagster's own re-execution (`execute_job` with `ReexecutionOptions`) on the
test's on-disk instance, in process. An outage is a file (toy jobs) or a mail server that refuses
the message once (the project's daily sales job).
"""

import email as email_message
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from ecosystem_assets.lineage import STORAGE_KEY, lineage_metadata, run_key, upstream
from ecosystem_assets_tests.sales.orders_data import make_orders
from ecosystem_assets_tests.sales.pipeline import attachment, definitions, local_file, run_assets
from ecosystem_assets_tests.servers.sales_api import FakeSalesApi
from ecosystem_assets_tests.servers.smtp import SmtpServer

OUTAGE = "LINEAGE_TEST_OUTAGE"  # a file: while it exists, `model` fails as if the model registry were down
DAY = "2026-11-26"
IN_PROCESS = {"execution": {"config": {"in_process": {}}}}  # the project's jobs: run the steps in this process


@dg.asset
def table(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={STORAGE_KEY: run_key("table", context.run.run_id, "table.parquet")})


@dg.asset(deps=[table])
def model(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    found = upstream(context, "table")
    if Path(os.environ[OUTAGE]).exists():
        raise dg.Failure(description="the model registry is unavailable")
    return dg.MaterializeResult(metadata=lineage_metadata(found))


class Gate(dg.Config):
    passed: bool = True


@dg.asset(check_specs=[dg.AssetCheckSpec("gate", asset="gated_table", blocking=True)])
def gated_table(context: dg.AssetExecutionContext, config: Gate) -> Iterator[Any]:
    yield dg.MaterializeResult(metadata={STORAGE_KEY: run_key("gated_table", context.run.run_id, "table.parquet")})
    yield dg.AssetCheckResult(check_name="gate", passed=config.passed)


@dg.asset(deps=[gated_table])
def gated_model(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata=lineage_metadata(upstream(context, "gated_table")))


def retrain_job() -> dg.JobDefinition:
    """table → model. Module-level: `execute_job` rebuilds the job from this function."""
    job = dg.define_asset_job("retrain", selection=dg.AssetSelection.assets(table, model), executor_def=dg.in_process_executor)
    return dg.Definitions(assets=[table, model], jobs=[job]).resolve_job_def("retrain")


def gated_retrain_job() -> dg.JobDefinition:
    """gated_table (its blocking check in the same step) → gated_model."""
    job = dg.define_asset_job(
        "gated_retrain", selection=dg.AssetSelection.assets(gated_table, gated_model), executor_def=dg.in_process_executor
    )
    return dg.Definitions(assets=[gated_table, gated_model], jobs=[job]).resolve_job_def("gated_retrain")


def daily_sales_job() -> dg.JobDefinition:
    """The project's daily sales job as the environment wires it, its mailer trying once (an outage fails at once)."""
    from ecosystem_assets.project import build_definitions
    from ecosystem_assets.resources.mail import MailerResource
    from ecosystem_assets.resources.wiring import build_resources
    from ecosystem_assets.sales.schedules import DAILY_JOB
    from ecosystem_assets.settings import Settings

    settings = Settings.from_env()
    wired = build_resources(settings)["mailer"]
    mailer = MailerResource(**{**{name: getattr(wired, name) for name in MailerResource.model_fields}, "max_attempts": 1})
    return build_definitions(settings, {"mailer": mailer}).resolve_job_def(DAILY_JOB)


@dataclass
class Run:
    run_id: str
    success: bool
    materialized: dict[str, dict[str, Any]]  # asset → its materialization's metadata values
    failures: list[str]


def execute(job: Any, instance: dg.DagsterInstance, reexecute: dg.ReexecutionOptions | None = None, **kwargs: Any) -> Run:
    """One run of ``job``; a re-execution gets its parent's run config and tags, as the UI gives them
    (`execute_job` takes both from its caller only)."""
    if reexecute is not None:
        parent = instance.get_run_by_id(reexecute.parent_run_id)
        assert parent is not None
        kwargs = {"run_config": parent.run_config, "tags": {k: v for k, v in parent.tags.items() if k == "dagster/partition"}, **kwargs}
    with dg.execute_job(dg.reconstructable(job), instance, reexecution_options=reexecute, **kwargs) as result:
        materialized = {
            e.asset_key.to_user_string(): {k: v.value for k, v in e.materialization.metadata.items()}
            for e in result.get_asset_materialization_events()
        }
        failures = [
            (e.step_failure_data.user_failure_data.description if e.step_failure_data.user_failure_data else None)
            or e.step_failure_data.error.message
            for e in result.all_events
            if e.is_step_failure
        ]
        return Run(result.run_id, result.success, materialized, failures)


def from_failure(run: Run, instance: dg.DagsterInstance) -> dg.ReexecutionOptions:
    return dg.ReexecutionOptions.from_failure(run.run_id, instance)


def test_a_reexecution_from_failure_reads_the_upstream_its_run_built(dagster_instance, tmp_path, monkeypatch):
    outage = tmp_path / "outage"
    outage.touch()
    monkeypatch.setenv(OUTAGE, str(outage))
    first = execute(retrain_job, dagster_instance)
    assert not first.success and set(first.materialized) == {"table"}
    by_hand = dg.materialize([table], instance=dagster_instance).run_id  # meanwhile: the newest table is another run's
    second = execute(retrain_job, dagster_instance, from_failure(first, dagster_instance))  # the outage goes on
    assert not second.success and second.materialized == {}
    outage.unlink()
    third = execute(retrain_job, dagster_instance, from_failure(second, dagster_instance))  # a re-execution of a re-execution
    assert third.success and set(third.materialized) == {"model"}  # from failure: the table is not built again
    run = dagster_instance.get_run_by_id(third.run_id)
    assert run is not None and run.parent_run_id == second.run_id and run.root_run_id == first.run_id
    assert third.materialized["model"]["input/table"] == {"run_id": first.run_id, STORAGE_KEY: f"table/{first.run_id}/table.parquet"}
    # A run of the model alone (no parent) still reads the latest table.
    alone = dg.materialize([table, model], selection=[model], instance=dagster_instance)
    [event] = alone.get_asset_materialization_events()
    assert event.materialization.metadata["input/table"].value["run_id"] == by_hand


def test_a_reexecuted_step_refuses_its_parents_upstream_that_failed_a_blocking_check(dagster_instance):
    assert dg.materialize([gated_table], instance=dagster_instance).success  # a good table exists
    config = {"ops": {"gated_table": {"config": {"passed": False}}}}
    failed = execute(gated_retrain_job, dagster_instance, run_config=config)
    assert not failed.success and set(failed.materialized) == {"gated_table"}  # recorded, then its gate failed
    selected = dg.ReexecutionOptions(parent_run_id=failed.run_id, step_selection=["gated_model"])
    again = execute(gated_retrain_job, dagster_instance, selected)
    assert not again.success and again.materialized == {}
    assert (
        f"gated_table materialized by the run this one re-executes ({failed.run_id}) failed its blocking check gate: not reading it"
        in again.failures[0]
    )


@pytest.fixture
def sales_api() -> Iterator[FakeSalesApi]:
    api = FakeSalesApi(page_size=100).start()
    yield api
    api.stop()


def test_the_daily_run_reexecuted_after_a_mail_outage_emails_the_summary_it_built(sales_api, ecosystem_env, dagster_instance, monkeypatch):
    sales_api.orders[DAY] = make_orders(DAY, 321)
    with SmtpServer("none", None, None) as server:
        monkeypatch.setenv("SALES_API_URL", sales_api.url)
        monkeypatch.setenv("SMTP_HOST", "127.0.0.1")
        monkeypatch.setenv("SMTP_PORT", str(server.port))
        monkeypatch.setenv("SMTP_SECURITY", "none")
        server.recorder.reject_next = 1  # the mail server refuses the run's message
        first = execute(daily_sales_job, dagster_instance, run_config=IN_PROCESS, tags={"dagster/partition": DAY})
        assert not first.success and set(first.materialized) == {"raw_sales", "sales_summary_csv"}, first.failures
        assert "could not deliver" in first.failures[0] and server.recorder.rejected == 1

        # Meanwhile the day is fetched again by hand (the feed has changed) and summarised.
        sales_api.orders[DAY] = make_orders(DAY, 57)
        refetched = run_assets(definitions(), dagster_instance, DAY, "raw_sales", "sales_summary_csv")
        assert refetched.success

        again = execute(daily_sales_job, dagster_instance, from_failure(first, dagster_instance))
        assert again.success, again.failures
        assert set(again.materialized) == {"sales_report_email"}  # from failure: only the email step runs again
        [received] = server.recorder.messages
    summary = first.materialized["sales_summary_csv"]
    email = again.materialized["sales_report_email"]
    assert email["input/sales_summary_csv"] == [{"partition": DAY, "run_id": first.run_id, STORAGE_KEY: summary[STORAGE_KEY]}]
    csv = attachment(email_message.message_from_bytes(received.content))[1]
    assert csv == local_file(ecosystem_env, summary[STORAGE_KEY]).read_bytes()
    assert sum(int(line.split(b",")[2]) for line in csv.splitlines()[1:]) == 321  # the run's orders, not the 57 fetched later
