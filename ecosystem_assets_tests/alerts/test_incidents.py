"""One alert per incident, without Dagster: the incident state machine, the per-check watermark over
Dagster's check-execution rows, the cursor's JSON, and when two failed runs are one cause."""

from __future__ import annotations

from ecosystem_assets.alerts.incidents import (
    Action,
    Incident,
    Row,
    SensorState,
    Watermark,
    advance,
    failure_signature,
    first_watermark,
    scan,
)
from ecosystem_assets.alerts.messages import FailedRun, FailedStep, Outcome

HOUR = 3600.0
PASS, FAIL, NOT_JUDGED = Outcome.PASS, Outcome.FAIL, Outcome.NOT_JUDGED


def actions(outcomes: list[tuple[Outcome, float]], limit_s: float = 24 * HOUR) -> list[Action | None]:
    incident, seen = Incident(), []
    for outcome, at in outcomes:
        incident, action = advance(incident, outcome, at, limit_s)
        seen.append(action)
    return seen


def test_a_failure_alerts_once_and_its_recovery_once():
    assert actions([(PASS, 0), (FAIL, 1), (FAIL, 2), (FAIL, 3), (PASS, 4), (PASS, 5), (FAIL, 6)]) == [
        None,
        Action.ALERT,
        None,
        None,
        Action.RECOVER,
        None,
        Action.ALERT,  # failing again after a pass is a new incident
    ]


def test_not_judged_alerts_once_when_it_lasts_past_the_limit():
    assert actions(
        [(NOT_JUDGED, 0), (NOT_JUDGED, 1 * HOUR), (NOT_JUDGED, 2 * HOUR), (NOT_JUDGED, 3 * HOUR), (PASS, 4 * HOUR)], 2 * HOUR
    ) == [
        None,
        None,
        Action.ALERT_NOT_JUDGED,
        None,
        Action.RECOVER,
    ]
    # A verdict in between restarts the clock: 1.5 h unjudged after it is not 2 h.
    assert actions([(NOT_JUDGED, 0), (PASS, 1 * HOUR), (NOT_JUDGED, 1.5 * HOUR), (NOT_JUDGED, 3 * HOUR)], 2 * HOUR) == [None] * 4
    # A limit of 0 alerts at the first evaluation that judged nothing.
    assert actions([(NOT_JUDGED, 0)], 0) == [Action.ALERT_NOT_JUDGED]


def test_a_real_failure_during_not_judged_alerts_and_one_recovery_closes_it():
    assert actions([(NOT_JUDGED, 0), (NOT_JUDGED, 3 * HOUR), (FAIL, 4 * HOUR), (NOT_JUDGED, 9 * HOUR), (PASS, 10 * HOUR)], 2 * HOUR) == [
        None,
        Action.ALERT_NOT_JUDGED,
        Action.ALERT,  # worse than "not judged": precision is known to be low
        None,  # the failing incident stays open, silently
        Action.RECOVER,
    ]


def test_each_completed_row_is_handled_once_whatever_order_runs_finish_in():
    # Row 1 was planned by a run still going; row 2 completed meanwhile; row 3 is a plan whose run ended.
    new, mark = scan([Row(1, False, False), Row(2, True, True), Row(3, False, True)], Watermark(0))
    assert new == [2] and mark == Watermark(0, (2,))
    assert scan([Row(1, False, False), Row(2, True, True)], mark) == ([], mark)  # nothing new: nothing handled twice
    new, mark = scan([Row(1, True, True), Row(2, True, True), Row(3, False, True), Row(4, True, True)], mark)
    assert new == [1, 4] and mark == Watermark(4)


def test_a_check_first_seen_starts_after_the_rows_older_than_the_lookback():
    assert first_watermark([(9, 500.0), (7, 300.0), (4, 90.0), (2, 50.0)], since=100.0) == 4
    assert first_watermark([(9, 500.0)], since=100.0) == 0


def test_the_cursor_keeps_open_incidents_only():
    state = SensorState(
        checks={"raw_sales:gate": Watermark(5, (7,))},
        incidents={"a:c[2026-11-26]": Incident(open="fail", opened_at=1.0, subject="s"), "a:d": Incident()},
        pending=[{"subject": "x", "body": "y", "since": 2.0}],
    )
    again = SensorState.from_json(state.to_json())
    assert again.checks == state.checks and again.pending == state.pending
    assert again.incidents == {"a:c[2026-11-26]": Incident(open="fail", opened_at=1.0, subject="s")}
    assert SensorState.from_json(None) == SensorState()


def run(run_id: str, job: str, step: str, error: str) -> FailedRun:
    return FailedRun(run_id, job, None, (FailedStep(step, error),), "", 0.0)


def test_runs_failing_on_one_cause_share_a_signature():
    first = run("1b4e28ba-2fa1-11d2-883f-0016d3cca427", "daily", "raw_sales", "sales API unavailable for 2026-11-26 after 5 attempts")
    second = run("6fa459ea-ee8a-3ca4-894e-db77e160355e", "daily", "raw_sales", "sales API unavailable for 2026-11-27 after 5 attempts")
    assert failure_signature(first) == failure_signature(second)
    assert failure_signature(first) != failure_signature(run("x", "daily", "sales_report_email", "sales API unavailable for 2026-11-26"))
    assert failure_signature(first) != failure_signature(run("x", "daily", "raw_sales", "HTTP 401 from the sales API"))
    assert failure_signature(first) != failure_signature(run("x", "other_job", "raw_sales", first.steps[0].error))
