"""The compiled forest scores exactly like scikit-learn, and steps aside where it cannot."""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression

from ecosystem_assets.serving.fast_trees import CompiledForest, fast_scorer


def fitted(**params):
    rng = np.random.default_rng(3)
    X = rng.gamma(2.0, 20.0, (6_000, 5))
    X[:, 4] = rng.integers(0, 3, 6_000)
    X[rng.random(X.shape) < 0.02] = np.nan  # missing values take their learned side
    y = ((np.nan_to_num(X[:, 0]) > 80) | (X[:, 4] == 2) & (np.nan_to_num(X[:, 1]) > 30)).astype(int)
    return HistGradientBoostingClassifier(random_state=0, **params).fit(X, y), X


def test_compiled_equals_predict_proba_on_real_rows_and_batches_of_any_size():
    model, X = fitted(max_iter=150)
    compiled = CompiledForest.compile(model)
    assert compiled is not None and compiled.agrees_with(model, X.shape[1])
    for rows in (X[:1], X[:7], X[:3_000]):
        np.testing.assert_allclose(compiled.predict_proba1(rows), model.predict_proba(rows)[:, 1], rtol=0, atol=1e-12)
    assert compiled.masks.dtype == np.uint32  # ≤ 31 leaves a tree (the default): 32-bit leaf masks
    score = fast_scorer(model)
    assert isinstance(getattr(score, "__self__", None), CompiledForest)  # the compiled path was chosen


def test_wide_trees_take_64_bit_masks_and_wider_ones_fall_back():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(20_000, 4))
    y = (np.sin(3 * X[:, 0]) + X[:, 1] * X[:, 2] + rng.normal(0, 0.5, len(X)) > 0).astype(int)  # trees grow to their cap
    model = HistGradientBoostingClassifier(max_iter=20, max_leaf_nodes=60, random_state=0).fit(X, y)
    assert max(int(p[0].nodes["is_leaf"].sum()) for p in model._predictors) > 32
    compiled = CompiledForest.compile(model)
    assert compiled is not None and compiled.masks.dtype == np.uint64
    np.testing.assert_allclose(compiled.predict_proba1(X[:3_000]), model.predict_proba(X[:3_000])[:, 1], rtol=0, atol=1e-12)
    wider = HistGradientBoostingClassifier(max_iter=3, max_leaf_nodes=100, random_state=0).fit(X, y)
    assert max(int(p[0].nodes["is_leaf"].sum()) for p in wider._predictors) > 64
    assert CompiledForest.compile(wider) is None


def test_unsupported_models_fall_back_to_predict_proba():
    X = np.random.default_rng(0).random((200, 3))
    y = (X[:, 0] > 0.5).astype(int)
    linear = LogisticRegression().fit(X, y)
    assert CompiledForest.compile(linear) is None
    np.testing.assert_allclose(fast_scorer(linear)(X), linear.predict_proba(X)[:, 1])
    categorical = HistGradientBoostingClassifier(categorical_features=[2], max_iter=20).fit(np.c_[X[:, :2], (X[:, 2] * 4).astype(int)], y)
    assert CompiledForest.compile(categorical) is None
