"""The /monitoring body, shared by the service and by in-process monitoring (no FRAUD_SERVICE_URL).

The window ends at the evaluation time (a schedule's tick, a replayed day's end, or now), never at
the newest stored transaction: one far-future row or a few of today's requests during a replay of
past days would otherwise become the window and the verdicts would judge them instead.
"""

from __future__ import annotations

import math
import time
from datetime import datetime
from typing import Any

from ecosystem_assets.serving.store import PredictionStore

EARLIEST_END = 946_684_800.0  # 2000-01-01T00:00:00Z: the input rules' floor for transaction times
LATEST_END_AHEAD_S = 86_400.0  # an evaluation time may run a day ahead of this machine's clock, no more


def parse_end(text: str) -> float:
    """Epoch seconds from an ISO-8601 time with an offset (``2026-09-18T00:00:00+00:00``) or from
    epoch seconds (``1789689600``), between 2000-01-01 and a day after now. A time without an
    offset is refused: whose midnight would it be?"""
    try:
        seconds = float(text)
    except ValueError:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"end={text[:64]!r} is neither ISO-8601 with an offset nor epoch seconds") from None
        if moment.tzinfo is None:
            raise ValueError(f"end={text[:64]!r} has no UTC offset (write e.g. {text[:32]}+00:00)") from None
        try:
            seconds = moment.timestamp()
        except (OverflowError, ValueError):
            raise ValueError(f"end={text[:64]!r} is out of range") from None
    if not (math.isfinite(seconds) and EARLIEST_END <= seconds <= time.time() + LATEST_END_AHEAD_S):
        raise ValueError(f"end={text[:64]!r} is not a time between 2000-01-01 and a day from now")
    return seconds


def monitoring_summary(store: PredictionStore, model_version: str | None, window_hours: float, end: float | None = None) -> dict[str, Any]:
    """Precision/recall of ``model_version`` (the serving model) over the ``window_hours`` of traffic
    before ``end`` (epoch seconds; default now), plus the same over all versions: right after a swap
    the window still holds the old model's predictions, which say nothing about the new one."""
    end = time.time() if end is None else end
    overall, serving = store.window_summary(window_hours, end, model_version)  # serving = overall without a version
    return {
        "window_hours": window_hours,
        "model_version": model_version,
        "precision": serving.precision,
        "recall": serving.recall,
        "labelled": serving.labelled,
        "predictions": serving.predictions,
        "flagged_labelled": serving.flagged_labelled,
        "window_start": overall.window_start,
        "window_end": overall.window_end,
        "all_versions": {
            "precision": overall.precision,
            "recall": overall.recall,
            "labelled": overall.labelled,
            "predictions": overall.predictions,
        },
    }
