"""Held-out quality of a map: how close mapped source rows land to their true targets.

All metrics are computed on anchors the fit never saw. Retrieval ranks each mapped source row
against every held-out target row by cosine similarity (chance top-1 = 1 / n_heldout).

The probe: a logistic regression (standardised features, C=1) trained on *native target*
embeddings of the fit pool (every non-held-out anchor with a label, at most
``MAX_PROBE_TRAIN``, whatever ``--n-anchors`` is, so that probe quality does not vary with the
anchor count), then applied to the held-out anchors twice: to their native target embeddings
and to their mapped source embeddings. The ratio stitched / native is the figure of merit
(FINDINGS.md); AUC is macro one-vs-rest for more than two classes.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from . import functional as F

MAX_PROBE_TRAIN = 10_000
MAX_EVAL = 10_000


def cosine_rows(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    return (F.l2_normalize(A, dtype=np.float64) * F.l2_normalize(B, dtype=np.float64)).sum(axis=1)


def retrieval(mapped: np.ndarray, target: np.ndarray, *, block: int = 2048) -> dict[str, float]:
    """Top-1, top-5 and MRR of each mapped row's own target among all target rows.

    A copy of a row's own target ties with it and does not count against it. Where most targets
    are copies (9 distinct captions over 200 held-out images) retrieval has turned into choosing
    among a few classes and the figures mean nothing: they are NaN (n/a), with the count of
    distinct targets saying why."""
    n_distinct = len(np.unique(np.asarray(target), axis=0))
    if 2 * n_distinct < len(target):
        return {"top1": float("nan"), "top5": float("nan"), "mrr": float("nan"),
                "retrieval_distinct_targets": int(n_distinct)}
    Q, T = F.l2_normalize(mapped, dtype=np.float64), F.l2_normalize(target, dtype=np.float64)
    ranks = np.empty(len(Q), dtype=np.int64)
    for start in range(0, len(Q), block):
        sims = Q[start : start + block] @ T.T
        own = sims[np.arange(sims.shape[0]), np.arange(start, start + sims.shape[0])]
        ranks[start : start + sims.shape[0]] = (sims > own[:, None]).sum(axis=1) + 1
    return {
        "top1": float((ranks == 1).mean()),
        "top5": float((ranks <= 5).mean()),
        "mrr": float((1.0 / ranks).mean()),
    }


def linear_cka(X: np.ndarray, Y: np.ndarray) -> float:
    """Linear CKA (Kornblith et al. 2019) in its feature-space form, O(n·D²)."""
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    X = X - X.mean(axis=0)
    Y = Y - Y.mean(axis=0)
    xy = np.linalg.norm(X.T @ Y) ** 2
    xx = np.linalg.norm(X.T @ X)
    yy = np.linalg.norm(Y.T @ Y)
    return float(xy / (xx * yy)) if xx > 0 and yy > 0 else 0.0


def warn_worse_than_mean(relative_mse: float, what: str, method: str) -> None:
    """A map whose held-out relative MSE exceeds 1 predicts worse than the targets' own mean:
    say so, and what tends to help (the numbers alone read like any other map's)."""
    if not relative_mse > 1.0:  # NaN (no spread) says nothing
        return
    fixes = ["more anchors", *([] if method == "ridge" else ["--method ridge"]), "a larger --alpha"]
    warnings.warn(f"{what} relative MSE {relative_mse:.3f} > 1: the map predicts the held-out targets worse "
                  f"than their mean; try {', '.join(fixes[:-1])} or {fixes[-1]}", stacklevel=3)


def relative_mse(mapped: np.ndarray, target: np.ndarray) -> float:
    """The median row's squared error over the median row's squared distance to the targets'
    mean: 0 is perfect, 1 no better than predicting the mean for the typical row.

    Medians, not the sums of 1 − R²: a source feature that is (nearly) constant on the anchors
    gets a tiny standard deviation, and the one held-out image where it fires lands far off, so
    that a single row carries the sum. In Lite0 → Xception (500 ridge anchors, 500 held out)
    one image held 98 % of the summed error, which read 49.2 where the median rows give 0.83;
    Lite0 → Lite2 orthogonal read 8.4 at 1,230 anchors against 1.2 at 1,000 while its cosine
    did not move (docs/maps.md)."""
    T = np.asarray(target, np.float64)
    err = np.square(np.asarray(mapped, np.float64) - T).sum(axis=1)
    spread = np.square(T - T.mean(axis=0)).sum(axis=1)
    typical = float(np.median(spread))
    return float(np.median(err)) / typical if typical > 0 else float("nan")


def alignment_metrics(source: np.ndarray, mapped: np.ndarray, target: np.ndarray) -> dict[str, float]:
    cos = cosine_rows(mapped, target)
    out = {
        "n_heldout": int(len(target)),
        "cosine_mean": float(cos.mean()),
        "cosine_median": float(np.median(cos)),
        "relative_mse": relative_mse(mapped, target),
    }
    out.update(retrieval(mapped, target))
    out["cka_source_target"] = linear_cka(source, target)
    out["cka_mapped_target"] = linear_cka(mapped, target)
    return out


class Probe:
    """A logistic-regression probe trained on native target embeddings."""

    def __init__(self, Y: np.ndarray, labels: np.ndarray, *, seed: int = 0) -> None:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self.classes = np.unique(labels)
        self.model = make_pipeline(
            StandardScaler(), LogisticRegression(C=1.0, max_iter=2000, random_state=seed)
        )
        self.model.fit(Y, labels)
        self.n_train = int(len(labels))

    def scores(self, Y: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        from sklearn.metrics import roc_auc_score

        proba = self.model.predict_proba(Y)
        classes = self.model.classes_
        acc = float((classes[proba.argmax(axis=1)] == labels).mean())
        present = np.unique(labels)
        auc = float("nan")
        if len(present) >= 2 and set(present) <= set(classes):
            if len(classes) == 2:
                auc = float(roc_auc_score(labels == classes[1], proba[:, 1]))
            else:
                keep = np.isin(labels, classes)
                auc = float(
                    roc_auc_score(labels[keep], proba[keep], multi_class="ovr", average="macro",
                                  labels=classes)
                ) if len(present) == len(classes) else float("nan")
        return {"accuracy": acc, "auc": auc}


def probe_metrics(
    probe: Probe, mapped: np.ndarray, target: np.ndarray, labels: np.ndarray
) -> dict[str, Any]:
    keep = labels != ""
    native = probe.scores(target[keep], labels[keep])
    stitched = probe.scores(mapped[keep], labels[keep])
    out: dict[str, Any] = {
        "probe_n_train": probe.n_train,
        "probe_accuracy_native": native["accuracy"],
        "probe_accuracy_stitched": stitched["accuracy"],
        "probe_auc_native": native["auc"],
        "probe_auc_stitched": stitched["auc"],
    }
    out["probe_accuracy_ratio"] = (
        stitched["accuracy"] / native["accuracy"] if native["accuracy"] > 0 else float("nan")
    )
    out["probe_auc_ratio"] = stitched["auc"] / native["auc"] if native["auc"] > 0 else float("nan")
    return out


def cosine_scorer(estimator: Any, X: np.ndarray, Y: np.ndarray) -> float:
    """Mean cosine between mapped ``X`` and the true ``Y``: a scorer for ``GridSearchCV``.

    ``GridSearchCV(RidgeMap(), {"alpha": [...]}, scoring=cosine_scorer)`` picks the map with
    the best held-out cosine (higher is better, as scikit-learn's scorers expect).
    """
    Y = np.asarray(Y)
    if Y.ndim == 1:
        Y = Y[:, None]
    return float(cosine_rows(estimator.transform(X), Y).mean())


# ---------------------------------------------------------------------------------------------
# quality gates: `stitch fit --require probe_auc_ratio>=0.98`
# ---------------------------------------------------------------------------------------------
HELD_OUT_METRICS = (
    "cosine_mean", "cosine_median", "relative_mse", "top1", "top5", "mrr", "cka_source_target",
    "cka_mapped_target", "probe_accuracy_native", "probe_accuracy_stitched", "probe_accuracy_ratio",
    "probe_auc_native", "probe_auc_stitched", "probe_auc_ratio",
)
_OPS = {">=": np.greater_equal, "<=": np.less_equal, ">": np.greater, "<": np.less}


def parse_requirement(text: str) -> tuple[str, str, float]:
    """``"probe_auc_ratio>=0.98"`` → ("probe_auc_ratio", ">=", 0.98); ValueError if malformed."""
    import re

    found = re.fullmatch(r"\s*([a-z0-9_]+)\s*(>=|<=|>|<)\s*([-+0-9.eE]+)\s*", text)
    if found is None:
        hint = ""
        if re.fullmatch(r"\s*[a-z0-9_]+\s*", text):
            # `--require top1>=0.8` unquoted: the shell took `>=0.8` as a redirection.
            hint = f"; quote it, e.g. --require '{text.strip()}>=0.8' (unquoted, a shell reads > as a redirection)"
        raise ValueError(f"requirement {text!r} is not METRIC>=VALUE (or <=, >, <){hint}")
    metric, op, value = found.groups()
    if metric not in HELD_OUT_METRICS:
        raise ValueError(f"requirement {text!r}: unknown metric {metric!r}; one of {', '.join(HELD_OUT_METRICS)}")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"requirement {text!r}: {value!r} is not a number") from None
    return metric, op, number


def unmet_requirements(metrics: dict[str, Any], requirements: list[tuple[str, str, float]]) -> list[str]:
    """One phrase per requirement the held-out metrics do not meet (unmeasured counts as unmet)."""
    unmet = []
    for metric, op, value in requirements:
        got = metrics.get(metric)
        if got is None or not np.isfinite(got):
            why = "no held-out anchors" if not metrics else (
                "no labels for a probe" if metric.startswith("probe_") else "not measured")
            unmet.append(f"{metric} {op} {value:g} could not be checked ({why})")
        elif not _OPS[op](got, value):
            unmet.append(f"{metric} = {got:.4f}, required {op} {value:g}")
    return unmet
