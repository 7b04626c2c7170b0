"""How well two spaces will stitch, measured on the anchors before fitting (`stitch fit --dry-run`).

Three figures, all from the fit anchors alone (the held-out anchors stay unseen):

* linear CKA between the two sides (Kornblith et al. 2019): 1 when one is a rotation and
  scaling of the other;
* mutual k-NN overlap as in the Platonic Representation Hypothesis code (Huh et al. 2024,
  ``metrics.mutual_knn``): for each anchor, the fraction of its k nearest neighbours (cosine,
  itself excluded) in the source space that are also among its k nearest in the target space,
  averaged; chance is about k / n;
* the expected held-out quality: a ``cv``-fold cross-validation of the map the fit would make
  over those anchors, each fold fitted on the other folds exactly as ``fit_map`` fits: the
  same estimator (method, preprocessing, rescaling), its statistics in the folds the fit
  would use for alpha 'auto' (as many as the fit on all the anchors takes, split by the same
  hash of the ids: GCV where the fit uses GCV, K-fold where it uses K folds), and measured as
  the fit measures its held-out anchors (L2-normalised targets under ``l2``). Each fit sees
  (cv−1)/cv of the anchors, so where quality still climbs with the anchors it is a slight
  underestimate; retrieval top-1 is measured against the fold's own rows, a gallery of about
  n / cv (the fit's held-out gallery is ``n_heldout``; smaller galleries give higher top-1).
  The relative MSE is the median over the folds (each fold's is reported too): one image can
  dominate a fold's, e.g. Lite0 features that fire on one anchor of a fold are standardised by
  a tiny spread, and a held-out image where they fire lands thousands of spreads away (3.33
  where the other folds gave 0.79 and 0.76; the fit's 60 held-out anchors gave 0.86). The mean
  over folds followed such outliers (on 300 Kermany images, Lite0 → Lite2: a median distance
  |log(prediction / fit)| of 0.28 over ten splits, against 0.08 for the median).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from . import functional as F
from .anchors import fold_of
from .metrics import linear_cka, relative_mse, retrieval, warn_worse_than_mean


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


def fit_as_fit_map(make: Any, X: np.ndarray, Y: np.ndarray, ids: np.ndarray, *, n_folds: int,
                   seed: int) -> Any:
    """``make()`` fitted on the pairs (X, Y) as ``fit_map`` fits its anchors: statistics in
    ``n_folds`` folds by :func:`.anchors.fold_of` (one: alpha 'auto' by GCV), float32 products."""
    m = make()
    if m.l2:
        X, Y = F.l2_normalize(X), F.l2_normalize(Y)
    if n_folds == 1:
        return m.fit_stats(F.SuffStats.from_arrays(X, Y))
    which = fold_of(ids, n_folds, seed)
    return m.fit_stats([F.SuffStats.from_arrays(X[which == j], Y[which == j]) for j in range(n_folds)])


@dataclass(frozen=True, eq=False)  # arrays: compared by identity, never element-wise
class AnchorSample:
    """The anchor pairs measured: rows ``X`` of the source and ``Y`` of the target for the same
    anchors, in the same order.

    ``ids`` (the anchors' ids) and ``n_fit`` (how many anchors the fit uses, ``len(X)`` unless
    these are a sample of them) say what the rows stand for, so that each cross-validation fold's
    fit chooses alpha as the fit will; they travel with the rows because a subsample must keep
    all of them aligned.
    """

    X: np.ndarray
    Y: np.ndarray
    ids: np.ndarray | None = None
    n_fit: int | None = None

    def subsample(self, max_rows: int, seed: int) -> AnchorSample:
        """At most ``max_rows`` of the pairs, drawn by ``seed`` and kept in their order; ``n_fit``
        still counts the anchors the fit uses."""
        n = len(self.X)
        if n <= max_rows:
            return self
        keep = np.sort(np.random.default_rng(seed).choice(n, max_rows, replace=False))
        ids = None if self.ids is None else np.asarray(self.ids)[keep]
        return replace(self, X=self.X[keep], Y=self.Y[keep], ids=ids, n_fit=self.n_fit or n)


def cv_quality(pairs: AnchorSample, make: Any, *, cv: int = 3, seed: int = 0,
               n_folds: int | None = None) -> dict[str, Any]:
    """Held-out cosine and top-1 (means) and relative MSE (median, and per fold) of ``make()``
    maps over ``cv`` folds of ``pairs``; ``n_folds`` overrides the folds alpha 'auto' is chosen
    in (1: GCV)."""
    from .metrics import cosine_rows

    X, Y = pairs.X, pairs.Y
    ids = np.arange(len(X)).astype(str) if pairs.ids is None else np.asarray(pairs.ids).astype(str)
    # The fit on all n_fit anchors picks its alpha rule (GCV or K folds) by their count; a fold's
    # fit sees fewer, and near the boundary (NEAR_DIMENSION) would pick the other rule.
    if n_folds is None:
        n_folds = make().n_folds_for(pairs.n_fit or len(X), X.shape[1])
    which = np.random.default_rng(seed).permutation(len(X)) % cv
    cos, rel, top1, gallery = [], [], [], []
    for f in range(cv):
        tr, te = which != f, which == f
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the fit itself will warn, once, if it applies
            m = fit_as_fit_map(make, X[tr], Y[tr], ids[tr], n_folds=n_folds, seed=seed)
        # As the fit's held-out anchors (plan.prepare_heldout): targets L2-normalised under l2.
        T = np.asarray(F.l2_normalize(Y[te]) if m.l2 else Y[te], dtype=np.float64)
        P = m.transform(X[te])
        cos.append(float(cosine_rows(P, T).mean()))
        rel.append(relative_mse(P, T))
        top1.append(retrieval(P, T)["top1"])
        gallery.append(int(te.sum()))
    return {
        "expected_cosine_mean": float(np.mean(cos)),
        "expected_relative_mse": float(np.median(rel)),  # robust to one far-off image (module doc)
        "expected_top1": float(np.mean(top1)),
        "expected_top1_gallery": int(np.mean(gallery)),
        "expected_relative_mse_folds": rel,
    }


def stitchability(
    pairs: AnchorSample, make: Any, *, k: int = 10, cv: int = 3, seed: int = 0, max_rows: int = 4000,
) -> dict[str, Any]:
    """CKA, mutual k-NN overlap (k stated) and the cross-validated quality on the anchor pairs
    (at most ``max_rows`` of them); warns when that quality is worse than the mean."""
    n = len(pairs.X)
    pairs = replace(pairs, n_fit=pairs.n_fit or n).subsample(max_rows, seed)
    X, Y = pairs.X, pairs.Y
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
        out.update(cv_quality(pairs, make, cv=cv, seed=seed))
        warn_worse_than_mean(out["expected_relative_mse"], f"expected ({cv}-fold CV on the fit anchors)",
                             make().method)
    return out


#: Methods the recommendation compares (``linear`` is ``affine`` through the origin, and with
#: centred coordinates the same map).
COMPARED = ("ridge", "affine", "orthogonal")
#: Anchor counts of the expected learning curve (then the whole pool measured).
CURVE_COUNTS = (125, 250, 500, 1000, 2000, 4000)
#: The recommended count is the smallest whose expected cosine is within this of the largest's.
ENOUGH = 0.01


def recommend(chosen: AnchorSample, pool: AnchorSample, make: Any, *, cv: int = 3, seed: int = 0) -> dict[str, Any]:
    """Which method and how many anchors, from the anchors alone (no labels, nothing held out).

    The method: the one of :data:`COMPARED` (with the preprocessing of ``make()``) whose
    cross-validated cosine on the ``chosen`` anchors is highest. The count: that method's
    expected cosine on seeded subsets of the fit ``pool`` of :data:`CURVE_COUNTS` anchors (and
    all of it; a ridge alpha chosen by GCV at every count, which is cheap, where the fit would
    use K folds below 4 × the dimension); the smallest count within :data:`ENOUGH` of the largest is recommended, and
    ``still_rising`` says the last step of the curve still gained more than half of that.
    """
    from .estimators import make_map

    base = make().get_params()
    shared = {k: base[k] for k in ("center", "standardize", "l2", "restore")}

    def maker(method: str) -> Any:
        return lambda: make_map(method, **shared, random_state=seed) if method != "orthogonal" \
            else make_map(method, **shared)

    methods: dict[str, float] = {}
    for method in COMPARED:
        if len(chosen.X) >= 3 * cv:
            methods[method] = cv_quality(chosen, maker(method), cv=cv, seed=seed)["expected_cosine_mean"]
    if not methods:
        return {}
    best = max(methods, key=lambda m: methods[m])
    n_pool = len(pool.X)
    counts = sorted({c for c in CURVE_COUNTS if 3 * cv <= c < n_pool} | {n_pool})
    curve = []
    for c in counts:  # alpha by GCV along the curve: one eigendecomposition a fit, not K folds
        sub = replace(pool, n_fit=c).subsample(c, seed)
        curve.append([int(c), cv_quality(sub, maker(best), cv=cv, seed=seed, n_folds=1)["expected_cosine_mean"]])
    top = curve[-1][1]
    enough = next(c for c, cos in curve if cos >= top - ENOUGH)
    rising = len(curve) > 1 and top - curve[-2][1] > ENOUGH / 2
    return {"methods_expected_cosine": methods, "method": best, "curve": curve, "n_anchors": int(enough),
            "still_rising": bool(rising), "pool": int(n_pool)}
