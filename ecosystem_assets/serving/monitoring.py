"""The /monitoring body, shared by the service and by in-process monitoring (no FRAUD_SERVICE_URL)."""

from __future__ import annotations

from typing import Any

from ecosystem_assets.serving.store import PredictionStore


def monitoring_summary(store: PredictionStore, model_version: str | None, window_hours: float) -> dict[str, Any]:
    """Precision/recall of ``model_version`` (the serving model) over the last ``window_hours`` of
    traffic, plus the same over all versions: right after a swap the window still holds the old
    model's predictions, which say nothing about the new one."""
    overall = store.window_metrics(window_hours)
    serving = store.window_metrics(window_hours, model_version=model_version) if model_version else overall
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
