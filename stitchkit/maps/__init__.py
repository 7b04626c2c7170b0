"""Maps between embedding spaces, fitted in closed form over shared anchors.

>>> from stitchkit.maps import AnchorPlan, RidgeMap, fit_map, load_map     # doctest: +SKIP
>>> m = fit_map("lite0.h5", "lite2.h5", RidgeMap(), AnchorPlan(holdout=0.2))  # doctest: +SKIP
>>> m.save("lite0-to-lite2.map"); Y = load_map("lite0-to-lite2.map").transform(X)  # doctest: +SKIP
"""

from .api import apply_map, check_stitchability, fit_map
from .estimators import (
    METHODS,
    AffineMap,
    BaseMap,
    LinearMap,
    NotFittedError,
    OrthogonalMap,
    RidgeMap,
    load_map,
    make_map,
)
from .functional import MapValueError, SuffStats
from .metrics import cosine_scorer
from .options import AnchorPlan, ApplyOptions, MapSettings, ReadOptions
from .sweep import SweepGrid, sweep
from .token_pairs import TokenGrid, fit_token_map

__all__ = [
    "METHODS",
    "AffineMap",
    "AnchorPlan",
    "ApplyOptions",
    "BaseMap",
    "LinearMap",
    "MapSettings",
    "MapValueError",
    "NotFittedError",
    "OrthogonalMap",
    "ReadOptions",
    "RidgeMap",
    "SuffStats",
    "SweepGrid",
    "TokenGrid",
    "apply_map",
    "check_stitchability",
    "cosine_scorer",
    "fit_map",
    "fit_token_map",
    "load_map",
    "make_map",
    "sweep",
]
