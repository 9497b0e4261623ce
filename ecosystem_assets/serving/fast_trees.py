"""A scikit-learn HistGradientBoostingClassifier compiled to flat arrays and scored QuickScorer-style.

`predict_proba` walks its ~100–200 trees one Python-level call at a time, so scoring 1 row costs
about as much as scoring 1,000 (~1 ms). The service scores micro-batches of a few rows, so it
compiles the champion once into arrays and scores every tree of every row with about a dozen numpy
operations, whatever the trees' depth (QuickScorer, Lucchese et al., SIGIR 2015): the leaves of
each tree are numbered left to right and each split holds a bitmask of the leaves *not* in its
left subtree. A row ANDs together the masks of every split whose test sends it right; the lowest
bit left set in a tree is the leaf the row reaches (every leaf left of it lies under a split on
its path that went right, and no split clears the row's own leaf).

The compiled form is used only when it reproduces `predict_proba` on a probe set at load time;
anything it does not cover (multiclass, categorical splits, trees over 64 leaves) falls back. It
reads the fitted trees from sklearn's `_predictors` attribute, which is why the probe exists.
"""

from __future__ import annotations

from typing import Any

_MAX_LEAVES = 64  # one uint64 bitmask per tree (uint32 when every tree has ≤ 32 leaves: less to move)


def _tree_masks(nodes: Any) -> tuple[list[int], list[int], list[float]] | None:
    """(split node ids, their masks, leaf values left to right) of one sklearn tree."""
    leaves: list[int] = []
    spans: dict[int, tuple[int, int]] = {}  # node → (first, last + 1) leaf number under it
    stack = [(0, False)]
    while stack:  # iterative in-order walk: depth can reach a few dozen
        node, visited = stack.pop()
        if nodes["is_leaf"][node]:
            spans[node] = (len(leaves), len(leaves) + 1)
            leaves.append(node)
        elif visited:
            spans[node] = (spans[int(nodes["left"][node])][0], spans[int(nodes["right"][node])][1])
        else:
            stack += [(node, True), (int(nodes["right"][node]), False), (int(nodes["left"][node]), False)]
    if len(leaves) > _MAX_LEAVES:
        return None
    splits = [n for n in spans if not nodes["is_leaf"][n]]
    every = (1 << _MAX_LEAVES) - 1
    masks = []
    for node in splits:
        first, end = spans[int(nodes["left"][node])]
        masks.append(every & ~(((1 << (end - first)) - 1) << first))
    return splits, masks, [float(nodes["value"][leaf]) for leaf in leaves]


class CompiledForest:
    def __init__(
        self,
        feature: Any,
        threshold: Any,
        missing_right: Any,
        masks: Any,
        tree_starts: Any,
        leaf_values: Any,
        leaf_offsets: Any,
        baseline: float,
    ) -> None:
        self.feature, self.threshold, self.missing_right, self.masks = feature, threshold, missing_right, masks
        self.tree_starts, self.leaf_values, self.leaf_offsets, self.baseline = tree_starts, leaf_values, leaf_offsets, baseline
        self.all_leaves, self.one = ~masks.dtype.type(0), masks.dtype.type(1)

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
        feature: list[int] = []
        threshold: list[float] = []
        missing_right: list[bool] = []
        masks: list[int] = []
        tree_starts: list[int] = []
        leaf_values: list[float] = []
        leaf_offsets: list[int] = []
        most_leaves = 0
        for nodes in trees:
            compiled = _tree_masks(nodes)
            if compiled is None:
                return None
            splits, tree_masks, values = compiled
            most_leaves = max(most_leaves, len(values))
            tree_starts.append(len(masks))
            leaf_offsets.append(len(leaf_values))
            leaf_values += values
            if not splits:  # a lone leaf: one split that never clears anything keeps reduceat's segments
                feature.append(0)
                threshold.append(np.inf)
                missing_right.append(False)
                masks.append((1 << _MAX_LEAVES) - 1)
                continue
            feature += [int(nodes["feature_idx"][n]) for n in splits]
            threshold += [float(nodes["num_threshold"][n]) for n in splits]
            missing_right += [not nodes["missing_go_to_left"][n] for n in splits]
            masks += tree_masks
        width = np.uint32 if most_leaves <= 32 else np.uint64
        masks = [m & int(np.iinfo(width).max) for m in masks]
        return cls(
            np.asarray(feature, dtype=np.intp),
            np.asarray(threshold),
            np.asarray(missing_right, dtype=bool),
            np.asarray(masks, dtype=width),
            np.asarray(tree_starts, dtype=np.intp),
            np.asarray(leaf_values),
            np.asarray(leaf_offsets, dtype=np.intp),
            baseline,
        )

    def predict_proba1(self, X: Any) -> Any:
        """P(class 1) for each row of X (n × features)."""
        import numpy as np

        X = np.asarray(X, dtype=np.float64)
        x = X.take(self.feature, axis=1)  # rows × splits
        go_right = x > self.threshold  # sklearn: left when x <= threshold
        if np.isnan(X).any():
            go_right = np.where(np.isnan(x), self.missing_right, go_right)
        alive = np.bitwise_and.reduceat(np.where(go_right, self.masks, self.all_leaves), self.tree_starts, axis=1)
        lowest = alive & (~alive + self.one)  # the lowest set bit: the leaf reached
        leaf = np.frexp(lowest.astype(np.float64))[1] - 1  # its bit number (powers of two are exact)
        raw = self.leaf_values[leaf + self.leaf_offsets].sum(axis=1) + self.baseline
        return 1.0 / (1.0 + np.exp(-raw))

    def agrees_with(self, estimator: Any, n_features: int, rows: int = 2_000, seed: int = 0) -> bool:
        """Probe rows straddling every split threshold: the compiled scores must equal sklearn's."""
        import numpy as np

        rng = np.random.default_rng(seed)
        probe = np.empty((rows, n_features))
        for j in range(n_features):
            cuts = self.threshold[(self.feature == j) & np.isfinite(self.threshold)]
            lo, hi = (cuts.min() - 1, cuts.max() + 1) if len(cuts) else (0.0, 1.0)
            probe[:, j] = (
                rng.choice(np.concatenate([cuts, cuts + 1e-9, rng.uniform(lo, hi, 64)]), rows) if len(cuts) else rng.uniform(lo, hi, rows)
            )
        probe[rng.random(probe.shape) < 0.01] = np.nan
        expected = estimator.predict_proba(probe)[:, 1]
        return bool(np.allclose(self.predict_proba1(probe), expected, rtol=0, atol=1e-9))


def fast_scorer(estimator: Any) -> Any:
    """A function X → P(fraud): the compiled forest when it provably matches, else predict_proba."""
    # Hand-written instead of predict_proba for speed: bench/fraud_service.py (p99 < 50 ms at 8 clients).
    compiled = CompiledForest.compile(estimator)
    n_features = getattr(estimator, "n_features_in_", 0)
    if compiled is not None and n_features and compiled.agrees_with(estimator, n_features):
        return compiled.predict_proba1
    return lambda X: estimator.predict_proba(X)[:, 1]
