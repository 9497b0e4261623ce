"""Each run reads the files its own lineage points to: two runs of the same day at once, on one real
Dagster instance, never read each other's orders or summary; a run that materializes only a
downstream asset reads the latest upstream materialization.

The two runs run in two processes, as Dagster's run launchers start them (in two threads of one
process they deadlock in Dagster's per-run logging setup: `logging.config.dictConfig`); a
multiprocessing manager's Event and Barrier order their writes.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import dagster as dg
import pytest

from ecosystem_assets.lineage import STORAGE_KEY
from ecosystem_assets.resources.sales_api import SalesApiResource
from ecosystem_assets.resources.storage import ArtifactStorage
from ecosystem_assets.storage import Store, open_store
from ecosystem_assets_tests.sales.orders_data import expected_rows, make_orders
from ecosystem_assets_tests.sales.pipeline import (
    RESEND,
    attachment,
    definitions,
    failure_message,
    local_file,
    materialization,
    materialized,
    outbox,
    parse_eml,
    run_assets,
    run_daily,
    storage_key,
)
from ecosystem_assets_tests.servers.sales_api import FakeSalesApi

DAY = "2026-11-26"
WAIT_S = 120  # a run that dies before its turn breaks the other's wait instead of hanging the test


class Interleave:
    """Orders two runs' writes: under each prefix, run "first" writes, then run "second", and neither
    goes on until both have written. Every read therefore happens after both writes: had the runs
    shared a key (a fixed per-day file, as before), the first run would read the second run's data."""

    def __init__(self, manager: Any, *prefixes: str | tuple[str, ...]) -> None:  # a tuple: one group of prefixes
        self.prefixes = prefixes
        self.first_written = {p: manager.Event() for p in prefixes}
        self.both_written = {p: manager.Barrier(2, timeout=WAIT_S) for p in prefixes}

    def store(self, inner: Store, role: str) -> Store:
        interleave = self

        class Ordered:
            def __getattr__(self, name: str) -> Any:
                return getattr(inner, name)

            def write_bytes(self, key: str, data: bytes) -> str:
                prefix = next((p for p in interleave.prefixes if key.startswith(p)), None)
                if prefix is None:
                    return inner.write_bytes(key, data)
                if role == "second":
                    assert interleave.first_written[prefix].wait(WAIT_S), f"the first run never wrote {prefix}"
                uri = inner.write_bytes(key, data)
                if role == "first":
                    interleave.first_written[prefix].set()
                interleave.both_written[prefix].wait()
                return uri

        return Ordered()  # type: ignore[return-value]

    def storage(self, url: str, role: str) -> ArtifactStorage:
        interleave = self

        class OrderedStorage(ArtifactStorage):
            @cached_property
            def store(self) -> Store:
                return interleave.store(open_store(self.url), role)

        return OrderedStorage(url=url)


@dataclass
class Outcome:
    """What a run in another process did, read back by the test."""

    run_id: str
    success: bool
    failure: str
    metadata: dict[str, dict[str, Any]]  # asset → its materialization's metadata values
    checks: list[tuple[bool, dict[str, Any]]]  # (passed, metadata values) per evaluation of the quality gate
    reconciled: list[bool]  # per evaluation of summary_matches_raw_orders

    def key(self, asset: str) -> str:
        return self.metadata[asset][STORAGE_KEY]


def run_in_process(instance_ref: Any, api_url: str, storage_url: str, role: str, interleave: Interleave) -> Outcome:
    """One daily run in this (spawned) process, against the test's instance."""
    instance = dg.DagsterInstance.from_ref(instance_ref)
    defs = definitions(sales_api=SalesApiResource(base_url=api_url), storage=interleave.storage(storage_url, role))
    result = run_daily(defs, instance, DAY)
    metadata = {
        e.asset_key.to_user_string(): {k: v.value for k, v in e.materialization.metadata.items()}
        for e in result.get_asset_materialization_events()
    }
    evaluations = result.get_asset_check_evaluations()
    checks = [(c.passed, {k: v.value for k, v in c.metadata.items()}) for c in evaluations if c.check_name == "orders_pass_quality_gate"]
    reconciled = [c.passed for c in evaluations if c.check_name == "summary_matches_raw_orders"]
    return Outcome(result.run_id, result.success, failure_message(result), metadata, checks, reconciled)


def run_both_at_once(instance: dg.DagsterInstance, first_url: str, second_url: str, storage_url: str, *prefixes: str | tuple[str, ...]):
    spawn = multiprocessing.get_context("spawn")  # not fork: the test process runs server threads
    with spawn.Manager() as manager, ProcessPoolExecutor(2, mp_context=spawn) as pool:
        interleave = Interleave(manager, *prefixes)
        first = pool.submit(run_in_process, instance.get_ref(), first_url, storage_url, "first", interleave)
        second = pool.submit(run_in_process, instance.get_ref(), second_url, storage_url, "second", interleave)
        return first.result(timeout=3 * WAIT_S), second.result(timeout=3 * WAIT_S)


@pytest.fixture
def second_api() -> Iterator[FakeSalesApi]:
    api = FakeSalesApi(page_size=100).start()
    yield api
    api.stop()


def csv_rows(env, key: str) -> list[list[str]]:
    return [line.split(",") for line in local_file(env, key).read_text().splitlines()[1:]]


def test_two_runs_of_a_day_at_once_each_gate_and_summarise_their_own_orders(sales_api, second_api, ecosystem_env, dagster_instance):
    """The second run's feed breaks the gate; its quarantine copy is written after the first run's raw file
    and before the first run's summary reads raw_sales. The first run must still summarise its own clean orders."""
    good = sales_api.orders[DAY] = make_orders(DAY, 321)
    bad = second_api.orders[DAY] = make_orders(DAY, 150)
    bad[17]["quantity"] = 0

    ok, refused = run_both_at_once(
        dagster_instance, sales_api.url, second_api.url, str(local_file(ecosystem_env, "")), ("sales/raw/", "sales/quarantine/")
    )

    assert ok.success, ok.failure
    [(passed, check)] = ok.checks
    assert passed and check["rows"] == 321
    assert csv_rows(ecosystem_env, ok.key("sales_summary_csv")) == expected_rows(good)
    summary = ok.metadata["sales_summary_csv"]
    assert summary["orders"] == 321 and summary["input/raw_sales"][0]["run_id"] == ok.run_id

    assert not refused.success and refused.metadata == {}  # the refused orders are never published
    [(passed, check)] = refused.checks
    assert not passed and check["rows"] == 150 and bad[17]["order_id"] in check["offending_rows"]
    # The good raw file under its run's key; the refused orders in quarantine under theirs.
    assert ok.key("raw_sales") == f"sales/raw/{ok.run_id}/{DAY}.parquet"
    assert check["quarantine_key"] == f"sales/quarantine/{DAY}/{refused.run_id}.parquet"
    assert local_file(ecosystem_env, check["quarantine_key"]).exists() and local_file(ecosystem_env, ok.key("raw_sales")).exists()


def test_two_clean_runs_at_once_each_summarise_their_own_orders_and_one_emails(sales_api, second_api, ecosystem_env, dagster_instance):
    """Both feeds pass; raw files and summaries are each written first-run-then-second-run before
    either run reads them. Each summary is built from its own run's files; the day's one email
    attaches the summary of the run that sent it, and the other run names that run."""
    sales_api.orders[DAY] = make_orders(DAY, 321)
    second_api.orders[DAY] = make_orders(DAY, 57)

    runs = run_both_at_once(
        dagster_instance, sales_api.url, second_api.url, str(local_file(ecosystem_env, "")), "sales/raw/", "sales/summary/"
    )

    for run, api in zip(runs, (sales_api, second_api), strict=True):
        assert run.success, run.failure
        [(passed, check)] = run.checks
        assert passed and check["rows"] == len(api.orders[DAY]) and run.reconciled == [True]  # each CSV adds up to its own orders
        assert csv_rows(ecosystem_env, run.key("sales_summary_csv")) == expected_rows(api.orders[DAY])
    [sender] = [run for run in runs if run.metadata["sales_report_email"]["sent"]]
    [other] = [run for run in runs if run is not sender]
    email = sender.metadata["sales_report_email"]
    assert email["input/sales_summary_csv"][0]["run_id"] == sender.run_id
    attached = attachment(sent(ecosystem_env, email["message_id"]))[1]
    assert attached == local_file(ecosystem_env, sender.key("sales_summary_csv")).read_bytes()
    assert other.metadata["sales_report_email"]["sent_by_run"] == sender.run_id
    assert len(outbox(ecosystem_env)) == 1


def test_downstream_alone_reads_the_latest_upstream(sales_api, ecosystem_env, dagster_instance, monkeypatch):
    monkeypatch.setenv("SALES_API_URL", sales_api.url)
    sales_api.orders[DAY] = make_orders(DAY, 321)
    full = run_daily(definitions(), dagster_instance, DAY)
    assert full.success, failure_message(full)

    newer = sales_api.orders[DAY] = make_orders(DAY, 88)
    raw_only = run_assets(definitions(), dagster_instance, DAY, "raw_sales")
    assert raw_only.success and materialized(raw_only) == {"raw_sales"}

    summary_only = run_assets(definitions(), dagster_instance, DAY, "sales_summary_csv")
    assert summary_only.success, failure_message(summary_only)
    read = materialization(summary_only, "sales_summary_csv")["input/raw_sales"][0]
    assert read["run_id"] == raw_only.run_id and read["storage_key"] == storage_key(raw_only, "raw_sales")
    assert csv_rows(ecosystem_env, storage_key(summary_only, "sales_summary_csv")) == expected_rows(newer)
    # The first run's files are untouched: its summary still has its own 321 orders.
    assert sum(int(r[2]) for r in csv_rows(ecosystem_env, storage_key(full, "sales_summary_csv"))) == 321

    email_only = run_assets(definitions(), dagster_instance, DAY, "sales_report_email", run_config=RESEND)
    assert email_only.success, failure_message(email_only)
    email = materialization(email_only, "sales_report_email")
    assert email["input/sales_summary_csv"][0]["run_id"] == summary_only.run_id
    attached = attachment(sent(ecosystem_env, email["message_id"]))[1]
    assert attached == local_file(ecosystem_env, storage_key(summary_only, "sales_summary_csv")).read_bytes()


def sent(env, message_id: str):
    """The outbox message with ``message_id``."""
    [message] = [m for m in map(parse_eml, outbox(env)) if m["Message-ID"] == message_id]
    return message
