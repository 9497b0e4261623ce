"""Train → log to MLflow → register → promote only if at least as good as the champion.

Both models are scored on the same holdout: the most recent labelled days of the feature table,
which neither fitting nor threshold choice has seen. The champion is re-scored there with its own
threshold (a version tag), never compared by a number recorded on other data.

Models are logged as skops and the champion is read back only through
`model_store.load_fraud_estimator` (never unpickled): a champion that cannot be loaded safely is
not a model to beat, so the new one is promoted over it, and the reason says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ecosystem_assets.fraud import model
from ecosystem_assets.fraud.features import FEATURES
from ecosystem_assets.fraud.model_store import SKOPS, TRUSTED_TYPES, ModelRefused, load_fraud_estimator
from ecosystem_assets.registry import PROMOTED_AT, get_champion, register_version, set_champion

MODEL_NAME = model.MODEL_NAME
REFERENCE_ROWS = 20_000
# What loading the logged model needs. Listed, not inferred: MLflow's inference loads the model in
# a subprocess to see what it imports, ~12 s of every training, and its answer depends on the host.
MODEL_REQUIREMENTS = ("scikit-learn", "skops", "numpy")


def pip_requirements() -> list[str]:
    """MODEL_REQUIREMENTS pinned to the versions that trained the model."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in MODEL_REQUIREMENTS]


@dataclass(frozen=True)
class Promotion:
    version: str
    promoted: bool
    reason: str
    new: model.Score
    champion_before: str | None
    champion_score: model.Score | None
    run_id: str
    model_uri: str
    holdout_start: str
    holdout_end: str


def decide(new: model.Score, champion: model.Score | None, champion_version: str | None, refused: str | None = None) -> tuple[bool, str]:
    if refused is not None:
        return True, f"the champion v{champion_version} cannot be loaded safely ({refused})"
    if champion is None:
        return True, "no champion yet"
    verdict = (
        f"new: precision {new.precision:.3f}, recall {new.recall:.3f}; champion v{champion_version}: "
        f"precision {champion.precision:.3f}, recall {champion.recall:.3f} (target precision {new.target_precision:.2f}, same holdout)"
    )
    if new.key() >= champion.key():
        return True, f"at least as good as the champion — {verdict}"
    return False, f"worse than the champion — {verdict}"


def champion_score(client: Any, holdout: Any, target_precision: float) -> tuple[str | None, model.Score | None, str | None]:
    """(champion version, its score on ``holdout``, why it was refused) — (None, None, None) without one."""
    current = get_champion(client, MODEL_NAME)
    if current is None:
        return None, None, None
    version = str(current.version)
    try:
        estimator = load_fraud_estimator(client, version)
        threshold = float(current.tags["threshold"])
    except ModelRefused as exc:
        return version, None, exc.reason
    except (KeyError, ValueError):
        return version, None, "no numeric threshold tag"
    return version, model.score_estimator(estimator, threshold, holdout, target_precision), None


def train_and_promote(
    table: Any,
    mlf: Any,
    client: Any,
    *,
    calibration_days: int,
    holdout_days: int,
    target_precision: float,
    seed: int,
    params: dict[str, Any],
    extra_params: dict[str, Any],
    keep_reference: Callable[[str, Any], None] | None = None,
) -> tuple[Promotion, Any]:
    """``mlf`` is the mlflow API with this training's run active. Returns the outcome and a
    reference sample of the training features (for drift monitoring).

    ``keep_reference(version, sample)`` stores that sample for the registered version before any
    promotion: a champion without its reference could never be judged for drift (every monitoring
    run would say "no training reference"), so drift would never retrain it. When it raises, the
    exception propagates and the version stays a registered, unpromoted model (alias unchanged)."""
    import mlflow.sklearn
    from mlflow.models import infer_signature

    trained, holdout = model.train(table, calibration_days, holdout_days, target_precision, seed, **params)
    new = trained.score(holdout)
    run_id = mlf.active_run().info.run_id
    mlf.log_params(
        {
            **trained.params,
            **extra_params,
            "calibration_days": calibration_days,
            "holdout_days": holdout_days,
            "target_precision": target_precision,
            "seed": seed,
            "train_rows": trained.train_rows,
            "train_frauds": trained.train_frauds,
        }
    )
    mlf.log_metrics(
        {
            "precision": new.precision,
            "recall": new.recall,
            "average_precision": new.average_precision,
            "threshold": trained.threshold,
            "holdout_rows": new.labelled,
        }
    )
    example = holdout[FEATURES].head(5)
    logged = mlflow.sklearn.log_model(
        trained.estimator,
        name="model",
        signature=infer_signature(example, trained.estimator.predict_proba(example.to_numpy())),
        input_example=example,
        serialization_format=SKOPS,  # never a pickle: loading one runs code (model_store.py)
        skops_trusted_types=TRUSTED_TYPES,  # for MLflow's own check at save; loaders use their own list
        pyfunc_predict_fn="predict_proba",
        pip_requirements=pip_requirements(),
    )
    holdout_start, holdout_end = (str(holdout["timestamp"].min().date()), str(holdout["timestamp"].max().date()))
    tags = {
        "threshold": repr(trained.threshold),
        "precision": f"{new.precision:.6f}",
        "recall": f"{new.recall:.6f}",
        "target_precision": str(target_precision),
        "holdout": f"{holdout_start}..{holdout_end}",
    }
    version = str(
        register_version(
            client, MODEL_NAME, logged.model_uri, run_id, tags, "Card fraud classifier trained by the fraud_model asset."
        ).version
    )
    reference = table.sample(min(REFERENCE_ROWS, len(table)), random_state=seed)[FEATURES]
    if keep_reference is not None:
        keep_reference(version, reference)  # before the alias can move (see the docstring)
    before, before_score, refused = champion_score(client, holdout, target_precision)
    if before == version:
        promoted, reason = False, f"version {version} is already the champion"
    else:
        promoted, reason = decide(new, before_score, before, refused)
    if promoted:
        from datetime import UTC, datetime

        set_champion(client, MODEL_NAME, version)
        # Durable, unlike the alias: the service falls back to the newest version carrying it when
        # the alias's version is refused and a replica has nothing to serve. `promotion` cannot
        # say it: it holds a reason whether promoted or not.
        client.set_model_version_tag(MODEL_NAME, version, PROMOTED_AT, datetime.now(UTC).isoformat(timespec="seconds"))
    client.set_model_version_tag(MODEL_NAME, version, "promotion", reason)
    outcome = Promotion(version, promoted, reason, new, before, before_score, run_id, logged.model_uri, holdout_start, holdout_end)
    return outcome, reference
