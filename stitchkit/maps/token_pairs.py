"""Fitting a map on spatially matched patch tokens instead of pooled vectors.

A map fitted on pooled vectors sees one sample per image, and pooling averages away what is
specific to single tokens: applied per token it carries a token head badly (Kermany test AUC
0.946 native Lite2 → 0.820 through a pooled Lite0 map, ``docs/head.md``). Here every (image,
grid position) is one sample instead. Two token grids of different size (Lite0 7×7, Lite2
9×9) are first brought to one grid so that token ``t`` of both sides covers the same part of
the image:

* ``grid="target"`` (the default): the source grid is resampled onto the target's, so the
  mapped tokens come out on the grid a head trained in the target space knows;
* ``grid="source"``, ``"coarser"``, ``"finer"``: the named side's grid.

Downsampling is area-weighted (each output cell averages the input cells it overlaps, by
overlap), upsampling bilinear at the cell centres (``align_corners=False``). Both are linear
with rows summing to one, so for an affine map ``resample(A x + b) = A resample(x) + b``:
fitting on resampled tokens and resampling mapped tokens are the same thing.

The map is an ordinary affine map (ridge / affine / linear / orthogonal from
:mod:`.estimators`), fitted from sufficient statistics streamed a bounded block of images at
a time (float32 products, float64 sums), so memory is O(D²) plus one block whatever the number
of images. Affine means it still commutes with mean pooling — ``mean_t(A x_t + b) =
A mean_t(x_t) + b`` — so the same map applies to a mean-pooled store's globals and tokens
alike, and the mapped tokens average to the mapped global. Ridge's alpha is chosen as for any
ridge map, by GCV over the token pairs; with ``cv=K`` by K folds of whole images instead (all
tokens of one image in one fold). GCV treats the tokens as independent samples and picks a
smaller alpha (relative 0.03 against 1.0 on 1,200 Lite0/Lite2 images); the stitched token head
measured better with it (``docs/head.md``), so it is the default. The held-out images
(``holdout``) measure the map on their globals (the usual metrics) and on their matched
tokens (``token_cosine_mean``, ``token_relative_mse``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import clone

from ..errors import UsageError
from ..settings import Range, check_settings, setting
from ..store import require_finite
from ..store.grid import resample_tokens
from . import functional as F
from .anchors import fold_of, rows_of
from .estimators import BaseMap
from .metrics import cosine_rows
from .options import AnchorPlan, ReadOptions, seeded_estimator
from .plan import (
    _space,
    choose_anchors,
    fitted_anchors,
    heldout_metrics,
    plan_anchors,
    prepare_heldout,
    refit_folds,
)
from .stream import ProgressFn, StoreLike, _opened

GRIDS = ("target", "source", "coarser", "finer")
#: Bytes of float32 tokens (both sides, as read and as resampled) one block of images holds.
BLOCK_BYTES = 96 * 2**20
#: Held-out images whose matched tokens are measured.
MAX_EVAL_IMAGES = 500


# ---------------------------------------------------------------------------------------------
# grids
# ---------------------------------------------------------------------------------------------
def grid_side(store: Any, what: str) -> int:
    """The side of ``store``'s square token grid; one clear line when it has none."""
    if not getattr(store, "has_tokens", False):
        raise UsageError(
            f"{what} {store.path} has no tokens: embed it with `stitch embed --tokens`, or fit "
            "on pooled vectors (without --tokens)"
        )
    t, d = (int(v) for v in store.token_shape)
    side = math.isqrt(t)
    if side * side != t:
        raise UsageError(
            f"{what} {store.path} holds {t} tokens per sample, not a square grid (a CLS token, or "
            "word tokens?): --tokens matches patch grids position by position and cannot pair them"
        )
    if int(d) != int(store.dim):
        raise UsageError(
            f"{what} {store.path} holds tokens {d} wide but globals {store.dim} wide: a token map "
            "must also apply to the globals; embed tokens at the pooled width"
        )
    probe = np.arange(min(len(store), 16))
    mask = store.token_mask(probe)
    if not mask.all():
        raise UsageError(
            f"{what} {store.path} has padded tokens (word tokens with a mask): --tokens matches "
            "square patch grids only"
        )
    return side


def choose_grid(grid: str, side_src: int, side_tgt: int) -> int:
    if grid not in GRIDS:
        raise UsageError(f"token grid {grid!r}: choose one of {', '.join(GRIDS)}")
    return {"target": side_tgt, "source": side_src, "coarser": min(side_src, side_tgt),
            "finer": max(side_src, side_tgt)}[grid]


def _how(side_in: int, side: int) -> str:
    return "none" if side_in == side else "area" if side < side_in else "bilinear"


# ---------------------------------------------------------------------------------------------
# fitting
# ---------------------------------------------------------------------------------------------
def _block_rows(d_src: int, d_tgt: int, t_src: int, t_tgt: int, t: int) -> int:
    per_image = 4 * (t_src * d_src + t_tgt * d_tgt + t * (d_src + d_tgt))
    return max(1, BLOCK_BYTES // max(per_image, 1))


def _matched(src: Any, tgt: Any, src_rows: np.ndarray, tgt_rows: np.ndarray, side: int
             ) -> tuple[np.ndarray, np.ndarray]:
    """Matched tokens (n, side², D) of both sides for the given rows."""
    xs, _ = src.read_tokens(src_rows)
    ys, _ = tgt.read_tokens(tgt_rows)
    return resample_tokens(xs, side), resample_tokens(ys, side)


@dataclass(frozen=True)
class TokenGrid:
    """How token pairs are matched: on which ``token_grid`` (see the module doc), and ``pooled_weight``
    copies of every image's pooled pair added beside its tokens (0: tokens only)."""

    token_grid: str = setting("target", "With --tokens: the grid both sides are resampled onto (area-weighted down, "
                        "bilinear up), e.g. target: Lite0 7x7 upsampled to Lite2's 9x9.", choices=GRIDS)
    pooled_weight: int = setting(0, "With --tokens: also add each image's pooled pair this many times.",
                                 within=Range(0))

    def validate(self) -> TokenGrid:
        check_settings(self)
        return self


def fit_token_map(
    source: StoreLike,
    target: StoreLike,
    estimator: BaseMap | str = "ridge",
    plan: AnchorPlan | None = None,
    read: ReadOptions | None = None,
    tokens: TokenGrid | None = None,
) -> BaseMap:
    """Fit an affine map on spatially matched token pairs of the images both stores share.

    ``tokens`` (:class:`TokenGrid`): which grid the pairs are matched on and the weight of the
    pooled pairs. The other arguments are :func:`stitchkit.maps.fit_map`'s; the anchors are
    images (ids), the holdout is a set of whole images (``plan.pool_by`` and ``plan.unpaired``
    do not apply). The result records what it was fitted on in ``anchors_["tokens"]``.
    """
    tokens = (tokens or TokenGrid()).validate()
    plan = (plan or AnchorPlan()).validate()
    read = (read or ReadOptions()).validate()
    if plan.pool_by or plan.unpaired:
        raise UsageError("token maps match images one by one: pool_by and unpaired do not apply")
    m = seeded_estimator(estimator, plan.seed)
    if m.l2:
        raise UsageError("token maps are affine so that they commute with pooling: l2 does not apply")
    seed = plan.seed
    with _opened(source) as src, _opened(target) as tgt:
        s_src, s_tgt = grid_side(src, "source"), grid_side(tgt, "target")
        side = choose_grid(tokens.token_grid, s_src, s_tgt)
        split = plan_anchors(src, tgt, anchors=plan.anchors, holdout=plan.holdout, seed=seed)
        ids = choose_anchors(src, split, plan.n_anchors, strategy=plan.strategy, seed=seed)
        if len(ids) < 2:
            raise UsageError(f"{len(ids)} anchor image(s) left after the holdout: a map needs at least 2")
        n_folds = m.n_folds_for(len(ids) * side * side, src.dim)  # every token pair is a sample
        pairs = TokenPairs(src, tgt, side, pooled_weight=tokens.pooled_weight, seed=seed, exact=read.exact)
        folds = pairs.accumulate(ids, n_folds, read.progress)
        t = side * side
        m.fit_stats(folds)
        measured = {}
        if plan.metrics:
            held = prepare_heldout(src, tgt, split, seed=seed, l2=False)
            measured = {**heldout_metrics(m, held), **token_metrics(m, src, tgt, split.heldout, side, seed)}
        n_refit = 0
        if plan.refit and len(split.heldout):
            union = refit_folds(m, folds, pairs.accumulate(split.heldout, n_folds, None), src.dim)
            m = clone(m).fit_stats(union)
            n_refit = int(len(ids) + len(split.heldout))
        m.source_space_ = _space(src)
        m.target_space_ = _space(tgt)
        m.anchors_ = plan.record(len(ids), len(split.pool), len(split.heldout), n_refit,
                                 stores={"source": src, "target": tgt})
        m.fitted_on_ = fitted_anchors(src, np.concatenate([ids, split.heldout]) if n_refit else ids)
        m.anchors_["tokens"] = {
            "grid": [side, side],
            "grid_choice": tokens.token_grid,
            "source_grid": [s_src, s_src],
            "target_grid": [s_tgt, s_tgt],
            "resample": {"source": _how(s_src, side), "target": _how(s_tgt, side)},
            "n_token_pairs": int(len(ids) * t),
            "pooled_weight": int(tokens.pooled_weight),
            "alpha_folds": "by image" if n_folds > 1 else None,
            "affine": True,
        }
        m.metrics_ = measured
    return m


class TokenPairs:
    """Per-fold statistics of the matched token pairs of a set of images, read in blocks."""

    def __init__(self, src: Any, tgt: Any, side: int, *, pooled_weight: int, seed: int, exact: bool) -> None:
        self.src, self.tgt, self.side = src, tgt, side
        self.pooled_weight, self.seed, self.exact = pooled_weight, seed, exact

    def accumulate(self, ids: np.ndarray, n_folds: int, progress: ProgressFn | None) -> list[F.SuffStats]:
        src, tgt, side, pooled_weight = self.src, self.tgt, self.side, self.pooled_weight
        src_rows, tgt_rows = rows_of(src, ids), rows_of(tgt, ids)
        order = np.argsort(src_rows, kind="stable")  # reads in store order (runs, not seeks)
        which = fold_of(ids, n_folds, self.seed) if n_folds > 1 else np.zeros(len(ids), dtype=np.int64)
        folds = [F.SuffStats.zeros(src.dim, tgt.dim, exact=self.exact) for _ in range(n_folds)]
        s_src, s_tgt = (int(s.token_shape[0]) for s in (src, tgt))
        block = _block_rows(src.dim, tgt.dim, s_src, s_tgt, side * side)
        t = side * side
        if progress is not None:
            progress(0, len(ids))
        for a in range(0, len(order), block):
            part = order[a:a + block]
            X, Y = _matched(src, tgt, src_rows[part], tgt_rows[part], side)
            X, Y = X.reshape(-1, src.dim), Y.reshape(-1, tgt.dim)
            require_finite(X, np.repeat(ids[part], t), src.path, "tokens")
            require_finite(Y, np.repeat(ids[part], t), tgt.path, "tokens")
            f_tok = np.repeat(which[part], t)
            if pooled_weight:
                gx, gy = src.read(src_rows[part]), tgt.read(tgt_rows[part])
                X = np.concatenate([X, np.repeat(gx, pooled_weight, axis=0)])
                Y = np.concatenate([Y, np.repeat(gy, pooled_weight, axis=0)])
                f_tok = np.concatenate([f_tok, np.repeat(which[part], pooled_weight)])
            if n_folds == 1:
                folds[0].update(X, Y)
            else:
                for k in range(n_folds):
                    sel = f_tok == k
                    if sel.any():
                        folds[k].update(X[sel], Y[sel])
            if progress is not None:
                progress(min(a + block, len(ids)), len(ids))
        return folds


def token_metrics(m: BaseMap, src: Any, tgt: Any, heldout: np.ndarray, side: int, seed: int
                  ) -> dict[str, Any]:
    """Cosine and relative MSE of the mapped matched tokens of (up to 500) held-out images."""
    ids = np.asarray(heldout)
    if len(ids) < 2:
        return {}
    if len(ids) > MAX_EVAL_IMAGES:
        ids = np.sort(np.random.default_rng(seed + 3).choice(ids, MAX_EVAL_IMAGES, replace=False))
    sr, tr = rows_of(src, ids), rows_of(tgt, ids)
    block = _block_rows(src.dim, tgt.dim, *(int(s.token_shape[0]) for s in (src, tgt)), side * side)
    cos: list[np.ndarray] = []
    resid = 0.0
    # Spread around the held-out tokens' mean, in one pass: Σ‖y‖² − n‖ȳ‖².
    sq, total, n = 0.0, np.zeros(tgt.dim, np.float64), 0
    for a in range(0, len(ids), block):
        X, Y = _matched(src, tgt, sr[a:a + block], tr[a:a + block], side)
        X, Y = X.reshape(-1, src.dim), Y.reshape(-1, tgt.dim)
        P = m.transform(X)
        cos.append(cosine_rows(P, Y))
        resid += float(np.square(P.astype(np.float64) - Y).sum())
        sq += float(np.square(Y.astype(np.float64)).sum())
        total += Y.sum(axis=0, dtype=np.float64)
        n += len(Y)
    spread = sq - float(total @ total) / n
    c = np.concatenate(cos)
    return {"token_n_heldout": int(n), "token_cosine_mean": float(c.mean()),
            "token_relative_mse": float(resid / spread) if spread > 0 else float("nan")}
