"""Classification metrics with bootstrap confidence intervals.

Thresholds, stated once: in multi-class mode the prediction is the class of highest
probability (no threshold); in multi-label mode a finding is called present when its positive
prompt outscores its negative prompt, i.e. probability ≥ 0.5. AUC needs no threshold, which is
why it is the headline figure. Confidence intervals are percentile bootstrap intervals over
samples (default 1,000 resamples, 95 %), seeded.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import rankdata


def auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC (Mann–Whitney, ties counted half); NaN where one class is absent."""
    y = np.asarray(y, dtype=bool)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def f1(y: np.ndarray, pred: np.ndarray) -> float:
    y, pred = np.asarray(y, bool), np.asarray(pred, bool)
    tp = int((y & pred).sum())
    denom = 2 * tp + int((~y & pred).sum()) + int((y & ~pred).sum())
    return float(2 * tp / denom) if denom else float("nan")


def _point(truth: np.ndarray, prob: np.ndarray, mode: str, ranking: np.ndarray | None = None
           ) -> dict[str, Any]:
    """truth: (n, C) bool; prob: (n, C); ``ranking``: a monotone transform of ``prob`` that
    does not saturate (log-odds), used for AUC. Multi-class rows have one True."""
    n_cls = truth.shape[1]
    rank = prob if ranking is None else ranking
    aucs = [auc(truth[:, c], rank[:, c]) for c in range(n_cls)]
    if mode == "multiclass":
        pred_idx = prob.argmax(axis=1)
        pred = np.zeros_like(truth)
        pred[np.arange(len(pred)), pred_idx] = True
        accuracy = float((truth[np.arange(len(truth)), pred_idx]).mean())
    else:
        pred = prob >= 0.5
        accuracy = float((pred == truth).mean())
    f1s = [f1(truth[:, c], pred[:, c]) for c in range(n_cls)]
    with np.errstate(all="ignore"):
        return {
            "auc": aucs,
            "auc_macro": float(np.nanmean(aucs)) if not np.all(np.isnan(aucs)) else float("nan"),
            "accuracy": accuracy,
            "f1": f1s,
            "f1_macro": float(np.nanmean(f1s)) if not np.all(np.isnan(f1s)) else float("nan"),
        }


def evaluate(
    truth: np.ndarray,
    prob: np.ndarray,
    classes: list[str],
    *,
    mode: str,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    ranking: np.ndarray | None = None,
) -> dict[str, Any]:
    """AUC per class and macro, accuracy, F1 per class and macro, each with a bootstrap CI.

    AUC ranks by ``ranking`` where given (log-odds: same order as ``prob`` without
    float saturation), else by ``prob``.
    """
    truth = np.asarray(truth, dtype=bool)
    prob = np.asarray(prob, dtype=np.float64)
    ranking = None if ranking is None else np.asarray(ranking, dtype=np.float64)
    point = _point(truth, prob, mode, ranking)
    out: dict[str, Any] = {
        "n": int(len(truth)),
        "mode": mode,
        "threshold": "argmax over classes" if mode == "multiclass" else "probability ≥ 0.5 (positive prompt beats negative)",
        "positives": {c: int(truth[:, i].sum()) for i, c in enumerate(classes)},
        "auc": dict(zip(classes, point["auc"], strict=True)),
        "auc_macro": point["auc_macro"],
        "accuracy": point["accuracy"],
        "f1": dict(zip(classes, point["f1"], strict=True)),
        "f1_macro": point["f1_macro"],
    }
    if n_boot <= 0 or len(truth) < 2:
        return out
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {"auc_macro": [], "accuracy": [], "f1_macro": []}
    per_class: list[list[float]] = [[] for _ in classes]
    for _ in range(n_boot):
        idx = rng.integers(0, len(truth), len(truth))
        p = _point(truth[idx], prob[idx], mode, None if ranking is None else ranking[idx])
        for key in draws:
            draws[key].append(p[key])
        for c, a in enumerate(p["auc"]):
            per_class[c].append(a)
    lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2

    def ci(values: list[float]) -> list[float] | None:
        v = np.asarray(values, dtype=np.float64)
        v = v[~np.isnan(v)]
        return [float(np.percentile(v, lo)), float(np.percentile(v, hi))] if len(v) else None

    out["ci"] = {
        "level": level,
        "n_boot": n_boot,
        **{key: ci(vals) for key, vals in draws.items()},
        "auc": {c: ci(per_class[i]) for i, c in enumerate(classes)},
    }
    return out
