"""How well two spaces will stitch, measured on the anchors before fitting (`stitch fit --dry-run`).

Three figures, all from the fit anchors alone (the held-out anchors stay unseen):

* linear CKA between the two sides (Kornblith et al. 2019): 1 when one is a rotation and
  scaling of the other;
* mutual k-NN overlap as in the Platonic Representation Hypothesis code (Huh et al. 2024,
  ``metrics.mutual_knn``): for each anchor, the fraction of its k nearest neighbours (cosine,
  itself excluded) in the source space that are also among its k nearest in the target space,
  averaged; chance is about k / n;
* the expected held-out quality: a ``cv``-fold cross-validation of the map the fit would make
  (same method and preprocessing) over those anchors, each fold fitted on the other folds.
  It is a slight underestimate (each fit sees (cv−1)/cv of the anchors); retrieval top-1 is
  measured against the fold's own rows, a gallery of about n / cv (the fit's held-out gallery
  is ``n_heldout``; smaller galleries give higher top-1).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from . import functional as F
from .metrics import linear_cka, retrieval


def knn_indices(X: np.ndarray, k: int) -> np.ndarray:
    """Each row's k nearest other rows by cosine similarity (n, k)."""
    U = F.l2_normalize(X, dtype=np.float32)
    sims = U @ U.T
    np.fill_diagonal(sims, -np.inf)
    return np.argpartition(-sims, k, axis=1)[:, :k]


def mutual_knn(X: np.ndarray, Y: np.ndarray, k: int = 10) -> float:
    """Mean fraction of each row's k nearest neighbours shared by the two spaces."""
    n = len(X)
    if n <= k:
        raise ValueError(f"mutual k-NN with k={k} needs more than {k} anchors, got {n}")
    a, b = knn_indices(X, k), knn_indices(Y, k)
    hits = np.zeros(n)
    for i in range(n):  # n ≤ a few thousand: the similarity products dominate, not this loop
        hits[i] = len(np.intersect1d(a[i], b[i], assume_unique=True))
    return float(hits.mean() / k)


def cv_quality(X: np.ndarray, Y: np.ndarray, make: Any, *, cv: int = 3, seed: int = 0) -> dict[str, float]:
    """Mean held-out cosine, relative MSE and top-1 of ``make()`` maps over ``cv`` folds."""
    from .metrics import cosine_rows

    which = np.random.default_rng(seed).permutation(len(X)) % cv
    cos, rel, top1, gallery = [], [], [], []
    for f in range(cv):
        tr, te = which != f, which == f
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the fit itself will warn, once, if it applies
            m = make().fit(X[tr], Y[tr])
        P, T = m.transform(X[te]), np.asarray(Y[te], dtype=np.float64)
        cos.append(float(cosine_rows(P, T).mean()))
        spread = np.square(T - T.mean(axis=0)).sum()
        rel.append(float(np.square(P - T).sum() / spread) if spread > 0 else float("nan"))
        top1.append(retrieval(P, T)["top1"])
        gallery.append(int(te.sum()))
    return {
        "expected_cosine_mean": float(np.mean(cos)),
        "expected_relative_mse": float(np.mean(rel)),
        "expected_top1": float(np.mean(top1)),
        "expected_top1_gallery": int(np.mean(gallery)),
    }


def stitchability(
    X: np.ndarray, Y: np.ndarray, make: Any, *, k: int = 10, cv: int = 3, seed: int = 0,
    max_rows: int = 4000,
) -> dict[str, Any]:
    """CKA, mutual k-NN overlap (k stated) and the cross-validated quality on anchor pairs."""
    n = len(X)
    if n > max_rows:
        keep = np.sort(np.random.default_rng(seed).choice(n, max_rows, replace=False))
        X, Y = X[keep], Y[keep]
    k = min(k, len(X) - 1)
    out: dict[str, Any] = {
        "n_anchors": int(n),
        "n_measured": int(len(X)),
        "linear_cka": linear_cka(X, Y),
        "mutual_knn": mutual_knn(X, Y, k) if k >= 1 else float("nan"),
        "mutual_knn_k": int(k),
        "mutual_knn_chance": float(k / max(len(X) - 1, 1)),
        "cv_folds": int(cv),
    }
    if len(X) >= 3 * cv:
        out.update(cv_quality(X, Y, make, cv=cv, seed=seed))
    return out
