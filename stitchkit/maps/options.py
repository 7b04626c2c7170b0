"""What a fit is given besides its two stores: the anchor plan and how the stores are read.

The map's own parameters are the estimator's (``RidgeMap(alpha=...)``, or a method name for its
defaults); :class:`AnchorPlan` says which anchors fit the map, which are held out to measure it
and what the map is finally fitted on; :class:`ReadOptions` says how the stores are streamed.
``fit_map``, ``check_stitchability``, ``fit_token_map`` and ``sweep`` take these objects, so a
new option is one field here instead of one parameter in every function.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError
from ..label_use import fit_label_use
from .anchors import STRATEGIES
from .estimators import BaseMap, make_map
from .stream import LocalEngine, ProgressFn, StatsEngine


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
    n_anchors: int | None = None
    strategy: str = "random"
    holdout: float = 0.2
    seed: int = 0
    pool_by: str | None = None
    metrics: bool = True
    refit: bool = True
    unpaired: int = 0
    refine_iterations: int = 3

    def validate(self) -> AnchorPlan:
        """One clear line for a plan that cannot work, before any store is read."""
        if self.strategy not in STRATEGIES:
            raise UsageError(f"unknown anchor strategy {self.strategy!r}: choose one of {', '.join(STRATEGIES)}")
        if self.pool_by not in (None, "group"):
            raise UsageError(f"pool_by (--pool-by) takes 'group', got {self.pool_by!r}")
        if self.unpaired < 0:
            raise UsageError(f"unpaired must be ≥ 0, got {self.unpaired}")
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

    chunk_size: int = 16384
    exact: bool = False
    progress: ProgressFn | None = None
    engine: StatsEngine = field(default_factory=LocalEngine)

    def validate(self) -> ReadOptions:
        if self.chunk_size < 1:
            raise UsageError(f"chunk_size must be ≥ 1, got {self.chunk_size}")
        if not callable(getattr(self.engine, "accumulate", None)):
            raise UsageError(
                f"engine {self.engine!r}: pass an engine object, e.g. "
                "stitchkit.engines.ray_stats.RayStats(address) for Ray"
            )
        return self


def seeded_estimator(estimator: BaseMap | str, seed: int) -> BaseMap:
    """A fresh, validated estimator: a method name with its defaults, or a copy of the one given.
    The plan's seed is its ``random_state`` (one seed governs a fit)."""
    from sklearn.base import clone

    m = make_map(estimator) if isinstance(estimator, str) else clone(estimator)
    if "random_state" in m.get_params():
        m.set_params(random_state=seed)
    m._validate_params()
    return m

