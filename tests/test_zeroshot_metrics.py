"""Metrics against scikit-learn, bootstrap intervals around the point estimate."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import f1_score, roc_auc_score

from stitchkit.zeroshot.metrics import auc, evaluate


def test_auc_matches_sklearn_with_ties() -> None:
    rng = np.random.default_rng(0)
    y = rng.random(200) > 0.6
    s = np.round(rng.random(200) + 0.4 * y, 1)  # rounding makes ties
    assert abs(auc(y, s) - roc_auc_score(y, s)) < 1e-12
    assert np.isnan(auc(np.zeros(5, bool), np.arange(5.0)))


def test_evaluate_multiclass_and_multilabel() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 300)
    truth = np.eye(3, dtype=bool)[y]
    prob = np.clip(truth * 0.5 + rng.random((300, 3)), 0, None)
    prob /= prob.sum(axis=1, keepdims=True)
    m = evaluate(truth, prob, ["a", "b", "c"], mode="multiclass", n_boot=200)
    assert abs(m["accuracy"] - (prob.argmax(1) == y).mean()) < 1e-12
    assert abs(m["f1_macro"] - f1_score(y, prob.argmax(1), average="macro")) < 1e-12
    lo, hi = m["ci"]["auc_macro"]
    assert lo <= m["auc_macro"] <= hi and hi - lo < 0.2
    ml = evaluate(truth, prob, ["a", "b", "c"], mode="multilabel", n_boot=0)
    assert abs(ml["accuracy"] - ((prob >= 0.5) == truth).mean()) < 1e-12
    assert "ci" not in ml
