"""Maps between embedding spaces, fitted in closed form over shared anchors.

>>> from stitchkit.maps import fit_map, load_map, apply_map      # doctest: +SKIP
>>> m = fit_map("lite0.h5", "lite2.h5", method="ridge")          # doctest: +SKIP
>>> m.save("lite0-to-lite2.map"); Y = load_map("lite0-to-lite2.map").transform(X)  # doctest: +SKIP
"""

from .api import apply_map, fit_map
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
from .sweep import sweep

__all__ = [
    "METHODS",
    "AffineMap",
    "BaseMap",
    "LinearMap",
    "MapValueError",
    "NotFittedError",
    "OrthogonalMap",
    "RidgeMap",
    "SuffStats",
    "apply_map",
    "cosine_scorer",
    "fit_map",
    "load_map",
    "make_map",
    "sweep",
]
