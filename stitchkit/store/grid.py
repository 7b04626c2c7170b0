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
