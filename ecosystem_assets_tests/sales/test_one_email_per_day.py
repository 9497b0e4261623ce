"""Exactly one email per day: the sent-record (sales/delivery.py) on a local folder and on S3, three
daily runs of one day at once in three processes, a run that died while sending, and `resend`."""

from __future__ import annotations

import json
import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from functools import cached_property
from typing import Any

import dagster as dg
import pytest

from ecosystem_assets import retries
from ecosystem_assets.resources.storage import ArtifactStorage
from ecosystem_assets.sales import delivery
from ecosystem_assets.storage import Store, open_store
from ecosystem_assets_tests.sales.orders_data import make_orders
from ecosystem_assets_tests.sales.pipeline import (
    RESEND,
    attachment,
    definitions,
    failure_message,
    local_file,
    materialization,
    outbox,
    parse_eml,
    run_assets,
    run_daily,
)

DAY = "2026-11-26"
WAIT_S = 120


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> Store:
    if request.param == "local":
        return open_store(str(tmp_path / "store"))
    return open_store(f"s3://{request.getfixturevalue('s3_bucket')}/prefix")


def test_create_bytes_writes_only_when_absent(store):
    assert store.create_bytes("sales/sent/a.json", b"first")
    assert not store.create_bytes("sales/sent/a.json", b"second")
    assert store.read_bytes("sales/sent/a.json") == b"first"
    assert list(store.list_keys()) == ["sales/sent/a.json"]  # no temp file left either way
    store.delete("sales/sent/a.json")
    assert not store.exists("sales/sent/a.json") and store.create_bytes("sales/sent/a.json", b"third")


def test_of_eight_claims_at_once_exactly_one_sends(store):
    """Eight runs claim the day at the same instant; the claimer records the send while the others
    wait, and they then see the claimer's record."""
    start = threading.Barrier(8, timeout=WAIT_S)
    fast = retries.polling(WAIT_S, 0.01)

    def run(number: int) -> delivery.Claim:
        start.wait()
        claim = delivery.claim(store, DAY, f"run-{number}", resend=False, run_has_ended=lambda run_id: False, policy=fast)
        if claim.mine is not None:
            delivery.record_sent(store, claim.mine, f"<m{number}@x>", "2026-11-27T09:00:01+00:00", "outbox")
        return claim

    with ThreadPoolExecutor(8) as pool:
        claims = list(pool.map(run, range(8)))
    [winner] = [c.mine for c in claims if c.mine is not None]
    assert {c.previous.run_id for c in claims if c.mine is None} == {winner.run_id}  # type: ignore[union-attr]
    assert {c.previous.message_id for c in claims if c.mine is None} == {f"<m{winner.run_id[4:]}@x>"}  # type: ignore[union-attr]
    record = json.loads(store.read_bytes(delivery.record_key(DAY)))
    assert (record["status"], record["run_id"]) == ("sent", winner.run_id)


def test_a_failed_send_releases_the_day_and_another_run_claims_it(store):
    claim = delivery.claim(store, DAY, "run-a", resend=False, run_has_ended=lambda run_id: False)
    assert claim.mine is not None
    delivery.release(store, DAY, "run-b")  # not run-b's claim: it stays
    assert store.exists(delivery.record_key(DAY))
    delivery.release(store, DAY, "run-a")
    assert delivery.claim(store, DAY, "run-b", resend=False, run_has_ended=lambda run_id: False).mine is not None


def test_a_claim_whose_run_ended_is_left_to_a_person(store):
    delivery.claim(store, DAY, "run-dead", resend=False, run_has_ended=lambda run_id: False)
    with pytest.raises(delivery.DeliveryRecordError, match=r"run run-dead claimed .* may or may not have gone out.*resend: true"):
        delivery.claim(store, DAY, "run-new", resend=False, run_has_ended=lambda run_id: run_id == "run-dead")


def test_a_claim_that_never_finishes_stops_the_waiting_run(store):
    delivery.claim(store, DAY, "run-slow", resend=False, run_has_ended=lambda run_id: False)
    with pytest.raises(delivery.DeliveryRecordError, match=r"run run-slow is sending the email .* has not finished after 3 looks"):
        delivery.claim(store, DAY, "run-new", resend=False, run_has_ended=lambda run_id: False, policy=retries.polling(0.02, 0.01))


@pytest.mark.parametrize(
    "garbage", [b"", b"\xff\xfe", b"[1, 2]", b'{"status": "sent"}', b'{"status": "sent", "day": 1, "run_id": "r", "claimed_at": "t"}']
)
def test_a_record_that_is_not_one_fails_with_its_key_and_what_to_do(store, garbage):
    store.write_bytes(delivery.record_key(DAY), garbage)
    with pytest.raises(delivery.DeliveryRecordError, match=r"sales/sent/2026-11-26\.json is not a sent-record .*resend: true"):
        delivery.claim(store, DAY, "run-a", resend=False, run_has_ended=lambda run_id: True)
    assert delivery.claim(store, DAY, "run-a", resend=True, run_has_ended=lambda run_id: True).mine is not None  # resend overwrites it


# --- through Dagster ---------------------------------------------------------------------------


class SimultaneousClaims(ArtifactStorage):
    """Artifact storage whose first sent-record creation waits until every run is about to create it."""

    @cached_property
    def store(self) -> Store:
        inner, barrier = open_store(self.url), _BARRIER

        class AtOnce:
            def __getattr__(self, name: str) -> Any:
                return getattr(inner, name)

            waited = False

            def create_bytes(self, key: str, data: bytes) -> bool:
                if not self.waited:  # the first attempt only: a run that lost polls on its own
                    self.waited = True
                    barrier.wait()
                return inner.create_bytes(key, data)

        return AtOnce()  # type: ignore[return-value]


_BARRIER: Any = None  # the test's barrier, in each child process (a resource's config cannot hold it)


def _run_daily_in_process(instance_ref: Any, storage_url: str, barrier: Any) -> tuple[str, bool, str, dict[str, Any]]:
    global _BARRIER
    _BARRIER = barrier
    result = run_daily(definitions(storage=SimultaneousClaims(url=storage_url)), dg.DagsterInstance.from_ref(instance_ref), DAY)
    metadata = materialization(result, "sales_report_email") if result.success else {}
    return result.run_id, result.success, failure_message(result), metadata


def test_three_runs_of_a_day_at_once_send_one_email(sales_api, ecosystem_env, dagster_instance, monkeypatch):
    monkeypatch.setenv("SALES_API_URL", sales_api.url)
    sales_api.orders[DAY] = make_orders(DAY, 200)
    spawn = multiprocessing.get_context("spawn")  # not fork: the test process runs server threads
    with spawn.Manager() as manager, ProcessPoolExecutor(3, mp_context=spawn) as pool:
        barrier = manager.Barrier(3, timeout=WAIT_S)
        storage_url = str(local_file(ecosystem_env, ""))
        futures = [pool.submit(_run_daily_in_process, dagster_instance.get_ref(), storage_url, barrier) for _ in range(3)]
        runs = [f.result(timeout=3 * WAIT_S) for f in futures]

    assert all(ok for _, ok, _, _ in runs), [failure for _, _, failure, _ in runs]
    [(sender, _, _, sent)] = [run for run in runs if run[3]["sent"]]
    others = [meta for _, _, _, meta in runs if not meta["sent"]]
    assert [meta["sent_by_run"] for meta in others] == [sender, sender]
    assert {meta["message_id"] for meta in others} == {sent["message_id"]}
    [eml] = outbox(ecosystem_env)
    assert parse_eml(eml)["Message-ID"] == sent["message_id"]


def test_resend_is_explicit_and_says_so(sales_api, ecosystem_env, dagster_instance, monkeypatch):
    monkeypatch.setenv("SALES_API_URL", sales_api.url)
    sales_api.orders[DAY] = make_orders(DAY, 40)
    first = run_daily(definitions(), dagster_instance, DAY)
    assert first.success, failure_message(first)
    first_id = materialization(first, "sales_report_email")["message_id"]

    again = run_assets(definitions(), dagster_instance, DAY, "sales_report_email")
    assert again.success, failure_message(again)
    meta = materialization(again, "sales_report_email")
    assert (meta["sent"], meta["sent_by_run"], meta["message_id"]) == (False, first.run_id, first_id)
    assert len(outbox(ecosystem_env)) == 1

    resent = run_assets(definitions(), dagster_instance, DAY, "sales_report_email", run_config=RESEND)
    assert resent.success, failure_message(resent)
    meta = materialization(resent, "sales_report_email")
    assert (meta["sent"], meta["resend"], meta["resent_message_id"]) == (True, True, first_id)
    assert meta["message_id"] != first_id
    first_eml, second_eml = (parse_eml(path) for path in outbox(ecosystem_env))
    assert attachment(first_eml) == attachment(second_eml)  # the same published summary


def test_a_run_that_died_while_sending_stops_the_next_until_a_resend(sales_api, ecosystem_env, dagster_instance, monkeypatch):
    monkeypatch.setenv("SALES_API_URL", sales_api.url)
    sales_api.orders[DAY] = make_orders(DAY, 40)
    published = run_assets(definitions(), dagster_instance, DAY, "raw_sales", "sales_summary_csv")
    assert published.success, failure_message(published)
    # The claim a run leaves when it is killed between claiming and recording the send: that run has ended.
    dead = delivery.SendRecord(DAY, published.run_id, "sending", "2026-11-27T09:00:00+00:00")
    open_store(str(local_file(ecosystem_env, ""))).write_bytes(delivery.record_key(DAY), dead.to_bytes())

    stopped = run_assets(definitions(), dagster_instance, DAY, "sales_report_email")
    assert not stopped.success
    message = failure_message(stopped)
    assert f"run {published.run_id} claimed the email for {DAY}" in message and "resend: true" in message
    assert outbox(ecosystem_env) == []

    resent = run_assets(definitions(), dagster_instance, DAY, "sales_report_email", run_config=RESEND)
    assert resent.success, failure_message(resent)
    assert materialization(resent, "sales_report_email")["resend"] is True and len(outbox(ecosystem_env)) == 1
