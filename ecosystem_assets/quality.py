"""Run a Great Expectations suite on a DataFrame and turn the outcome into an `AssetCheckResult`.

Great Expectations reports a metric that raised (a missing column, a type it cannot compare) as
``success=False`` with ``exception_info`` rather than raising; we surface that message, so a failed
gate always says *why*. Great Expectations is imported inside the functions (it takes seconds).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import dagster as dg

if TYPE_CHECKING:
    import pandas as pd

SAMPLE_ROWS = 5


@dataclass
class ExpectationFailure:
    expectation: str
    column: str | None
    unexpected_count: int | None
    observed: Any
    error: str | None
    sample_rows: list[int] = field(default_factory=list)

    def describe(self) -> str:
        target = f" on {self.column!r}" if self.column else ""
        if self.error:
            return f"{self.expectation}{target}: {self.error}"
        if self.unexpected_count:
            return f"{self.expectation}{target}: {self.unexpected_count} rows"
        return f"{self.expectation}{target}: observed {self.observed!r}"


@dataclass
class QualityReport:
    suite: str
    rows: int
    evaluated: int
    failures: list[ExpectationFailure]
    offending: pd.DataFrame

    @property
    def success(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        if self.success:
            return f"{self.suite}: all {self.evaluated} expectations passed on {self.rows} rows"
        return f"{self.suite}: {len(self.failures)} of {self.evaluated} expectations failed on {self.rows} rows: " + "; ".join(
            f.describe() for f in self.failures
        )

    def metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "suite": self.suite,
            "rows": dg.MetadataValue.int(self.rows),
            "expectations_evaluated": dg.MetadataValue.int(self.evaluated),
            "expectations_failed": dg.MetadataValue.int(len(self.failures)),
        }
        if self.failures:
            meta["failed_expectations"] = dg.MetadataValue.md("\n".join(f"- {f.describe()}" for f in self.failures))
        if not self.offending.empty:
            meta["offending_rows"] = dg.MetadataValue.md(self.offending.to_markdown())
        return meta

    def check_result(self, **kwargs: Any) -> dg.AssetCheckResult:
        return dg.AssetCheckResult(
            passed=self.success,
            severity=dg.AssetCheckSeverity.ERROR,
            description=self.summary(),
            metadata=self.metadata(),
            **kwargs,
        )


def _first_error(exception_info: Any) -> str | None:
    """The first raised exception's message; exception_info is flat or keyed by metric id."""
    if not exception_info:
        return None
    candidates = [exception_info] if "raised_exception" in exception_info else list(exception_info.values())
    for info in candidates:
        if isinstance(info, dict) and info.get("raised_exception"):
            return str(info.get("exception_message") or "metric raised")
    return None


def validate_frame(frame: pd.DataFrame, suite_name: str, expectations: Sequence[Any]) -> QualityReport:
    """Validate ``frame`` against ``expectations`` (Great Expectations 1.x expectation objects)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    batch_definition = (
        context.data_sources.add_pandas("in_memory").add_dataframe_asset(suite_name).add_batch_definition_whole_dataframe("all")
    )
    suite = gx.ExpectationSuite(name=suite_name)
    for expectation in expectations:
        suite.add_expectation(expectation)
    # GE assumes a default RangeIndex for unexpected_index_list; make it so.
    frame = frame.reset_index(drop=True)
    result = batch_definition.get_batch(batch_parameters={"dataframe": frame}).validate(
        suite, result_format={"result_format": "COMPLETE", "partial_unexpected_count": SAMPLE_ROWS}
    )
    failures: list[ExpectationFailure] = []
    offending_index: list[int] = []
    for outcome in result.results:
        if outcome.success:
            continue
        details = outcome.result or {}
        config = outcome.expectation_config  # always set on a validation result; typed optional by GE
        index = [int(i) for i in (details.get("unexpected_index_list") or [])[:SAMPLE_ROWS] if isinstance(i, (int,))]
        offending_index.extend(index)
        failures.append(
            ExpectationFailure(
                expectation=config.type if config else "unknown expectation",
                column=config.kwargs.get("column") if config else None,
                unexpected_count=details.get("unexpected_count"),
                observed=details.get("observed_value"),
                error=_first_error(outcome.exception_info),
                sample_rows=index,
            )
        )
    offending = frame.loc[sorted(set(offending_index))] if offending_index else frame.iloc[0:0]
    return QualityReport(suite_name, len(frame), len(result.results), failures, offending)
