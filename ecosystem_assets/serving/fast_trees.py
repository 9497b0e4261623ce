"""A scikit-learn HistGradientBoostingClassifier as flat arrays, scored for all trees at once.

`predict_proba` walks its ~100–200 trees one Python-level call at a time, so scoring 1 row costs
about as much as scoring 1,000 (~1–2 ms). The service scores small micro-batches, so it compiles
the champion's trees into arrays once and walks every tree of every row together with a few numpy
operations per depth level. The compiled form is used only when it reproduces `predict_proba` on
a probe set at load time; anything it does not cover (multiclass, categorical splits) falls back.
It reads the fitted trees from sklearn's `_predictors` attribute, which is why the probe exists.
"""

from __future__ import annotations

from typing import Any


class CompiledForest:
    def __init__(self, feature, threshold, missing_left, left, right, value, roots, depth: int, baseline: float):
        self.feature, self.threshold, self.missing_left = feature, threshold, missing_left
        self.left, self.right, self.value, self.roots = left, right, value, roots
        self.depth, self.baseline = depth, baseline

    @classmethod
    def compile(cls, estimator: Any) -> CompiledForest | None:
        import numpy as np
        from sklearn.ensemble import HistGradientBoostingClassifier

        if not isinstance(estimator, HistGradientBoostingClassifier) or getattr(estimator, "n_trees_per_iteration_", 0) != 1:
            return None
        try:
            trees = [iteration[0].nodes for iteration in estimator._predictors]
            baseline = float(np.asarray(estimator._baseline_prediction).ravel()[0])
        except (AttributeError, IndexError, TypeError):
            return None
        if not trees or any(t["is_categorical"].any() for t in trees):
            return None
        offsets = np.cumsum([0] + [len(t) for t in trees[:-1]])
        nodes = np.concatenate(trees)
        index = np.arange(len(nodes))
        shift = np.repeat(offsets, [len(t) for t in trees])
        leaf = nodes["is_leaf"].astype(bool)
        # Leaves point to themselves, so every row can take the same number of steps.
        left = np.where(leaf, index, nodes["left"].astype(np.int64) + shift)
        right = np.where(leaf, index, nodes["right"].astype(np.int64) + shift)
        depth = int(nodes["depth"].max())
        return cls(nodes["feature_idx"].astype(np.int64), nodes["num_threshold"], nodes["missing_go_to_left"].astype(bool),
                   left, right, np.where(leaf, nodes["value"], 0.0), offsets.astype(np.int64), depth, baseline)

    def predict_proba1(self, X) -> Any:
        """P(class 1) for each row of X (n × features)."""
        import numpy as np

        X = np.asarray(X, dtype=np.float64)
        rows = np.arange(len(X))[:, None]
        node = np.broadcast_to(self.roots, (len(X), len(self.roots))).copy()
        for _ in range(self.depth):
            x = X[rows, self.feature[node]]
            go_left = np.where(np.isnan(x), self.missing_left[node], x <= self.threshold[node])
            node = np.where(go_left, self.left[node], self.right[node])
        raw = self.value[node].sum(axis=1) + self.baseline
        return 1.0 / (1.0 + np.exp(-raw))

    def agrees_with(self, estimator: Any, n_features: int, rows: int = 2_000, seed: int = 0) -> bool:
        """Probe rows straddling every split threshold: the compiled scores must equal sklearn's."""
        import numpy as np

        rng = np.random.default_rng(seed)
        probe = np.empty((rows, n_features))
        for j in range(n_features):
            cuts = self.threshold[(self.feature == j) & (self.left != np.arange(len(self.left)))]
            cuts = cuts[np.isfinite(cuts)]
            lo, hi = (cuts.min() - 1, cuts.max() + 1) if len(cuts) else (0.0, 1.0)
            probe[:, j] = rng.choice(np.concatenate([cuts, cuts + 1e-9, rng.uniform(lo, hi, 64)]), rows) if len(cuts) else rng.uniform(lo, hi, rows)
        probe[rng.random(probe.shape) < 0.01] = np.nan
        expected = estimator.predict_proba(probe)[:, 1]
        return bool(np.allclose(self.predict_proba1(probe), expected, rtol=0, atol=1e-9))


def fast_scorer(estimator: Any):
    """A function X → P(fraud): the compiled forest when it provably matches, else predict_proba."""
    compiled = CompiledForest.compile(estimator)
    n_features = getattr(estimator, "n_features_in_", 0)
    if compiled is not None and n_features and compiled.agrees_with(estimator, n_features):
        return compiled.predict_proba1
    return lambda X: estimator.predict_proba(X)[:, 1]
