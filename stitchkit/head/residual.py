"""The cosine route a residual head starts from: a ridge map from the image space into the text
space, fitted in closed form on the head's pairs (the one module of the head that uses
:mod:`stitchkit.maps`: the same estimator `stitch fit --method ridge` fits)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .data import Side

MAX_FIT_ROWS = 20_000  # pairs the map is fitted on at most (a seeded sample beyond): 100 MB


def fit_cosine_map(img: Side, txt: Side, seed: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """``(matrix, offset, info)`` of the ridge map (default settings: alpha by GCV, spread
    restored) from ``img``'s globals to the globals of the paired ``txt`` rows."""
    from ..maps.estimators import RidgeMap

    rows = np.arange(len(img))
    if len(rows) > MAX_FIT_ROWS:
        rows = np.sort(np.random.default_rng([seed, 11]).choice(len(img), MAX_FIT_ROWS, replace=False))
    x, y = img.read_glob(rows), txt.read_glob(rows)
    fitted = RidgeMap().fit(x, y, ids=[str(i) for i in img.ids[rows]])
    info = {"method": "ridge", "alpha": float(fitted.alpha_), "n_pairs": int(len(rows))}
    return fitted.matrix_, fitted.offset_, info
