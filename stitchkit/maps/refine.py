"""Refining a few-anchor map with unpaired samples: mutual nearest neighbours as pseudo-anchors.

Each store usually holds many samples that are not anchors. Mapped into the target space, a
source sample and a target sample that are each other's nearest neighbour (cosine) are likely
the same kind of thing; such mutual-nearest-neighbour (MNN) pairs are added to the anchors'
sufficient statistics and the map is refitted, and the process repeats with the better map
(the idea of iterative closest-point / MNN refinement in cross-lingual embedding alignment,
e.g. Artetxe et al. 2018, Conneau et al. 2018).

The pseudo-pairs never replace the anchors: their statistics are merged with the anchors' own
(per fold where alpha is chosen by K-fold validation; GCV chooses it again on the refit).
Only pairs whose similarity is at least the median of the MNN pairs' are kept, which drops
the least certain half.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import functional as F


def mutual_nearest(P: np.ndarray, T: np.ndarray, *, block: int = 4096) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index pairs (i, j) with T[j] the nearest (cosine) of P[i] and P[i] the nearest of T[j].

    Blocked over P so memory stays O(block · len(T)); returns (i, j, similarity).
    """
    Pu, Tu = F.l2_normalize(P, dtype=np.float32), F.l2_normalize(T, dtype=np.float32)
    n, m = len(Pu), len(Tu)
    row_best = np.empty(n, dtype=np.int64)
    row_sim = np.empty(n, dtype=np.float32)
    col_best = np.full(m, -1, dtype=np.int64)
    col_sim = np.full(m, -np.inf, dtype=np.float32)
    for start in range(0, n, block):
        S = Pu[start : start + block] @ Tu.T
        row_best[start : start + len(S)] = S.argmax(axis=1)
        row_sim[start : start + len(S)] = S.max(axis=1)
        arg = S.argmax(axis=0)
        top = S[arg, np.arange(m)]
        better = top > col_sim
        col_sim[better] = top[better]
        col_best[better] = arg[better] + start
    i = np.flatnonzero(col_best[row_best] == np.arange(n))
    return i, row_best[i], row_sim[i]


def pseudo_pairs(m: Any, Xu: np.ndarray, Yu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The more certain half of the mutual nearest neighbours between mapped Xu and Yu."""
    i, j, sim = mutual_nearest(m.transform(Xu), Yu)
    if len(sim) == 0:
        return i, j
    keep = sim >= np.median(sim)
    return i[keep], j[keep]


def refine(
    m: Any,
    anchor_folds: list[F.SuffStats],
    Xu: np.ndarray,
    Yu: np.ndarray,
    *,
    iterations: int = 3,
    l2: bool = False,
    seed: int = 0,
) -> tuple[Any, list[int]]:
    """Refit ``m`` on its anchors plus MNN pseudo-pairs of the unpaired ``Xu`` / ``Yu``, iterated.

    ``anchor_folds`` are the anchors' per-fold statistics (as ``m`` was fitted from). Returns
    the refined map (a clone of ``m``'s parameters) and the number of pseudo-pairs per round.
    Stops early when a round finds the same pairs as the last.
    """
    from sklearn.base import clone

    if l2:
        Xu, Yu = F.l2_normalize(Xu), F.l2_normalize(Yu)
    rng = np.random.default_rng(seed)
    k = len(anchor_folds)
    history: list[int] = []
    last: set[tuple[int, int]] | None = None
    current = m
    for _ in range(iterations):
        i, j = pseudo_pairs(current, Xu, Yu)
        pairs = set(zip(i.tolist(), j.tolist(), strict=True))
        if pairs == last or len(i) < 2:
            break
        last = pairs
        history.append(int(len(i)))
        which = rng.integers(0, k, len(i))
        folds = []
        for f in range(k):
            sel = which == f
            pseudo = F.SuffStats.from_arrays(Xu[i[sel]], Yu[j[sel]], exact=anchor_folds[f].exact)
            folds.append(anchor_folds[f].merge(pseudo))
        current = clone(m).fit_stats(folds if k > 1 else folds[0])
    return current, history
