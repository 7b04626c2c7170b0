"""Resampling square token grids (Lite0's 7×7 patch tokens onto Lite2's 9×9, and back).

Downsampling is area-weighted (each output cell averages the input cells it overlaps, by
overlap), upsampling bilinear at the cell centres (``align_corners=False``). Both are linear
with rows summing to one, so for an affine map ``resample(A x + b) = A resample(x) + b``:
fitting a map on resampled tokens (:mod:`stitchkit.maps.token_pairs`) and resampling mapped
tokens for a head (:mod:`stitchkit.head`) are the same thing.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import UsageError


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
    """(N, s², D) square-grid tokens resampled to (N, side_out², D) float32 ."""
    tokens = np.asarray(tokens, dtype=np.float32)
    side_in = math.isqrt(tokens.shape[1])
    if side_in * side_in != tokens.shape[1]:
        raise UsageError(f"{tokens.shape[1]} tokens are not a square grid: cannot resample them")
    if side_in == side_out:
        return tokens
    K = grid_matrix(side_in, side_out)
    return np.einsum("ot,ntd->nod", K, tokens, optimize=True).astype(np.float32, copy=False)


def pool_token_grid(tokens: np.ndarray, mask: np.ndarray | None, side: int, what: str = "the model"
                    ) -> tuple[np.ndarray, np.ndarray, int]:
    """Patch tokens (N, s², D) average-pooled onto a ``side``×``side`` grid as they are embedded
    (``stitch embed --token-grid``): (tokens (N, side², D) float32, their mask, s).

    The pooling is :func:`resample_tokens`' area-weighted downsampling: where ``side`` divides
    ``s`` it is the block mean (what ``adaptive_avg_pool2d`` gives); where it does not, each
    output cell averages the cells it overlaps by their overlap (9 → 4: 2¼ cells per output
    cell), so every input cell weighs the same and the grid's mean is kept exactly (a
    mean-pooled CNN's global is still the mean of its pooled tokens). ``adaptive_avg_pool2d``
    instead averages whole cells and counts the boundary cells in two windows. A grid finer
    than the model's, tokens that are not a square grid, or padded (word) tokens are refused in
    one line. The stored tokens never hold a class or register token (the encoders keep them
    apart: the global vector), so every token is a patch.
    """
    tokens = np.asarray(tokens)
    t = tokens.shape[1]
    s = math.isqrt(t)
    if mask is not None and not np.asarray(mask, dtype=bool).all():
        raise UsageError(f"{what} gives padded tokens (word tokens): token_grid (--token-grid) pools image "
                         "patch grids only")
    if s * s != t:
        raise UsageError(f"{what} gives {t} tokens per image, not a square patch grid: token_grid "
                         "(--token-grid) cannot pool them")
    if side > s:
        raise UsageError(f"token_grid {side}x{side} is finer than {what}'s {s}x{s} patch grid: "
                         f"choose at most {s}x{s}")
    out = resample_tokens(tokens, side)
    return out, np.ones(out.shape[:2], dtype=bool), s
