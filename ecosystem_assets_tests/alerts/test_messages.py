"""What an alert says, without Dagster: subjects, links, the ending (first thing to try, troubleshooting
anchor), which evaluations count, secrets scrubbed; and that every rule names a check of the code location."""

from __future__ import annotations

import dagster as dg

from ecosystem_assets.alerts.messages import (
    PREFIX,
    Alert,
    Evaluation,
    FailedRun,
    FailedStep,
    Outcome,
    alerted_checks,
    anchors,
    check_alert,
    check_link,
    classify,
    recovery_alert,
    run_alert,
)

UI = "http://127.0.0.1:3000"
# The sections docs/troubleshooting.md has (issue 15, point 3); alerts may link to no other.
GUIDE_ANCHORS = {
    *("run-failed", "blocking-check", "sales-gate", "dataset-checks", "accuracy-gate", "precision-low", "precision-not-judged"),
    *("retrain-failed", "champion-refused", "report-late", "sensor-skips", "schedule-not-ticking", "backfill", "pods-pending-gpu"),
    *("oomkilled", "image-pull", "run-pod-evicted", "postgres-connections", "nccl-hang", "loss-divergence", "gate-keeps-refusing"),
    *("drift-vs-label-delay", "precision-falls-no-drift", "service-error-rate", "service-latency", "no-champion", "scrape-down"),
}


def evaluation(check: str = "orders_pass_quality_gate", **changes) -> Evaluation:
    fields = {
        "storage_id": 7,
        "asset_path": ("raw_sales",),
        "check": check,
        "passed": False,
        "severity": "ERROR",
        "blocking": True,
        "description": "raw_sales_orders: 1 of 23 expectations failed on 150 rows",
        "metadata": {"orders": 150, "failed_expectations": "- expect_column_values_to_be_between on 'quantity': 1 rows"},
        "partition": "2026-11-26",
        "run_id": "r-1",
        "timestamp": 1_795_000_000.0,
    }
    return Evaluation(**{**fields, **changes})


def ending(body: str) -> list[str]:
    return body.rstrip().splitlines()[-2:]


def test_every_rule_names_a_check_of_the_code_location_and_links_a_guide_section(ecosystem_env):
    from ecosystem_assets.project import build_definitions
    from ecosystem_assets.settings import Settings

    checks = {key.name for key in build_definitions(Settings.from_env()).resolve_asset_graph().asset_check_keys}
    assert set(alerted_checks()) <= checks, set(alerted_checks()) - checks
    assert anchors() <= GUIDE_ANCHORS, anchors() - GUIDE_ANCHORS


def test_a_blocking_check_that_stopped_data_names_check_asset_partition_and_what_to_try():
    alert = check_alert(evaluation(), Outcome.FAIL, UI)
    assert alert.subject == f"{PREFIX} orders_pass_quality_gate failed on raw_sales 2026-11-26: data stopped"
    assert f"Check in the UI: {UI}/assets/raw_sales?view=checks&checkDetail=orders_pass_quality_gate" in alert.body
    assert f"Run: {UI}/runs/r-1" in alert.body
    assert "expectations failed on 150 rows" in alert.body and "  orders: 150" in alert.body
    assert ending(alert.body)[0].startswith("First thing to try: Read the failed expectations")
    assert "materialize raw_sales for 2026-11-26 again" in ending(alert.body)[0]
    assert ending(alert.body)[1] == "Troubleshooting: docs/troubleshooting.md#sales-gate"


def test_which_evaluations_count():
    assert classify(evaluation()) is Outcome.FAIL
    assert classify(evaluation(passed=True)) is Outcome.PASS
    assert classify(evaluation(check="image_files_decode", severity="WARN")) is Outcome.PASS  # a few bad files block nothing
    assert classify(evaluation(check="feature_drift", blocking=False, severity="WARN")) is None  # the retrain sensor acts on it
    precision = {"check": "live_precision_above_threshold", "blocking": False, "asset_path": ("fraud_monitoring_metrics",)}
    assert classify(evaluation(**precision, metadata={"judged": False}, severity="WARN")) is Outcome.NOT_JUDGED
    assert classify(evaluation(**precision, metadata={"judged": True})) is Outcome.FAIL
    promotion = {"check": "fraud_model_promotion", "blocking": False, "passed": True, "severity": "WARN"}
    assert classify(evaluation(**promotion, metadata={"decision": "kept as challenger"})) is Outcome.FAIL
    assert classify(evaluation(**promotion, metadata={"decision": "promoted"})) is Outcome.PASS
    assert classify(evaluation(check="freshness_check", blocking=False, severity="WARN")) is Outcome.FAIL


def test_subjects_of_the_other_incidents():
    promotion = evaluation(
        check="fraud_model_promotion",
        asset_path=("fraud_model",),
        partition=None,
        metadata={"decision": "kept as challenger", "candidate_version": "4"},
    )
    assert check_alert(promotion, Outcome.FAIL, UI).subject == (
        f"{PREFIX} new champion refused: fraud_model v4 kept as challenger by fraud_model_promotion"
    )
    precision = evaluation(check="live_precision_above_threshold", asset_path=("fraud_monitoring_metrics",), partition=None)
    waited = check_alert(precision, Outcome.NOT_JUDGED, UI, not_judged_for=26 * 3600)
    assert waited.subject == f"{PREFIX} live precision not judged for 26 h: live_precision_above_threshold on fraud_monitoring_metrics"
    assert ending(waited.body)[1].endswith("#precision-not-judged")
    late = evaluation(check="freshness_check", asset_path=("sales_report_email",), partition=None, severity="WARN", blocking=False)
    assert check_alert(late, Outcome.FAIL, UI).subject == f"{PREFIX} sales_report_email late: freshness_check failed"
    assert ending(check_alert(late, Outcome.FAIL, UI).body)[1].endswith("#report-late")


def test_a_recovery_notice_quotes_the_alert_it_closes():
    notice = recovery_alert(evaluation(passed=True), 1_794_990_000.0, "[ecosystem_assets] gate failed", UI)
    assert notice.subject == f"{PREFIX} recovered: orders_pass_quality_gate on raw_sales 2026-11-26 passes again"
    assert "This closes the incident alerted as: [ecosystem_assets] gate failed" in notice.body
    assert ending(notice.body)[1] == "Troubleshooting: docs/troubleshooting.md#sales-gate"


def test_run_alerts_name_job_partition_step_and_error():
    failed = FailedRun(
        "abc",
        "daily_sales_report_job",
        "2026-11-26",
        (FailedStep("raw_sales", "dagster._core.definitions.events.Failure: sales API unavailable\ncaused by ConnectError: refused"),),
        "Execution failed",
        1_795_000_000.0,
    )
    alert = run_alert(failed, UI)
    assert alert.subject == f"{PREFIX} run failed: daily_sales_report_job 2026-11-26 at raw_sales"
    assert f"Run: {UI}/runs/abc" in alert.body and "Failure: sales API unavailable" in alert.body and "dagster._core" not in alert.body
    assert ending(alert.body)[1] == "Troubleshooting: docs/troubleshooting.md#run-failed"
    retrain = run_alert(FailedRun("d", "fraud_retrain_job", None, (FailedStep("fraud_features", "x"),), "", 0.0), UI)
    assert retrain.subject == f"{PREFIX} retrain failed: fraud_retrain_job at fraud_features"
    assert ending(retrain.body)[1] == "Troubleshooting: docs/troubleshooting.md#retrain-failed"


def test_secrets_and_url_credentials_never_leave_in_an_alert():
    leaky = Alert(
        "failed with tok-7f3a-9911\nBcc: x@evil.example",
        "error: Bearer tok-7f3a-9911 at redis://:pw-91c2-redis@cache:6379/0 and https://user:pass@mlflow.example/api",
    )
    clean = leaky.redacted(["tok-7f3a-9911", "redis://:pw-91c2-redis@cache:6379/0", "", "ab"])
    assert "tok-7f3a" not in clean.subject + clean.body and "pw-91c2" not in clean.body and "user:pass" not in clean.body
    assert "\n" not in clean.subject  # no header injection through a description
    assert Alert("ab cd", "").redacted(["ab"]).subject == "ab cd"  # too short to be a secret; blanking it would garble words


def test_check_links_quote_multi_part_asset_keys():
    assert (
        check_link(UI, dg.AssetKey(["team", "my asset"]).path, "a check")
        == f"{UI}/assets/team/my%20asset?view=checks&checkDetail=a%20check"
    )
