"""Storing and loading the fraud model without ever running code from the registry.

Whoever can write to the MLflow registry decides what a version's files contain, *including its
MLmodel file*. A pickle (MLflow's "pickle"/"cloudpickle" formats) runs arbitrary code when it is
loaded, and `mlflow.sklearn.load_model` trusts whatever `serialization_format` and
`skops_trusted_types` the MLmodel file names. So nothing here unpickles, and nothing read from a
version's files decides what may be built from them.

The format is skops (`skops.io`, MLflow 3's default for scikit-learn): a zip of JSON describing
the object tree plus numpy arrays in .npy form, read back with `allow_pickle=False`. Before a file
is loaded, skops lists every type it would construct; anything outside skops's own safe set (the
scikit-learn estimators, numpy and scipy containers) and `TRUSTED_TYPES` below, which lives in
this code and never in the artifact, is refused by name. We chose skops over saving the compiled
tree arrays (serving/fast_trees.py) with `np.load(allow_pickle=False)` because it stores the
estimator itself: training's champion comparison needs `predict_proba`, and the service keeps
checking its compiled scorer against sklearn's at load time, so one stored form serves both, and
the format and its safety audit are maintained upstream rather than by us.

Trusting `TreePredictor` has one cost that skops itself warns about: scikit-learn's compiled
predict follows the node indices in its `nodes` array without bounds checks, so a crafted file
could crash the process or read out of bounds. So the loaded object must be exactly a
HistGradientBoostingClassifier over our features, and every tree is checked before anything
scores with it (`check_trees`): the nodes have sklearn's record dtype, every split's children come
after it and inside the array (so every walk ends at a leaf), every split's feature exists, and
nothing is categorical (the fraud features are all numeric; categorical splits index further
arrays and would need the same care).

A version that is not stored as skops, holds an unexpected type, is not a readable skops file, is
not such a well-formed classifier or does not score the fixed probe rows (one finite probability
in [0, 1] per row) is refused with `ModelRefused`, whose message names the version and the reason.

The same writer decides how many files a version has and how large they are, and the service
downloads them to a small scratch volume (on Kubernetes an emptyDir whose overflow evicts the
pod). So a version's files are listed first and only the two the loader reads (MLmodel, then
model.skops) are downloaded, each after its listed size passed the limit. Files that cannot be
listed or downloaded raise `ModelFilesUnavailable`: the version cannot be judged now (a missing
location, a storage error), which is neither a bad model nor a registry outage.
"""

from __future__ import annotations

import posixpath
import re
import tempfile
from pathlib import Path
from typing import Any

from ecosystem_assets.fraud.features import FEATURES
from ecosystem_assets.fraud.model import MODEL_NAME

# The one type a fitted HistGradientBoostingClassifier needs beyond skops's default safe set (its
# trees). A plain data holder: attributes and a structured numpy array of nodes, no code on load.
TRUSTED_TYPES: list[str] = ["sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"]
SKOPS = "skops"
_SKOPS_FILE = "model.skops"  # where mlflow.sklearn puts a skops model inside its directory
_MLMODEL_FILE = "MLmodel"
_MAX_REASON = 300
# A fitted fraud model is a few MB; far larger is an attack on the service's memory (and on the
# scratch disk it is downloaded to), not a model. The cap covers both downloaded files together.
MAX_MODEL_BYTES = 256 * 1024 * 1024
# MLmodel is a YAML file of about a kilobyte; it is parsed whole, so a large one is refused unread.
MAX_MLMODEL_BYTES = 1024 * 1024

# Deterministic rows in the feature space (FEATURES order), from an ordinary daytime purchase to
# an empty history, a burst at a risky terminal at night and extreme values. A champion must give
# each one finite probability in [0, 1] before it serves.
_PROBE_ROWS: list[dict[str, float]] = [
    {
        "amount": 42.5,
        "customer_nb_tx_1d": 2,
        "customer_mean_amount_1d": 40.0,
        "customer_nb_tx_7d": 9,
        "customer_mean_amount_7d": 47.3,
        "customer_nb_tx_30d": 35,
        "customer_mean_amount_30d": 51.2,
        "terminal_nb_tx_7d": 18,
        "terminal_risk_7d": 0.0,
        "terminal_nb_tx_30d": 80,
        "terminal_risk_30d": 0.0125,
        "is_night": 0,
        "is_weekend": 0,
    },
    {
        "amount": 0.0,
        "customer_nb_tx_1d": 1,
        "customer_mean_amount_1d": 0.0,
        "customer_nb_tx_7d": 1,
        "customer_mean_amount_7d": 0.0,
        "customer_nb_tx_30d": 1,
        "customer_mean_amount_30d": 0.0,
        "terminal_nb_tx_7d": 0,
        "terminal_risk_7d": 0.0,
        "terminal_nb_tx_30d": 0,
        "terminal_risk_30d": 0.0,
        "is_night": 0,
        "is_weekend": 1,
    },
    {
        "amount": 980.0,
        "customer_nb_tx_1d": 7,
        "customer_mean_amount_1d": 610.0,
        "customer_nb_tx_7d": 12,
        "customer_mean_amount_7d": 390.0,
        "customer_nb_tx_30d": 40,
        "customer_mean_amount_30d": 120.0,
        "terminal_nb_tx_7d": 25,
        "terminal_risk_7d": 0.6,
        "terminal_nb_tx_30d": 90,
        "terminal_risk_30d": 0.4,
        "is_night": 1,
        "is_weekend": 0,
    },
    {
        "amount": 12.99,
        "customer_nb_tx_1d": 1,
        "customer_mean_amount_1d": 12.99,
        "customer_nb_tx_7d": 3,
        "customer_mean_amount_7d": 20.0,
        "customer_nb_tx_30d": 14,
        "customer_mean_amount_30d": 25.0,
        "terminal_nb_tx_7d": 3,
        "terminal_risk_7d": 1.0,
        "terminal_nb_tx_30d": 10,
        "terminal_risk_30d": 0.3,
        "is_night": 1,
        "is_weekend": 1,
    },
    {
        "amount": 250_000.0,
        "customer_nb_tx_1d": 60,
        "customer_mean_amount_1d": 9_000.0,
        "customer_nb_tx_7d": 300,
        "customer_mean_amount_7d": 5_000.0,
        "customer_nb_tx_30d": 900,
        "customer_mean_amount_30d": 2_000.0,
        "terminal_nb_tx_7d": 5_000,
        "terminal_risk_7d": 0.05,
        "terminal_nb_tx_30d": 20_000,
        "terminal_risk_30d": 0.02,
        "is_night": 0,
        "is_weekend": 0,
    },
    {
        "amount": 75.0,
        "customer_nb_tx_1d": 3,
        "customer_mean_amount_1d": 60.0,
        "customer_nb_tx_7d": 10,
        "customer_mean_amount_7d": 55.0,
        "customer_nb_tx_30d": 30,
        "customer_mean_amount_30d": 58.0,
        "terminal_nb_tx_7d": 40,
        "terminal_risk_7d": 0.1,
        "terminal_nb_tx_30d": 150,
        "terminal_risk_30d": 0.08,
        "is_night": 0,
        "is_weekend": 1,
    },
]


class ModelRefused(ValueError):
    """A registry version that must not serve; ``reason`` is short and safe to show (no secrets)."""

    def __init__(self, version: str, reason: str):
        self.version, self.reason = str(version), reason[:_MAX_REASON]
        super().__init__(f"{MODEL_NAME} version {self.version} refused: {self.reason}")


class ModelFilesUnavailable(RuntimeError):
    """A version's files could not be listed or downloaded: it cannot be judged now, and may be
    once the storage answers (the service retries with a back-off). Not a `ModelRefused`, so
    training never promotes over a champion it merely failed to fetch. ``reason`` names the
    failure without storage locations or credentials (it is shown on the open /healthz);
    ``detail`` is the error's own text without credentials, for the log."""

    def __init__(self, version: str, reason: str, detail: str = ""):
        self.version, self.reason, self.detail = str(version), reason[:_MAX_REASON], detail
        super().__init__(f"{MODEL_NAME} version {self.version}: {self.reason}")


# A URI (`s3://bucket/key`, `mlflow-artifacts:/…`, `file:///…`), a quoted absolute path (it may
# hold spaces) or an unquoted one.
_LOCATION = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*:/[^\s'\"<>()\[\]]*|(?<=['\"])/[^'\"\n]*(?=['\"])|(?<![\w.:/~-])/[^\s'\"<>()\[\]]+")


def without_locations(text: str) -> str:
    """Storage locations (URIs, absolute paths) replaced by ``<location>``: texts shown on an open
    endpoint must not tell a caller where the model files live or under which credentials."""
    return _LOCATION.sub("<location>", text)


def _error_name(exc: BaseException) -> str:
    """The error's class (and MLflow's error code), never its message: messages name locations."""
    code = getattr(exc, "error_code", None)
    return f"{type(exc).__name__} {code}" if isinstance(code, str) and code.isidentifier() else type(exc).__name__


def probe_rows() -> Any:
    """The probe set as an (n × len(FEATURES)) float array."""
    import numpy as np

    return np.array([[float(row[name]) for name in FEATURES] for row in _PROBE_ROWS])


def check_on_probe(version: str, score: Any) -> None:
    """Refuse ``score`` (X → P(fraud) per row) unless it gives one finite probability in [0, 1]
    per probe row."""
    import numpy as np

    X = probe_rows()
    try:
        p = np.asarray(score(X), dtype=np.float64)
    except Exception as exc:  # noqa: BLE001 — any failure to score is the model's fault
        raise ModelRefused(version, f"fails to score the probe rows: {type(exc).__name__}: {exc}") from None
    if p.shape != (len(X),):
        raise ModelRefused(version, f"gives shape {p.shape} on {len(X)} probe rows, not one probability per row")
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise ModelRefused(version, f"gives probabilities outside [0, 1] or not finite on the probe rows: {p.tolist()}")


def proba1(estimator: Any) -> Any:
    """X → P(class 1) through ``predict_proba``, which must give two columns."""

    def score(X: Any) -> Any:
        p = estimator.predict_proba(X)
        if getattr(p, "shape", None) != (len(X), 2):
            raise ValueError(f"predict_proba gave shape {getattr(p, 'shape', None)}, expected ({len(X)}, 2)")
        return p[:, 1]

    return score


def check_trees(version: str, estimator: Any) -> None:
    """Refuse anything but a binary HistGradientBoostingClassifier over FEATURES whose trees
    sklearn's unchecked compiled predict can walk safely (see the module docstring)."""
    import numpy as np
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.ensemble._hist_gradient_boosting.common import PREDICTOR_RECORD_DTYPE
    from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor

    if type(estimator) is not HistGradientBoostingClassifier:
        raise ModelRefused(version, f"is a {type(estimator).__name__}, not a HistGradientBoostingClassifier")
    n_features = getattr(estimator, "n_features_in_", None)
    if n_features != len(FEATURES):
        raise ModelRefused(version, f"expects {n_features} features, not the {len(FEATURES)} the service computes")
    if getattr(estimator, "_preprocessor", None) is not None or getattr(estimator, "is_categorical_", None) is not None:
        raise ModelRefused(version, "has categorical features; the fraud features are all numeric")
    predictors = getattr(estimator, "_predictors", None)
    if not isinstance(predictors, list) or not predictors or getattr(estimator, "n_trees_per_iteration_", None) != 1:
        raise ModelRefused(version, "is not a fitted binary classifier")
    for i, iteration in enumerate(predictors):
        if not isinstance(iteration, list) or len(iteration) != 1 or type(iteration[0]) is not TreePredictor:
            raise ModelRefused(version, f"iteration {i} is not one tree")
        nodes = iteration[0].nodes
        if not isinstance(nodes, np.ndarray) or nodes.dtype != PREDICTOR_RECORD_DTYPE or nodes.ndim != 1 or not len(nodes):
            raise ModelRefused(version, f"tree {i} has no node array of sklearn's record type")
        split = nodes["is_leaf"] == 0
        at = np.flatnonzero(split)
        children_ok = (
            (nodes["left"][split] > at)
            & (nodes["left"][split] < len(nodes))
            & (nodes["right"][split] > at)
            & (nodes["right"][split] < len(nodes))
        ).all()
        features_ok = ((nodes["feature_idx"][split] >= 0) & (nodes["feature_idx"][split] < n_features)).all()
        if not (children_ok and features_ok) or nodes["is_categorical"][split].any():
            raise ModelRefused(version, f"tree {i} has split nodes pointing outside the tree or the features")


def _sklearn_flavor(version: str, model_dir: Path) -> dict[str, Any]:
    import yaml

    try:
        conf = yaml.safe_load((model_dir / "MLmodel").read_text())
        flavor = conf["flavors"]["sklearn"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise ModelRefused(version, f"no readable sklearn flavor in its MLmodel file ({type(exc).__name__})") from None
    if not isinstance(flavor, dict):
        raise ModelRefused(version, "no readable sklearn flavor in its MLmodel file")
    return flavor


def _check_size(version: str, path: Path) -> None:
    """Refuse a skops file (a zip) larger than MAX_MODEL_BYTES, packed or unpacked: a zip bomb must
    not exhaust the service's memory. zipfile never reads past an entry's declared size, so the
    declared sizes bound what loading can unpack."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelRefused(version, f"is not a readable skops file ({type(exc).__name__})") from None
    packed = path.stat().st_size
    if max(packed, unpacked) > MAX_MODEL_BYTES:
        raise ModelRefused(version, f"is too large ({packed:,} bytes packed, {unpacked:,} unpacked; the limit is {MAX_MODEL_BYTES:,})")


def load_from_dir(version: str, model_dir: Path) -> Any:
    """The estimator in a downloaded MLflow model directory, or `ModelRefused`."""
    import skops.io

    flavor = _sklearn_flavor(version, model_dir)
    # The MLmodel file is the uploader's word: it only picks the error message. Safety comes from
    # reading our fixed file name with skops and our own list of trusted types.
    found = flavor.get("serialization_format", "pickle")
    if found != SKOPS:
        raise ModelRefused(version, f"stored as {str(found)[:40]!r}, not skops; pickled models are never loaded")
    path = model_dir / _SKOPS_FILE
    if not path.is_file():
        raise ModelRefused(version, f"has no {_SKOPS_FILE} file")
    _check_size(version, path)
    try:
        unexpected = sorted(set(skops.io.get_untrusted_types(file=path)) - set(TRUSTED_TYPES))
    except Exception as exc:  # noqa: BLE001 — not a zip, no schema, unknown protocol…
        raise ModelRefused(version, f"is not a readable skops file ({type(exc).__name__})") from None
    if unexpected:
        raise ModelRefused(version, f"contains types outside the trusted list: {', '.join(unexpected)}")
    try:
        return skops.io.load(path, trusted=TRUSTED_TYPES)
    except Exception as exc:  # noqa: BLE001 — skops audits again while loading; any failure refuses
        raise ModelRefused(version, f"could not be loaded by skops ({type(exc).__name__}: {exc})") from None


def _listed_size(version: str, name: str, info: Any, limit: int) -> int:
    size = getattr(info, "file_size", None)
    if not isinstance(size, int) or size < 0:
        raise ModelRefused(version, f"its artifact store does not report the size of {name}; files of unknown size are not downloaded")
    if size > limit:
        raise ModelRefused(version, f"is too large ({name} is listed at {size:,} bytes; the limit is {limit:,}); nothing was downloaded")
    return size


def fetch_model_files(version: str, source: str, tracking_uri: str, dst: Path) -> None:
    """Download the version's MLmodel and, when it names skops, its model.skops into ``dst``;
    nothing else, and nothing whose listed size is over the limits (module docstring).

    `ModelRefused` when the files are at fault (format, size, a missing model.skops beside an
    MLmodel); `ModelFilesUnavailable` when they cannot be listed or downloaded, or no MLmodel is
    found where the version says its files are."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    from ecosystem_assets.registry import without_credentials

    def unavailable(what: str, exc: Exception) -> ModelFilesUnavailable:
        return ModelFilesUnavailable(version, f"its files could not be {what} ({_error_name(exc)})", without_credentials(f"{exc}")[:500])

    try:
        repo = get_artifact_repository(source, tracking_uri=tracking_uri, registry_uri=tracking_uri)
        # Top-level files only: the two the loader reads sit at the root of an MLflow model directory.
        listing = {posixpath.basename(info.path): info for info in repo.list_artifacts() if not info.is_dir and "/" not in info.path}
    except Exception as exc:  # noqa: BLE001 — storage clients raise their own errors; the class is named
        raise unavailable("listed", exc) from None
    if _MLMODEL_FILE not in listing:
        raise ModelFilesUnavailable(version, f"no {_MLMODEL_FILE} file where its files should be ({len(listing)} files found there)")
    budget = MAX_MODEL_BYTES - _listed_size(version, _MLMODEL_FILE, listing[_MLMODEL_FILE], MAX_MLMODEL_BYTES)

    def download(name: str, limit: int) -> None:
        try:
            repo.download_artifacts(name, dst_path=str(dst))
        except Exception as exc:  # noqa: BLE001 — as for the listing
            raise unavailable("downloaded", exc) from None
        # The listing is the writer's word too: a file swapped for a larger one meanwhile is refused.
        if (dst / name).stat().st_size > limit:
            raise ModelRefused(version, f"is too large ({name} grew past {limit:,} bytes while it was downloaded)")

    download(_MLMODEL_FILE, MAX_MLMODEL_BYTES)
    found = _sklearn_flavor(version, dst).get("serialization_format", "pickle")
    if found != SKOPS:  # refused by name before anything else is fetched
        raise ModelRefused(version, f"stored as {str(found)[:40]!r}, not skops; pickled models are never loaded")
    if _SKOPS_FILE not in listing:
        raise ModelRefused(version, f"has no {_SKOPS_FILE} file")
    download(_SKOPS_FILE, _listed_size(version, _SKOPS_FILE, listing[_SKOPS_FILE], budget))


def load_fraud_estimator(client_or_tracking_uri: Any, version: str) -> Any:
    """Fetch ``fraud-detector`` version ``version`` (`fetch_model_files`) and load it safely (see
    module docstring).

    Raises `ModelRefused` when the version's files are at fault, `ModelFilesUnavailable` when they
    cannot be fetched; registry errors propagate unchanged (worth retrying).
    """
    from mlflow import MlflowClient

    uri = getattr(client_or_tracking_uri, "tracking_uri", client_or_tracking_uri)
    version = str(version)
    # The version's files are located with a client bound to this registry: MLflow resolves a
    # `models:/` URI against the process-wide registry URI, whatever registry_uri it is given.
    source = MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version_download_uri(MODEL_NAME, version)
    with tempfile.TemporaryDirectory(prefix="fraud-model-") as tmp:
        fetch_model_files(version, source, uri, Path(tmp))
        estimator = load_from_dir(version, Path(tmp))
    try:
        check_trees(version, estimator)
    except ModelRefused:
        raise
    except Exception as exc:  # noqa: BLE001 — an object shaped unlike a fitted model is the file's fault
        raise ModelRefused(version, f"is not a well-formed fitted model ({type(exc).__name__}: {exc})") from None
    check_on_probe(version, proba1(estimator))
    return estimator
