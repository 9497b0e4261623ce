"""One alert per incident: which evaluations open and close an incident, what the check sensor keeps in its
cursor, and when a failed run repeats the failure before it. Plain Python, tested without Dagster.

An incident is one check on one partition (`Evaluation.incident_key`). A failing evaluation opens it
and alerts; failing again keeps it open silently; a pass closes it with a recovery notice. A
monitoring check that judged nothing starts a clock; when the next evaluations are still not judged
after ALERT_NOT_JUDGED_AFTER_HOURS, it alerts once (checked at each new evaluation: the monitoring
runs hourly, and when it stops running its freshness check alerts instead).

Evaluations are read per check from Dagster's check-execution table, whose ids are storage ids but
not in completion order (a row is created when a run plans the check and completed later; under
1.13 a partitioned check's result may get a row of its own). So the cursor keeps, per check, a
watermark below which every row is settled (completed, or its run over) plus the completed ids above
it already handled: each evaluation is handled exactly once, whatever order runs finish in.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import Enum

from ecosystem_assets.alerts.messages import FailedRun, Outcome

LOOKBACK_S = 24 * 3600  # a check first seen by the sensor: evaluations of the last day count, older ones are history
MAX_PENDING = 20  # undelivered alerts kept for the next tick; beyond that the oldest are dropped (and logged)
PENDING_FOR_S = 24 * 3600  # an alert undelivered for a day is dropped (and logged): stale news


class Action(Enum):
    ALERT = "alert"
    ALERT_NOT_JUDGED = "alert not judged"
    RECOVER = "recover"


@dataclass(frozen=True)
class Incident:
    """The state of one check on one partition; all None = nothing open (not stored)."""

    open: str | None = None  # the outcome alerted and not yet recovered: "fail" or "not judged"
    opened_at: float | None = None
    subject: str | None = None  # the opening alert's subject, quoted by the recovery notice
    not_judged_since: float | None = None

    @property
    def empty(self) -> bool:
        return self == Incident()


def advance(incident: Incident, outcome: Outcome, at: float, not_judged_after_s: float) -> tuple[Incident, Action | None]:
    """The incident after an evaluation with ``outcome`` at ``at`` (epoch s), and what to send."""
    if outcome is Outcome.PASS:
        return Incident(), (Action.RECOVER if incident.open else None)
    if outcome is Outcome.FAIL:
        if incident.open == Outcome.FAIL.value:
            return replace(incident, not_judged_since=None), None
        return Incident(open=Outcome.FAIL.value, opened_at=at), Action.ALERT
    since = incident.not_judged_since if incident.not_judged_since is not None else at
    if incident.open is None and at - since >= not_judged_after_s:
        return Incident(open=Outcome.NOT_JUDGED.value, opened_at=at, not_judged_since=since), Action.ALERT_NOT_JUDGED
    return replace(incident, not_judged_since=since), None


@dataclass(frozen=True)
class Row:
    """One row of a check's execution history: its id, whether it holds a result, whether it is settled
    (a result, or a plan whose run is over and will never complete it)."""

    id: int
    completed: bool
    settled: bool


@dataclass(frozen=True)
class Watermark:
    after: int  # every row up to this id is settled and was handled
    handled: tuple[int, ...] = ()  # completed ids above ``after`` already handled


def scan(rows: Iterable[Row], mark: Watermark) -> tuple[list[int], Watermark]:
    """The completed rows above ``mark`` not handled yet (ascending), and the watermark after handling them."""
    ordered = sorted((r for r in rows if r.id > mark.after), key=lambda r: r.id)
    new = [r.id for r in ordered if r.completed and r.id not in mark.handled]
    after = mark.after
    for row in ordered:
        if not row.settled:
            break
        after = row.id
    handled = tuple(sorted(i for i in {*mark.handled, *new} if i > after))
    return new, Watermark(after, handled)


def first_watermark(rows_newest_first: Sequence[tuple[int, float]], since: float) -> int:
    """For a check the sensor has not seen: the newest id created before ``since`` (rows newer than that
    are handled), 0 when every row given is newer."""
    return next((row_id for row_id, created in rows_newest_first if created < since), 0)


@dataclass
class SensorState:
    """The check sensor's cursor (JSON): watermarks per check, open incidents, undelivered alerts."""

    checks: dict[str, Watermark] = field(default_factory=dict)
    incidents: dict[str, Incident] = field(default_factory=dict)
    pending: list[dict[str, object]] = field(default_factory=list)  # {"subject", "body", "since"}

    @classmethod
    def from_json(cls, text: str | None) -> SensorState:
        if not text:
            return cls()
        data = json.loads(text)
        return cls(
            checks={k: Watermark(v["after"], tuple(v.get("handled", ()))) for k, v in data.get("checks", {}).items()},
            incidents={k: Incident(**v) for k, v in data.get("incidents", {}).items()},
            pending=list(data.get("pending", [])),
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "checks": {k: {"after": w.after, "handled": list(w.handled)} for k, w in sorted(self.checks.items())},
                # Closed incidents are dropped: the cursor grows with open incidents only.
                "incidents": {k: asdict(v) for k, v in sorted(self.incidents.items()) if not v.empty},
                "pending": self.pending[-MAX_PENDING:],
            },
            sort_keys=True,
        )


_NOISE = [
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I), "<id>"),
    (re.compile(r"\b[0-9a-f]{8,}\b", re.I), "<hex>"),
    (re.compile(r"\d+(?:\.\d+)?"), "#"),
]


def failure_signature(run: FailedRun) -> str:
    """What makes two failed runs of a job the same failure: the job, the failing steps and their errors with
    run ids, hashes, dates and counts blanked (a backfill of 30 days failing on the same outage is one cause)."""

    def normalise(text: str) -> str:
        for pattern, token in _NOISE:
            text = pattern.sub(token, text)
        return " ".join(text.split())[:500]

    parts = [f"{s.step}: {normalise(s.error)}" for s in run.steps] or [normalise(run.run_error)]
    return run.job + " | " + " | ".join(sorted(parts))
