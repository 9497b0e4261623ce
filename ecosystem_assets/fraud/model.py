"""Training, threshold choice and scoring of the fraud classifier (plain Python; no Dagster).

Time-based split, oldest to newest: *train* (fit), *calibration* (the decision threshold: the
lowest that reaches the target precision, i.e. the most recall at that precision) and *holdout*,
the most recent labelled days, which no fitting or threshold choice has seen. Models — a new one
and the champion — are compared on the holdout by `Score`: meeting the precision target first,
then recall.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from ecosystem_assets.fraud.features import FEATURES

MODEL_NAME = "fraud-detector"


@dataclass(frozen=True)
class Score:
    precision: float
    recall: float
    average_precision: float
    threshold: float
    target_precision: float
    labelled: int
    flagged: int

    @property
    def meets_target(self) -> bool:
        return self.precision >= self.target_precision

    def key(self) -> tuple[bool, float, float]:
        """Higher is better: meeting the precision target, then recall, then precision."""
        return (self.meets_target, self.recall if self.meets_target else self.precision, self.average_precision)


def score(probabilities: Any, labels: Any, threshold: float, target_precision: float) -> Score:
    import numpy as np
    from sklearn.metrics import average_precision_score

    labels = np.asarray(labels).astype(int)
    flagged = np.asarray(probabilities) >= threshold
    tp = int((flagged & (labels == 1)).sum())
    precision = tp / int(flagged.sum()) if flagged.any() else 0.0
    recall = tp / int(labels.sum()) if labels.any() else 0.0
    ap = float(average_precision_score(labels, probabilities)) if labels.any() and not labels.all() else 0.0
    return Score(precision, recall, ap, float(threshold), target_precision, len(labels), int(flagged.sum()))


def choose_threshold(probabilities: Any, labels: Any, target_precision: float) -> float:
    """Lowest threshold with precision ≥ target (most recall); else the most precise one."""
    import numpy as np
    from sklearn.metrics import precision_recall_curve

    precision, _, thresholds = precision_recall_curve(np.asarray(labels).astype(int), probabilities)
    ok = np.flatnonzero(precision[:-1] >= target_precision)
    if len(ok):
        return float(thresholds[ok[0]])
    return float(thresholds[int(np.argmax(precision[:-1]))]) if len(thresholds) else 0.5


@dataclass
class TrainedModel:
    estimator: Any
    threshold: float
    target_precision: float
    train_rows: int
    train_frauds: int
    params: dict[str, Any]

    def score(self, table: Any) -> Score:
        """Precision/recall at this model's threshold on a labelled feature table."""
        return score_estimator(self.estimator, self.threshold, table, self.target_precision)


def score_estimator(estimator: Any, threshold: float, table: Any, target_precision: float) -> Score:
    return score(estimator.predict_proba(table[FEATURES].to_numpy())[:, 1], table["is_fraud"], threshold, target_precision)


def split_by_time(table: Any, calibration_days: int, holdout_days: int) -> Any:
    """(train, calibration, holdout) by calendar day of ``timestamp``, newest days last."""
    last = table["timestamp"].max().normalize()
    holdout_start = last - timedelta(days=holdout_days - 1)
    calibration_start = holdout_start - timedelta(days=calibration_days)
    ts = table["timestamp"]
    return table[ts < calibration_start], table[(ts >= calibration_start) & (ts < holdout_start)], table[ts >= holdout_start]


def _require_both_classes(**parts: Any) -> None:
    for name, part in parts.items():
        if part["is_fraud"].nunique() < 2:
            raise ValueError(
                f"the {name} split has {int(part['is_fraud'].sum())} frauds in {len(part)} rows; "
                "it needs frauds and non-frauds (more days, or a larger population)"
            )


def train(
    table: Any, calibration_days: int = 2, holdout_days: int = 2, target_precision: float = 0.9, seed: int = 0, **params: Any
) -> tuple[TrainedModel, Any]:
    """Fit a gradient-boosted classifier, choose its threshold; returns the model and the holdout part."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    fit_part, calibration, holdout = split_by_time(table, calibration_days, holdout_days)
    _require_both_classes(train=fit_part, calibration=calibration, holdout=holdout)
    settings = {"max_iter": 200, "learning_rate": 0.1, "max_leaf_nodes": 31, "l2_regularization": 1.0}
    settings.update(params)
    estimator = HistGradientBoostingClassifier(random_state=seed, **settings)
    estimator.fit(fit_part[FEATURES].to_numpy(), fit_part["is_fraud"].to_numpy())
    threshold = choose_threshold(estimator.predict_proba(calibration[FEATURES].to_numpy())[:, 1], calibration["is_fraud"], target_precision)
    trained = TrainedModel(estimator, threshold, target_precision, len(fit_part), int(fit_part["is_fraud"].sum()), settings)
    return trained, holdout
