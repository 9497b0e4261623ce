"""What an alert says: a subject that starts with ``[ecosystem_assets]`` and names the job or asset and
what happened; a body with the run's or the check's link in the Dagster UI, the error or the check's
description and a summary of its metadata, and, last, the first thing to try with its section of
docs/troubleshooting.md. Plain Python: the sensors (`sensors.py`) turn Dagster's records into the
`Evaluation` and `FailedRun` values below.

Every alert is scrubbed before it leaves (`Alert.redacted`): the values of the secret variables and
any ``user:password@`` in a URL become ``***``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any
from urllib.parse import quote

PREFIX = "[ecosystem_assets]"
GUIDE = "docs/troubleshooting.md"
# Variables whose values must never appear in an alert (errors are scrubbed where they are raised;
# this is the last line of defence). Read by the sensors through `settings.secret`.
SECRET_VARIABLES = (
    "SMTP_PASSWORD",
    "SALES_API_TOKEN",
    "FRAUD_PREDICT_TOKEN",
    "FRAUD_FEEDBACK_TOKEN",
    "FRAUD_FEATURE_STORE_URL",
    "FRAUD_DB_URL",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
)
RETRAIN_JOB = "fraud_retrain_job"
PRECISION_CHECK = "live_precision_above_threshold"
PROMOTION_CHECK = "fraud_model_promotion"
FRESHNESS_CHECK = "freshness_check"  # the name Dagster's freshness-check builders give
MAX_ERROR_CHARS = 2000
MAX_METADATA_ENTRIES = 15
MAX_VALUE_CHARS = 200


class Outcome(Enum):
    """What one evaluation means for its incident."""

    PASS = "pass"
    FAIL = "fail"
    NOT_JUDGED = "not judged"


@dataclass(frozen=True)
class Evaluation:
    """One check evaluation as the sensor read it; ``metadata`` holds plain values."""

    storage_id: int
    asset_path: tuple[str, ...]
    check: str
    passed: bool
    severity: str  # "ERROR" / "WARN"
    blocking: bool
    description: str
    metadata: Mapping[str, Any]
    partition: str | None
    run_id: str | None
    timestamp: float

    @property
    def asset(self) -> str:
        return "/".join(self.asset_path)

    @property
    def incident_key(self) -> str:
        """One incident per check and partition: a day that fails again is the same incident."""
        return f"{self.asset}:{self.check}" + (f"[{self.partition}]" if self.partition else "")

    @property
    def judged(self) -> bool:
        return self.metadata.get("judged") is not False  # the monitoring checks' "not judged" marker


@dataclass(frozen=True)
class FailedStep:
    step: str
    error: str


@dataclass(frozen=True)
class FailedRun:
    run_id: str
    job: str
    partition: str | None
    steps: tuple[FailedStep, ...]
    run_error: str  # the run failure event's message (the only error when no step failed: a crashed run worker)
    timestamp: float


@dataclass(frozen=True)
class Alert:
    subject: str
    body: str

    def redacted(self, secrets: Iterable[str]) -> Alert:
        values = [s for s in secrets if s and len(s) >= 4]  # shorter strings would blank out ordinary words
        return Alert(_one_line(redact(self.subject, values))[:250], redact(self.body, values))


def redact(text: str, secrets: Iterable[str]) -> str:
    """Each secret value → ``***``; ``scheme://user:password@`` → ``scheme://***@``."""
    from ecosystem_assets.registry import without_credentials

    for value in sorted(secrets, key=len, reverse=True):  # the longest first: one secret may contain another
        text = text.replace(value, "***")
    return without_credentials(text)


@dataclass(frozen=True)
class CheckRule:
    """How an incident of one check is told: the troubleshooting anchor, what happened, what to try first."""

    anchor: str
    what: str
    first_step: str


_BLOCKED = "Downstream assets stay blocked until it passes; the last good data stays the one readers use."
_RULES: dict[str, CheckRule] = {
    "orders_pass_quality_gate": CheckRule(
        "sales-gate",
        "The sales quality gate refused the day's orders: raw_sales was not published, so the summary and the email wait.",
        "Read the failed expectations and offending rows in the check's metadata and the quarantined orders "
        "(quarantine_path); once the source is corrected, materialize raw_sales for {partition} again.",
    ),
    "summary_matches_raw_orders": CheckRule(
        "blocking-check",
        "The published sales summary does not add up to the raw orders it was built from: the email is not sent.",
        "Compare both sides' totals in the check's metadata; re-materialize sales_summary_csv for {partition} "
        "(it rebuilds from the day's raw orders) and look at its run if the totals still differ.",
    ),
    "image_files_decode": CheckRule(
        "dataset-checks",
        "Too many images of the dataset do not decode: training is blocked.",
        "Open undecodable_paths in the check's metadata, fix or remove those files at IMAGE_DATASET_URL, "
        "then materialize image_dataset again.",
    ),
    "classes_in_every_split": CheckRule(
        "dataset-checks",
        "A class has no usable images in train, val or test: training is blocked.",
        "Read which class/split is missing in the check's metadata, add images of that class at IMAGE_DATASET_URL, "
        "then materialize image_dataset again.",
    ),
    "no_train_test_leakage": CheckRule(
        "dataset-checks",
        "Identical image content is in both train and test: training is blocked.",
        "Open leaked_paths in the check's metadata and remove the duplicates at IMAGE_DATASET_URL, then materialize image_dataset again.",
    ),
    "cnn_accuracy_above_threshold": CheckRule(
        "accuracy-gate",
        "The new image classifier's test accuracy is below the threshold: it was not promoted.",
        "Compare test_accuracy with threshold in the check's metadata, then read cnn_model's training history "
        "(why it stopped, the best epoch) and the dataset version it trained on before training again.",
    ),
    "features_quality_gate": CheckRule(
        "blocking-check",
        "The fraud training table failed its quality gate: the model is not retrained on it.",
        "Read the failed expectations in the check's metadata (nulls, fraud rate outside the band, duplicate ids), "
        "fix the transactions of those days, then launch fraud_retrain_job again.",
    ),
    PRECISION_CHECK: CheckRule(
        "precision-low",
        "Live precision of the serving fraud model is below FRAUD_PRECISION_THRESHOLD.",
        "Check that fraud_retrain_sensor requested fraud_retrain_job (its ticks say why when it skips) and how that "
        "retrain went; feature_drift and the label delay tell whether retraining can help.",
    ),
    PROMOTION_CHECK: CheckRule(
        "champion-refused",
        "The newly trained fraud model was refused by the promotion check and kept as a challenger; the old champion keeps serving.",
        "Compare the candidate's and the champion's metrics on the same holdout in the check's metadata; if the gate "
        "keeps refusing, look at the training days and their labels before retraining.",
    ),
}
_NOT_JUDGED = CheckRule(
    "precision-not-judged",
    "Live precision of the serving fraud model has not been judged for {duration}: too few labelled predictions, or no serving model.",
    "Check that the service logs predictions and gets labels back: the latest fraud_prediction_log observation "
    "(rows, labelled) and the service's /healthz; the check's description says what was missing.",
)
_FRESHNESS: dict[str, CheckRule] = {
    "sales_report_email": CheckRule(
        "report-late",
        "The daily sales report was not sent by its 09:30 deadline in REPORT_TIMEZONE.",
        "Find the latest run of daily_sales_report_job: failed (its error), queued or never started (is "
        "daily_sales_report_schedule running, is the daemon up?); the check's description names the missing day.",
    ),
    "fraud_monitoring_metrics": CheckRule(
        "schedule-not-ticking",
        "The fraud monitoring has not run for over two hours: nobody watches the live model.",
        "Check that fraud_monitoring_schedule is running and has recent ticks, that the daemon is up, and the latest "
        "fraud_monitoring_job runs.",
    ),
}
_GENERIC_BLOCKING = CheckRule(
    "blocking-check",
    "A blocking check failed: the data it judged is stopped.",
    "Read the check's description and metadata for what failed, fix the upstream data, then materialize {asset} again. " + _BLOCKED,
)


def classify(evaluation: Evaluation) -> Outcome | None:
    """The evaluation's outcome for its incident; None for checks that never alert (e.g. feature_drift,
    which retrains on its own; non-blocking checks not named here). A blocking check that fails only with
    WARN (a few undecodable images) stops nothing, so it counts as a pass."""
    if evaluation.check == PRECISION_CHECK:
        if not evaluation.judged:
            return Outcome.NOT_JUDGED
        return Outcome.PASS if evaluation.passed else Outcome.FAIL
    if evaluation.check == PROMOTION_CHECK:
        # The check passes either way; the decision is in its metadata ("promoted" / "kept as challenger").
        refused = str(evaluation.metadata.get("decision", "")).startswith("kept")
        return Outcome.FAIL if refused else Outcome.PASS
    if evaluation.check == FRESHNESS_CHECK:
        return Outcome.PASS if evaluation.passed else Outcome.FAIL
    if evaluation.blocking or evaluation.check in _RULES:
        stopped = not evaluation.passed and evaluation.severity == "ERROR"
        return Outcome.FAIL if stopped else Outcome.PASS
    return None


def alerted_checks() -> tuple[str, ...]:
    """The checks with a rule of their own (tests compare them with the code location's checks)."""
    return (*_RULES, FRESHNESS_CHECK)


def anchors() -> set[str]:
    """Every docs/troubleshooting.md section an alert links to."""
    rules = [*_RULES.values(), *_FRESHNESS.values(), _NOT_JUDGED, _GENERIC_BLOCKING]
    return {rule.anchor for rule in rules} | {"run-failed", "retrain-failed"}


def _rule(evaluation: Evaluation, outcome: Outcome) -> CheckRule:
    if outcome is Outcome.NOT_JUDGED:
        return _NOT_JUDGED
    if evaluation.check == FRESHNESS_CHECK:
        return _FRESHNESS.get(
            evaluation.asset,
            CheckRule("schedule-not-ticking", f"{evaluation.asset} is overdue.", "Find why it was not materialized in time."),
        )
    return _RULES.get(evaluation.check, _GENERIC_BLOCKING)


def check_link(ui_url: str, asset_path: Sequence[str], check: str) -> str:
    """The check's tab on the asset's page (the route of dagster-webserver's assetDetailsPathForAssetCheck)."""
    return f"{ui_url}/assets/{'/'.join(quote(p, safe='') for p in asset_path)}?view=checks&checkDetail={quote(check, safe='')}"


def run_link(ui_url: str, run_id: str) -> str:
    return f"{ui_url}/runs/{run_id}"


def when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(seconds: float) -> str:
    """``90000`` → "25 h", ``1800`` → "30 min", ``0`` → "0 min"."""
    return f"{seconds / 3600:.3g} h" if seconds >= 3600 else f"{seconds / 60:.3g} min"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _short(value: Any, width: int = MAX_VALUE_CHARS) -> str:
    try:
        text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    except (TypeError, ValueError, RuntimeError):  # e.g. records that refuse to be iterated
        text = repr(value)
    text = _one_line(text)
    return text if len(text) <= width else text[: width - 1] + "…"


def metadata_summary(metadata: Mapping[str, Any]) -> list[str]:
    """``key: value`` lines, each value on one line and cut at 200 characters; at most 15 entries."""
    lines = [f"  {key}: {_short(value)}" for key, value in list(metadata.items())[:MAX_METADATA_ENTRIES]]
    if len(metadata) > MAX_METADATA_ENTRIES:
        lines.append(f"  … and {len(metadata) - MAX_METADATA_ENTRIES} more in the UI")
    return lines or ["  (none)"]


def _error(text: str) -> str:
    text = text.strip()
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS] + "… (cut; the whole error is in the run)"


def _ending(first_step: str, anchor: str) -> list[str]:
    return ["", f"First thing to try: {first_step}", f"Troubleshooting: {GUIDE}#{anchor}", ""]


def _where(evaluation: Evaluation) -> str:
    return evaluation.asset + (f" {evaluation.partition}" if evaluation.partition else "")


def _check_lines(evaluation: Evaluation, ui_url: str) -> list[str]:
    lines = [
        f"Check: {evaluation.check} on {evaluation.asset}" + (f", partition {evaluation.partition}" if evaluation.partition else ""),
        f"Severity: {evaluation.severity}{', blocking' if evaluation.blocking else ''}",
        f"Evaluated: {when(evaluation.timestamp)}",
        f"Check in the UI: {check_link(ui_url, evaluation.asset_path, evaluation.check)}",
    ]
    if evaluation.run_id:
        lines.append(f"Run: {run_link(ui_url, evaluation.run_id)}")
    return lines


def check_alert(evaluation: Evaluation, outcome: Outcome, ui_url: str, not_judged_for: float = 0.0) -> Alert:
    """The alert that opens an incident: a failing (or too long unjudged) check."""
    rule = _rule(evaluation, outcome)
    fill = {"partition": evaluation.partition or "the partition", "asset": evaluation.asset, "duration": duration(not_judged_for)}
    if outcome is Outcome.NOT_JUDGED:
        subject = f"live precision not judged for {duration(not_judged_for)}: {evaluation.check} on {evaluation.asset}"
    elif evaluation.check == PRECISION_CHECK:
        subject = f"live precision below threshold: {evaluation.check} failed on {evaluation.asset}"
    elif evaluation.check == PROMOTION_CHECK:
        version = evaluation.metadata.get("candidate_version", "?")
        subject = f"new champion refused: {evaluation.asset} v{version} kept as challenger by {evaluation.check}"
    elif evaluation.check == FRESHNESS_CHECK:
        subject = f"{evaluation.asset} late: {evaluation.check} failed"
    else:
        subject = f"{evaluation.check} failed on {_where(evaluation)}: data stopped"
    body = [
        rule.what.format(**fill),
        "",
        *_check_lines(evaluation, ui_url),
        "",
        "What the check says:",
        f"  {_error(evaluation.description) or '(no description)'}",
        "",
        "Metadata:",
        *metadata_summary(evaluation.metadata),
        "",
        "One alert per incident: further evaluations that fail the same way are not alerted until the check "
        "passes again, which sends a recovery notice.",
        *_ending(rule.first_step.format(**fill), rule.anchor),
    ]
    return Alert(f"{PREFIX} {subject}", "\n".join(body))


def recovery_alert(evaluation: Evaluation, opened_at: float | None, opened_subject: str | None, ui_url: str) -> Alert:
    """The notice that closes an incident: the check passes again."""
    rule = _rule(evaluation, Outcome.PASS)
    since = f" since {when(opened_at)}" if opened_at else ""
    body = [
        f"{evaluation.check} on {_where(evaluation)} passes again{', after failing' + since if since else ''}.",
        "",
        *_check_lines(evaluation, ui_url),
        "",
        "What the check says:",
        f"  {_error(evaluation.description) or '(no description)'}",
        "",
        "Metadata:",
        *metadata_summary(evaluation.metadata),
        "",
        f"This closes the incident alerted as: {opened_subject or '(unknown)'}",
        *_ending("nothing is needed; check that the assets downstream of it have caught up.", rule.anchor),
    ]
    return Alert(f"{PREFIX} recovered: {evaluation.check} on {_where(evaluation)} passes again", "\n".join(body))


def _short_error(message: str) -> str:
    """``dagster._core.definitions.events.Failure: text`` → ``Failure: text`` (the module path helps nobody)."""
    return re.sub(r"^(?:[A-Za-z_][\w]*\.)+([A-Za-z_]\w*: )", r"\1", message.strip())


def run_alert(run: FailedRun, ui_url: str) -> Alert:
    """The alert for a failed run: the failing steps and their errors."""
    retrain = run.job == RETRAIN_JOB
    steps = ", ".join(s.step for s in run.steps) or "no step (the run itself failed)"
    where = run.job + (f" {run.partition}" if run.partition else "")
    subject = f"{'retrain' if retrain else 'run'} failed: {where} at {steps}"
    errors = [line for step in run.steps for line in (f"Step {step.step}:", f"  {_error(_short_error(step.error))}", "")]
    if not run.steps:
        errors = [f"  {_error(_short_error(run.run_error)) or '(no error recorded)'}", ""]
    if retrain:
        what = "A retrain of the fraud model failed: the champion is unchanged and keeps serving."
        first = (
            "Read the failing step's error above (missing fraud_transactions days to backfill, a registry outage, a "
            "failed quality gate); fix its cause, then launch fraud_retrain_job again: the retrain sensor does not "
            "relaunch a failed retrain until a newer transaction day lands."
        )
        anchor = "retrain-failed"
    else:
        what = f"A run of {run.job} failed."
        first = (
            "Read the failing step's error above and in the run's logs, fix its cause, then re-execute the run from "
            "failure (the run's page: Re-execute, From failure)."
        )
        anchor = "run-failed"
    body = [
        what,
        "",
        f"Job: {run.job}" + (f", partition {run.partition}" if run.partition else ""),
        f"Failed: {when(run.timestamp)}",
        f"Run: {run_link(ui_url, run.run_id)}",
        f"Failing step: {steps}",
        "",
        "Error:",
        *errors,
        "Further runs of this job that fail the same way are not alerted until one succeeds.",
        *_ending(first, anchor),
    ]
    return Alert(f"{PREFIX} {subject}", "\n".join(body))
