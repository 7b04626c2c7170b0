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
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import clone

from ..errors import UsageError
from ..store import require_finite
from . import functional as F
from .anchors import fold_of, rows_of
from .estimators import BaseMap, make_map
from .metrics import cosine_rows
from .plan import _space, choose_anchors, evaluate, plan_anchors, prepare_heldout, refit_folds
from .stream import ProgressFn, StoreLike, _opened
from .tokens import read_tokens

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
    _, mask = read_tokens(store, probe)
    if not mask.all():
        raise UsageError(
            f"{what} {store.path} has padded tokens (word tokens with a mask): --tokens matches "
            "square patch grids only"
        )
    return side


def resample_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights resampling one axis of a grid; every row sums to one.

    Area-weighted when shrinking (output cell ``i`` covers ``[i, i+1) · n_in / n_out`` and
    averages the input cells it overlaps, by overlap, which keeps the mean of the grid
    exactly); bilinear at the cell centres when growing (``align_corners=False``, edges
    clamped); the identity when equal.
    """
    if n_in == n_out:
        return np.eye(n_in, dtype=np.float64)
    R = np.zeros((n_out, n_in), dtype=np.float64)
    if n_out < n_in:
        step = n_in / n_out
        for i in range(n_out):
            lo, hi = i * step, (i + 1) * step
            for k in range(int(math.floor(lo)), int(math.ceil(hi))):
                R[i, k] = min(hi, k + 1) - max(lo, k)
    else:
        for i in range(n_out):
            x = min(max((i + 0.5) * n_in / n_out - 0.5, 0.0), n_in - 1.0)
            k = int(math.floor(x))
            f = x - k
            R[i, k] += 1.0 - f
            if f > 0:
                R[i, k + 1] += f
    return R / R.sum(axis=1, keepdims=True)


def grid_matrix(side_in: int, side_out: int) -> np.ndarray:
    """(side_out², side_in²) float32 resampling a row-major square grid (separable in y, x)."""
    R = resample_matrix(side_in, side_out)
    return np.kron(R, R).astype(np.float32)


def resample_tokens(tokens: np.ndarray, side_out: int) -> np.ndarray:
    """(N, s², D) square-grid tokens resampled to (N, side_out², D) float32 (see the module doc)."""
    tokens = np.asarray(tokens, dtype=np.float32)
    side_in = math.isqrt(tokens.shape[1])
    if side_in * side_in != tokens.shape[1]:
        raise UsageError(f"{tokens.shape[1]} tokens are not a square grid: cannot resample them")
    if side_in == side_out:
        return tokens
    K = grid_matrix(side_in, side_out)
    return np.einsum("ot,ntd->nod", K, tokens, optimize=True).astype(np.float32, copy=False)


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
    xs, _ = read_tokens(src, src_rows)
    ys, _ = read_tokens(tgt, tgt_rows)
    return resample_tokens(xs, side), resample_tokens(ys, side)


def fit_token_map(
    source: StoreLike,
    target: StoreLike,
    *,
    grid: str = "target",
    pooled_weight: int = 0,
    method: str = "ridge",
    alpha: float | str | None = None,
    scale: bool | None = None,
    rescale: bool | None = None,
    center: bool = True,
    standardize: bool = True,
    restore: bool = True,
    anchors: str | os.PathLike | Sequence[str] | None = None,
    n_anchors: int | None = None,
    strategy: str = "random",
    holdout: float = 0.2,
    seed: int = 0,
    cv: int | None = None,
    exact: bool = False,
    metrics: bool = True,
    progress: ProgressFn | None = None,
    refit: bool = True,
) -> BaseMap:
    """Fit an affine map on spatially matched token pairs of the images both stores share.

    ``grid``: which grid the pairs are matched on (see the module doc). ``pooled_weight=w``
    adds every fit image's pooled pair ``w`` times beside its tokens (0: tokens only). The
    other arguments are :func:`stitchkit.maps.fit_map`'s; the anchors are images (ids), the
    holdout is a set of whole images. The result records what it was fitted on in
    ``anchors_["tokens"]``.
    """
    if pooled_weight < 0:
        raise UsageError(f"pooled weight must be ≥ 0, got {pooled_weight}")
    params = dict(center=center, standardize=standardize, restore=restore, alpha=alpha,
                  scale=scale, cv=cv, rescale=rescale,
                  random_state=seed if method in ("affine", "linear", "ridge") else None)
    m = make_map(method, **params)
    m._validate_params()
    with _opened(source) as src, _opened(target) as tgt:
        s_src, s_tgt = grid_side(src, "source"), grid_side(tgt, "target")
        side = choose_grid(grid, s_src, s_tgt)
        plan = plan_anchors(src, tgt, anchors=anchors, holdout=holdout, seed=seed)
        ids = choose_anchors(src, plan, n_anchors, strategy=strategy, seed=seed)
        if len(ids) < 2:
            raise UsageError(f"{len(ids)} anchor image(s) left after the holdout: a map needs at least 2")
        n_folds = m.n_folds_for(len(ids) * side * side, src.dim)  # every token pair is a sample
        pairs = TokenPairs(src, tgt, side, pooled_weight=pooled_weight, seed=seed, exact=exact)
        folds = pairs.accumulate(ids, n_folds, progress)
        t = side * side
        m.fit_stats(folds)
        measured = {}
        if metrics:
            held = prepare_heldout(src, tgt, plan, seed=seed, l2=False)
            measured = {**evaluate(m, held), **token_metrics(m, src, tgt, plan.heldout, side, seed)}
        n_refit = 0
        if refit and len(plan.heldout):
            union = refit_folds(m, folds, pairs.accumulate(plan.heldout, n_folds, None), src.dim)
            m = clone(m).fit_stats(union)
            n_refit = int(len(ids) + len(plan.heldout))
        m.source_space_ = _space(src)
        m.target_space_ = _space(tgt)
        m.anchors_ = {
            "n_fit": int(len(ids)),
            "n_pool": int(len(plan.pool)),
            "n_heldout": int(len(plan.heldout)),
            "strategy": strategy if n_anchors is not None else "all",
            "seed": seed,
            "holdout": holdout,
            "from": str(anchors) if isinstance(anchors, str | os.PathLike) else (
                "list" if anchors is not None else "shared ids"),
            "pool_by": None,
            "n_refit": n_refit,
            "tokens": {
                "grid": [side, side],
                "grid_choice": grid,
                "source_grid": [s_src, s_src],
                "target_grid": [s_tgt, s_tgt],
                "resample": {"source": _how(s_src, side), "target": _how(s_tgt, side)},
                "n_token_pairs": int(len(ids) * t),
                "pooled_weight": int(pooled_weight),
                "alpha_folds": "by image" if n_folds > 1 else None,
                "affine": True,
            },
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
