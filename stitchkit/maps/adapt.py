"""Label-free domain adaptation: a ridge map of one domain's embeddings onto themselves.

Fitted on unlabelled images of the target domain, the ridge self-map ``x → x`` keeps each
principal direction of the domain (in standardised coordinates, around the domain's mean) by
``λ / (λ + α)``; the spread factor then gives the adapted rows the domain's own variance back.
Queries move to the domain's mean and are weighted toward its main directions of variation,
and the directions in which the domain's images hardly vary (noise to a zero-shot scorer) are
damped. A stitching map with a large penalty does the same by accident (docs/maps.md).

The shrinkage is chosen without labels: ``α`` is the penalty whose ridge keeps ``dims``
effective dimensions, ``Σ λ / (λ + α) = dims`` (the degrees of freedom of the ridge fit,
Hastie, Tibshirani & Friedman, ESL §3.4.1), a count that does not depend on how many images
were read or how wide the embedding is. Its default was fixed on one data set and checked on
another (docs/maps.md, "Adapting to a domain").
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import UsageError
from . import functional as F
from .anchors import anchor_pool
from .estimators import BaseMap, RidgeMap
from .plan import _space
from .stream import StatsSpec, StoreLike, _opened, accumulate

#: Effective dimensions kept by default (docs/maps.md: fixed on NIH, checked on Kermany).
DEFAULT_DIMS = 16.0


def effective_dims(eigenvalues: np.ndarray, alpha: float) -> float:
    """Degrees of freedom of a ridge fit with penalty ``alpha``: ``Σ λ / (λ + α)``."""
    lam = np.maximum(np.asarray(eigenvalues, dtype=np.float64), 0.0)
    return float((lam / (lam + alpha)).sum())


def alpha_for_dims(eigenvalues: np.ndarray, dims: float) -> float:
    """The penalty whose ridge keeps ``dims`` effective dimensions (bisection on log α).

    ``Σ λ / (λ + α)`` falls from the rank to 0 as α grows, so the answer is unique for
    0 < dims < rank.
    """
    lam = np.sort(np.maximum(np.asarray(eigenvalues, dtype=np.float64), 0.0))[::-1]
    rank = int((lam > lam[0] * F.pinv_tolerance(False)).sum()) if lam.size and lam[0] > 0 else 0
    if not 0 < dims < rank:
        raise UsageError(
            f"--dims {dims:g} must lie between 0 and the rank of the domain's embeddings ({rank}): "
            "give fewer dimensions, or more images"
        )
    lo, hi = math.log(lam[0] * 1e-9), math.log(lam[0] * 1e9)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if effective_dims(lam, math.exp(mid)) > dims:
            lo = mid
        else:
            hi = mid
    return math.exp(0.5 * (lo + hi))


def domain_spectrum(stats: F.SuffStats) -> np.ndarray:
    """Eigenvalues (descending) of the centred, standardised Gram matrix the ridge penalises."""
    from scipy.linalg import eigh

    pre = F.preprocessing_from_stats(stats, center=True, standardize=True)
    cxx, _, _ = F.transform_stats(stats, pre).centred()
    return eigh(cxx, eigvals_only=True, check_finite=False)[::-1]


def fit_adaptation_stats(stats: F.SuffStats, dims: float = DEFAULT_DIMS) -> RidgeMap:
    """The adaptation map from the statistics of the domain's rows paired with themselves."""
    lam = domain_spectrum(stats)
    alpha = alpha_for_dims(lam, dims)
    m = RidgeMap(alpha=alpha, rescale=True).fit_stats(stats)
    m.adaptation_ = {
        "rule": "effective dimensions", "dims": float(dims), "alpha": alpha,
        "variance_kept": float((lam * (lam / (lam + alpha)) ** 2).sum() / max(lam.sum(), 1e-300)),
    }
    return m


def fit_adaptation(
    store: StoreLike,
    *,
    ids: str | os.PathLike | Sequence[str] | None = None,
    dims: float = DEFAULT_DIMS,
    chunk_size: int = 16384,
) -> RidgeMap:
    """Fit the adaptation map on ``store``'s rows (``ids``: a file or list; default all).

    Labels are never read. The map's source and target are the store's space; ``anchors_``
    names the images and ``adaptation_`` the rule (both saved with the map).
    """
    with _opened(store) as s:
        chosen = np.asarray(anchor_pool(s, s, ids))
        if len(chosen) < 3:
            raise UsageError(f"{len(chosen)} image(s) to adapt on: give at least 3 of the target domain")
        stats = accumulate(s, s, chosen, StatsSpec(chunk_size=chunk_size))[0]
        m = fit_adaptation_stats(stats, dims)
        m.source_space_ = m.target_space_ = _space(s)
        m.anchors_ = {
            "n_fit": int(len(chosen)), "strategy": "all", "label_use": None,
            "from": str(ids) if isinstance(ids, str | os.PathLike) else ("list" if ids is not None else "all ids"),
            "adaptation": m.adaptation_,
        }
    return m


def is_adaptation(m: Any) -> bool:
    """True for a map written by :func:`fit_adaptation` (its ``anchors_`` names the rule)."""
    return isinstance(getattr(m, "anchors_", None), dict) and "adaptation" in m.anchors_


class MapChain:
    """Maps applied one after another (a stitching map, then an adaptation): the interface of
    one map that :mod:`.tokens` and the scorers use (``transform``, widths, spaces, ``l2``)."""

    def __init__(self, maps: Sequence[BaseMap]) -> None:
        if not maps:
            raise ValueError("a chain needs at least one map")
        self.maps = list(maps)

    @property
    def n_features_in_(self) -> int:
        return int(self.maps[0].n_features_in_)

    @property
    def n_features_out_(self) -> int:
        return int(self.maps[-1].n_features_out_)

    @property
    def l2(self) -> bool:
        # Any normalisation in the chain breaks its commuting with mean pooling (maps.tokens).
        return any(bool(getattr(m, "l2", False)) for m in self.maps)

    @property
    def source_space_(self) -> dict[str, Any]:
        return self.maps[0].source_space_

    @property
    def target_space_(self) -> dict[str, Any]:
        return self.maps[-1].target_space_

    def transform(self, X: np.ndarray) -> np.ndarray:
        for m in self.maps:
            X = m.transform(X)
        return X
