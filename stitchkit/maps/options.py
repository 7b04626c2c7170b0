"""What a fit is given besides its two stores: the anchor plan and how the stores are read.

The map's own parameters are the estimator's (``RidgeMap(alpha=...)``, or a method name for its
defaults); :class:`AnchorPlan` says which anchors fit the map, which are held out to measure it
and what the map is finally fitted on; :class:`ReadOptions` says how the stores are streamed.
``fit_map``, ``check_stitchability``, ``fit_token_map`` and ``sweep`` take these objects, so a
new option is one field here instead of one parameter in every function.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..devices import DEVICE_HELP, ENGINES
from ..errors import UsageError
from ..label_use import fit_label_use
from ..settings import Range, check_settings, setting
from .anchors import STRATEGIES
from .estimators import ALPHA_WORDS, METHODS, BaseMap, make_map
from .stream import LocalEngine, ProgressFn, StatsEngine


def _preprocessing_default(name: str) -> bool:
    return inspect.signature(BaseMap.__init__).parameters[name].default


@dataclass(frozen=True)
class AnchorPlan:
    """Which anchors a fit uses.

    ``anchors``: a file or list of ids (default: every id both stores share); ``holdout`` of them
    are set aside to measure the map (``metrics``), then ``n_anchors`` (all by default) are chosen
    from the rest by ``strategy``. ``seed`` fixes the holdout, the choice and the estimator's
    folds. ``pool_by="group"`` averages the views of each group (study) first. ``refit``: the map
    returned is fitted again on the fit and held-out anchors together (scikit-learn's ``refit``).
    ``unpaired=N`` refines the map with up to N samples per store that are no anchor, used without
    their pairing, ``refine_iterations`` rounds at most (:mod:`.refine`).
    """

    anchors: str | os.PathLike | Sequence[str] | None = None
    n_anchors: int | None = setting(None, "Use only N of the anchors (after the holdout), chosen with --strategy.",
                                    within=Range(1))
    strategy: str = setting("random", "How --n-anchors are chosen: random; stratified by label; farthest-point "
                            "(k-centre greedy, cosine); k-means centres snapped to the nearest real sample.",
                            choices=STRATEGIES)
    holdout: float = setting(0.2, "Fraction of anchors held out for the quality report.",
                             within=Range(0.0, 1.0, open_max=True))
    seed: int = setting(0, "Seed of the holdout split, the selection and the CV folds.")
    pool_by: str | None = setting(None, "Average each group's views (e.g. a study's images) into one anchor first.",
                                  choices=("group",), none="none")
    metrics: bool = True
    refit: bool = setting(True, "Measure the map on the held-out anchors, then write it refitted on all the "
                          "anchors (fit + held out), as scikit-learn's refit.")
    unpaired: int = setting(0, "Refine the map with up to N samples per store that are not anchors (no pairing "
                            "used): mutual nearest neighbours become pseudo-anchors, refitted.", within=Range(0))
    refine_iterations: int = setting(3, "Rounds of pseudo-anchor refinement (with --unpaired).", within=Range(1))

    def validate(self) -> AnchorPlan:
        """One clear line for a plan that cannot work, before any store is read."""
        check_settings(self)
        return self

    def record(self, n_fit: int, n_pool: int, n_heldout: int, n_refit: int,
               stores: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The map's ``anchors_``: what it was fitted on. The metrics are the held-out anchors'
        under the map fitted on n_fit; the map written is refitted on n_refit when non-zero.
        ``label_use`` says which labels chose or made the anchors (None: none), so that a
        result through the map can say it is not zero-shot (:mod:`stitchkit.label_use`);
        ``stores`` (role → the store read) are checked for captions made from labels."""
        anchors = self.anchors
        # Labels are read only where --n-anchors leaves fewer than the candidates (the pool
        # after the holdout) to choose from: a stratified "choice" of all of them reads none.
        stratified = (self.strategy == "stratified" and self.n_anchors is not None
                      and n_fit < n_pool - n_heldout)
        return {
            "n_fit": int(n_fit), "n_pool": int(n_pool), "n_heldout": int(n_heldout),
            "strategy": self.strategy if self.n_anchors is not None else "all",
            "seed": self.seed, "holdout": self.holdout,
            "from": str(anchors) if isinstance(anchors, str | os.PathLike) else (
                "list" if anchors is not None else "shared ids"),
            "pool_by": self.pool_by, "n_refit": int(n_refit),
            "label_use": fit_label_use(anchors, stratified, stores),
        }


@dataclass(frozen=True)
class ReadOptions:
    """How the stores are streamed: ``chunk_size`` rows at a time, float64 products with
    ``exact``, ``progress(done, total)`` called as rows are read, and the ``engine`` that
    computes the statistics (this process by default; ``stitchkit.engines.ray_stats.RayStats``
    on Ray)."""

    chunk_size: int = setting(16384, "Rows read per chunk (memory stays O(D²) plus one chunk).", within=Range(1))
    exact: bool = setting(False, "Compute chunk products in float64 (about 3x slower; sums are float64 anyway).")
    progress: ProgressFn | None = None
    engine: StatsEngine | str = setting("local", "ray: one task per source shard computes its statistics; "
                                        "they are reduced.", choices=ENGINES)
    address: str | None = setting(None, "Ray cluster to join (with --engine ray); default a local Ray.")

    def validate(self) -> ReadOptions:
        """The options with ``engine`` an engine object, checked. The name "local" is this
        process; "ray" is resolved by the caller (the library never imports the engines)."""
        check_settings(self)
        if self.engine == "local":
            return replace(self, engine=LocalEngine())
        if not callable(getattr(self.engine, "accumulate", None)):
            raise UsageError(
                f"engine {self.engine!r}: pass an engine object, e.g. "
                "stitchkit.engines.ray_stats.RayStats(address) for Ray"
            )
        return self


@dataclass(frozen=True)
class MapSettings:
    """A map estimator described by settings (what `stitch fit` and `stitch sweep` take);
    :meth:`estimator` builds it, and :func:`~stitchkit.maps.estimators.make_map` refuses a
    setting the method does not take. The preprocessing defaults are :class:`BaseMap`'s own."""

    method: str = setting("ridge", "ridge: affine least squares with alpha chosen by GCV; affine / linear: "
                          "least squares with / without bias, stabilised by a fixed small penalty (--alpha "
                          "stable); orthogonal: Procrustes.", choices=METHODS)
    alpha: float | str | None = setting(
        None, "Ridge penalty: 'auto' (generalised cross-validation over the fit anchors), 'stable' (a fixed "
        "0.1 x the mean eigenvalue of the anchors' Gram matrix: no collapse where anchors ~ dimensions) or a "
        "number (0: exact least squares).", shown="auto for ridge, stable for affine/linear")
    scale: bool = setting(False, "Orthogonal only: also fit an isotropic scale factor.")
    rescale: bool | None = setting(
        None, "Multiply the solution by one factor that gives the anchors' predictions the targets' spread "
        "(ridge shrinks them towards the target mean, which cosine retrieval and prompts then see in every "
        "sample).", shown="on for ridge, off for affine/linear")
    center: bool = setting(_preprocessing_default("center"), "Subtract the anchors' means.")
    standardize: bool = setting(_preprocessing_default("standardize"),
                                "Divide by the anchors' standard deviations (standard scaling).")
    l2: bool = setting(_preprocessing_default("l2"), "L2-normalise every row before anything else.")
    restore: bool = setting(_preprocessing_default("restore"), "Restore the target's mean and scale after the "
                            "map, so outputs live in the target space.")
    cv: int | None = setting(None, "Choose --alpha auto by K-fold validation instead of GCV (default: generalised "
                             "cross-validation from one eigendecomposition, one pass over the anchors).",
                             within=Range(2))

    def estimator(self) -> BaseMap:
        """The unfitted map; one line for a setting its method does not take."""
        check_settings(self)
        alpha = self.alpha
        if (isinstance(alpha, str) and alpha not in ALPHA_WORDS) or (
                isinstance(alpha, int | float) and not alpha >= 0):
            raise UsageError(f"alpha takes {', '.join(map(repr, ALPHA_WORDS))} or a number ≥ 0, got {alpha!r}")
        return make_map(self.method, alpha=alpha, scale=self.scale or None, rescale=self.rescale,
                        center=self.center, standardize=self.standardize, l2=self.l2, restore=self.restore,
                        cv=self.cv)


def seeded_estimator(estimator: BaseMap | str, seed: int) -> BaseMap:
    """A fresh, validated estimator: a method name with its defaults, or a copy of the one given.
    The plan's seed is its ``random_state`` (one seed governs a fit)."""
    from sklearn.base import clone

    m = make_map(estimator) if isinstance(estimator, str) else clone(estimator)
    if "random_state" in m.get_params():
        m.set_params(random_state=seed)
    m._validate_params()
    return m



@dataclass(frozen=True)
class ApplyOptions:
    """How :func:`~stitchkit.maps.apply_map` writes a mapped store."""

    chunk_size: int = setting(16384, "Rows mapped per chunk.", within=Range(1))
    tokens: bool = setting(True, "Map the store's tokens per token (--no-tokens: leave them out of the output).")
    force_space: bool = setting(False, "Apply even if the store's model or weights differ from the map's "
                                "source side.")
    device: str = setting("auto", DEVICE_HELP + " The map's products run there (float32); the CPU runs exactly "
                          "what it always ran.")
    progress: ProgressFn | None = None

    def __post_init__(self) -> None:
        check_settings(self)
