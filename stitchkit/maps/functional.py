"""The maths of anchor maps as pure functions over sufficient statistics.

Every closed-form map here depends on the anchors only through a few sums: ``n``, ``Σx``,
``Σy``, ``XᵀX``, ``XᵀY`` and ``YᵀY``. :class:`SuffStats` accumulates them chunk by chunk
(memory O(D²) whatever the anchor count), merges across shards, and the solvers read nothing
else. Preprocessing (centring, standard scaling) is an affine change of coordinates, so it is
applied to the statistics rather than to the rows; only L2 normalisation, which is per row, has
to happen in the reader before :meth:`SuffStats.update`.

Precision: the sums are held in float64. Each chunk is shifted by a reference mean (taken
from the first chunk) and its sums and products are computed in single precision, then added
in float64. The shift removes the cancellation that ruins ``XᵀX − n·μμᵀ`` in float32; what is
left is a relative error of about 1e-6 per chunk, three times faster than float64 BLAS on
these machines (the products are the whole cost of a fit). ``exact=True`` does it in float64.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import numpy as np

from ..errors import UsageError


class MapValueError(UsageError, ValueError):
    """Bad input to a map. A ``ValueError`` for scikit-learn and notebook code, and a
    :class:`UsageError` for the command line, which prints its one-line message (exit 2)."""


class RankDeficientError(MapValueError):
    """The anchors carry no usable signal (e.g. XᵀY is zero)."""


@contextmanager
def _single_thread_lapack() -> Iterator[None]:
    """Run factorisations (SVD, eigh, Cholesky) on one BLAS thread.

    They are built from many small BLAS calls with a thread barrier after each; on a busy
    machine every barrier waits for a time slice. Measured on 2 loaded cores: Cholesky of a
    1280² matrix 4.6 s with two threads, 0.1 s with one; the SVD of 1280×384 14 s vs 0.3 s.
    Large matrix products keep every thread.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


# ---------------------------------------------------------------------------------------------
# sufficient statistics
# ---------------------------------------------------------------------------------------------
@dataclass
class SuffStats:
    """Sums over anchor pairs (x, y), taken around ``shift_x`` / ``shift_y`` (see module doc)."""

    n: int
    shift_x: np.ndarray
    shift_y: np.ndarray
    sum_x: np.ndarray
    sum_y: np.ndarray
    xtx: np.ndarray
    xty: np.ndarray
    yty: np.ndarray
    exact: bool = field(default=False, compare=False)

    @classmethod
    def zeros(cls, dx: int, dy: int, *, exact: bool = False) -> SuffStats:
        z = np.zeros
        return cls(0, z(dx), z(dy), z(dx), z(dy), z((dx, dx)), z((dx, dy)), z((dy, dy)), exact)

    @classmethod
    def from_arrays(
        cls, X: np.ndarray, Y: np.ndarray, *, chunk_size: int = 16384, exact: bool = False
    ) -> SuffStats:
        stats = cls.zeros(X.shape[1], Y.shape[1], exact=exact)
        for start in range(0, X.shape[0], chunk_size):
            stats.update(X[start : start + chunk_size], Y[start : start + chunk_size])
        return stats

    @property
    def dx(self) -> int:
        return self.sum_x.shape[0]

    @property
    def dy(self) -> int:
        return self.sum_y.shape[0]

    def update(self, X: np.ndarray, Y: np.ndarray) -> SuffStats:
        """Add the pairs (X[i], Y[i]) in place; returns self so calls can chain."""
        if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0]:
            raise ValueError(f"X {X.shape} and Y {Y.shape} must be (n, dx) and (n, dy) with the same n")
        if X.shape[1] != self.dx or Y.shape[1] != self.dy:
            raise ValueError(
                f"chunk widths {X.shape[1]} → {Y.shape[1]} differ from the statistics' "
                f"{self.dx} → {self.dy}"
            )
        m = X.shape[0]
        if m == 0:
            return self
        if self.n == 0:
            # Rounded to float32 so that the single-precision path subtracts it exactly.
            self.shift_x = X.mean(axis=0, dtype=np.float64).astype(np.float32).astype(np.float64)
            self.shift_y = Y.mean(axis=0, dtype=np.float64).astype(np.float32).astype(np.float64)
        dt = np.float64 if self.exact else np.float32
        dx = self.dx
        # Both shifted sides in one (m, dx + dy) buffer, so that XᵀY and YᵀY are one product
        # [X Y]ᵀ Y: a separate YᵀY (dy² output, long inner dimension) cost as much as XᵀY.
        B = np.empty((m, dx + self.dy), dtype=dt)
        np.subtract(X, self.shift_x.astype(dt), out=B[:, :dx], casting="unsafe")
        np.subtract(Y, self.shift_y.astype(dt), out=B[:, dx:], casting="unsafe")
        Xs, Ys = B[:, :dx], B[:, dx:]
        self.n += m
        sums = B.sum(axis=0, dtype=np.float64)
        self.sum_x += sums[:dx]
        self.sum_y += sums[dx:]
        self.xtx += Xs.T @ Xs
        g = B.T @ Ys
        self.xty += g[:dx]
        self.yty += g[dx:]
        return self

    def reshift(self, shift_x: np.ndarray, shift_y: np.ndarray) -> SuffStats:
        """The same statistics expressed as sums of ``x - shift_x`` and ``y - shift_y``."""
        dx_ = self.shift_x - shift_x
        dy_ = self.shift_y - shift_y
        if not dx_.any() and not dy_.any():  # the same shift: nothing to add (D² products saved)
            return replace(self, shift_x=self.shift_x.copy(), shift_y=self.shift_y.copy())
        n = self.n
        sx, sy = self.sum_x, self.sum_y
        return replace(
            self,
            shift_x=np.asarray(shift_x, dtype=np.float64).copy(),
            shift_y=np.asarray(shift_y, dtype=np.float64).copy(),
            sum_x=sx + n * dx_,
            sum_y=sy + n * dy_,
            xtx=_shifted_products(self.xtx, dx_, sx, sx, dx_, n),
            xty=_shifted_products(self.xty, dx_, sx, sy, dy_, n),
            yty=_shifted_products(self.yty, dy_, sy, sy, dy_, n),
        )

    def merge(self, other: SuffStats) -> SuffStats:
        """Statistics of the union of both anchor sets (a new object; shards reduce with it)."""
        if (self.dx, self.dy) != (other.dx, other.dy):
            raise ValueError(
                f"cannot merge statistics of {self.dx} → {self.dy} with {other.dx} → {other.dy}"
            )
        if other.n == 0:
            return replace(self)
        if self.n == 0:
            return replace(other, exact=self.exact)
        o = other.reshift(self.shift_x, self.shift_y)
        return replace(
            self,
            n=self.n + o.n,
            sum_x=self.sum_x + o.sum_x,
            sum_y=self.sum_y + o.sum_y,
            xtx=self.xtx + o.xtx,
            xty=self.xty + o.xty,
            yty=self.yty + o.yty,
        )

    # -- derived quantities -------------------------------------------------------------------
    @property
    def mean_x(self) -> np.ndarray:
        return self.shift_x + self.sum_x / max(self.n, 1)

    @property
    def mean_y(self) -> np.ndarray:
        return self.shift_y + self.sum_y / max(self.n, 1)

    def centred(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Centred Cxx, Cxy, Cyy (sums, not divided by n)."""
        n = max(self.n, 1)
        ax, ay = self.sum_x / n, self.sum_y / n
        return (
            self.xtx - n * np.outer(ax, ax),
            self.xty - n * np.outer(ax, ay),
            self.yty - n * np.outer(ay, ay),
        )

    def raw(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Uncentred XᵀX, XᵀY, YᵀY of the original rows."""
        z = self.reshift(np.zeros(self.dx), np.zeros(self.dy))
        return z.xtx, z.xty, z.yty

    def std_x(self) -> np.ndarray:
        # Only the diagonal of the centred Gram matrix: no D² temporaries.
        ax = self.sum_x / max(self.n, 1)
        return _std(np.diag(self.xtx) - self.n * ax * ax, self.n)

    def std_y(self) -> np.ndarray:
        ay = self.sum_y / max(self.n, 1)
        return _std(np.diag(self.yty) - self.n * ay * ay, self.n)


def _shifted_products(
    m: np.ndarray, da: np.ndarray, sa: np.ndarray, sb: np.ndarray, db: np.ndarray, n: int
) -> np.ndarray:
    """``Σ (a + da)(b + db)ᵀ`` from ``m = Σ a bᵀ``, ``sa = Σ a`` and ``sb = Σ b``: the rank-2
    update ``m + da (sb + n·db)ᵀ + sa dbᵀ``, as one product (three outer products cost 3×)."""
    return m + np.stack([da, sa], axis=1) @ np.stack([sb + n * db, db])


def _std(ss: np.ndarray, n: int) -> np.ndarray:
    std = np.sqrt(np.maximum(ss, 0.0) / max(n, 1))
    # A constant feature carries no signal; dividing by ~0 would only amplify rounding noise.
    std[std < 1e-12 * max(float(std.max(initial=0.0)), 1e-300)] = 1.0
    return std


def merge_all(parts: list[SuffStats]) -> SuffStats:
    total = parts[0]
    for part in parts[1:]:
        total = total.merge(part)
    return total


# ---------------------------------------------------------------------------------------------
# preprocessing
# ---------------------------------------------------------------------------------------------
@dataclass
class Preprocessing:
    """``x̃ = (x - x_mean) / x_scale``, ``ỹ = (y - y_mean) / y_scale``; identity where off."""

    x_mean: np.ndarray
    x_scale: np.ndarray
    y_mean: np.ndarray
    y_scale: np.ndarray


def preprocessing_from_stats(stats: SuffStats, *, center: bool, standardize: bool) -> Preprocessing:
    dx, dy = stats.dx, stats.dy
    return Preprocessing(
        x_mean=stats.mean_x.copy() if center else np.zeros(dx),
        x_scale=stats.std_x() if standardize else np.ones(dx),
        y_mean=stats.mean_y.copy() if center else np.zeros(dy),
        y_scale=stats.std_y() if standardize else np.ones(dy),
    )


def transform_stats(stats: SuffStats, pre: Preprocessing) -> SuffStats:
    """Statistics of the preprocessed rows (x̃, ỹ), with zero shift."""
    s = stats.reshift(pre.x_mean, pre.y_mean)
    ix, iy = 1.0 / pre.x_scale, 1.0 / pre.y_scale
    return replace(
        s,
        shift_x=np.zeros(stats.dx),
        shift_y=np.zeros(stats.dy),
        sum_x=s.sum_x * ix,
        sum_y=s.sum_y * iy,
        xtx=s.xtx * np.outer(ix, ix),
        xty=s.xty * np.outer(ix, iy),
        yty=s.yty * np.outer(iy, iy),
    )


def l2_normalize(X: np.ndarray, *, dtype: np.dtype | type | None = None) -> np.ndarray:
    """Rows (the last axis: vectors or tokens) scaled to unit length; zero rows stay zero."""
    X = np.asarray(X, dtype=dtype)
    return X / np.maximum(np.linalg.norm(X, axis=-1, keepdims=True), 1e-12)


# ---------------------------------------------------------------------------------------------
# solvers: each returns W (dx, dy) and b (dy,) for ỹ ≈ x̃ W + b in preprocessed coordinates
# ---------------------------------------------------------------------------------------------
def solve_orthogonal(
    stats: SuffStats, *, scale: bool = False, max_rank: int | None = None
) -> tuple[np.ndarray, np.ndarray, float]:
    """Procrustes: W = s·Q with Q the polar factor of XᵀY (zero-padding the smaller side).

    Zero-padding X or Y to a common width D and solving the square problem gives an
    orthogonal D×D matrix whose (dx, dy) block is the polar factor ``U Vᵀ`` of the thin SVD of
    XᵀY, so the block is computed directly. ``scale`` adds the least-squares isotropic factor
    ``s = Σσ / ‖X‖²``. Returns (W, b, s); the inverse map is ``Wᵀ / s²``.

    Where XᵀY has rank r below min(dx, dy) (fewer anchors than dimensions) the polar factor is
    not unique: any orthogonal completion of the r singular pairs fits the anchors equally
    well, and which one LAPACK returns depends on the BLAS kernel and thread count. The
    canonical answer returned then is the partial isometry ``U_r V_rᵀ`` on the anchors' span:
    directions no anchor spans map to zero, as the minimum-norm least-squares solution treats
    them. ``max_rank`` caps r (n − 1 for centred anchors: their sums cannot span more).
    """
    xtx, xty, _ = stats.raw()
    xtx_trace = float(np.trace(xtx))
    with _single_thread_lapack():
        U, sv, Vt = np.linalg.svd(xty, full_matrices=False)
    k = min(stats.dx, stats.dy)
    rank = orthogonal_rank(sv, exact=stats.exact, max_rank=stats.n if max_rank is None else max_rank)
    if rank == 0:
        raise RankDeficientError(
            "XᵀY of the anchors is zero: the two sides share no signal (check that the stores pair up)"
        )
    if rank < k:
        warnings.warn(
            f"the orthogonal map is not unique: XᵀY of {stats.n} anchors has rank {rank} < {k}; "
            "the map returned is the partial isometry on the anchors' span (directions no anchor "
            "spans map to zero, docs/maps.md); add anchors or use --method ridge",
            stacklevel=3,
        )
    Q = U[:, :rank] @ Vt[:rank]
    s = float(sv[:rank].sum() / xtx_trace) if scale and xtx_trace > 0 else 1.0
    return s * Q, np.zeros(stats.dy), s


def orthogonal_rank(sv: np.ndarray, *, exact: bool, max_rank: int) -> int:
    """How many singular values of XᵀY are signal: above rounding, and at most ``max_rank``.

    Single-precision sums leave singular values of ~1e-7 relative where the true ones are 0;
    n anchors (n − 1 once centred) span at most that many directions, however large the
    rounding of the rest.
    """
    if not sv.size or sv[0] <= 0:
        return 0
    tol = 1e-10 if exact else 1e-6
    return min(int((sv > sv[0] * tol).sum()), max(int(max_rank), 0))


def _chol_solve(A: np.ndarray, B: np.ndarray, *, exact: bool) -> np.ndarray | None:
    """Cholesky solve of a well-conditioned SPD system; None when it is (near) singular."""
    from scipy.linalg import LinAlgError, cho_factor, cho_solve, lapack

    with _single_thread_lapack():
        try:
            c, lower = cho_factor(A, lower=True, check_finite=False)
        except LinAlgError:
            return None
        rcond, info = lapack.dpocon(c, float(np.abs(A).sum(axis=0).max()), uplo="L")
        # Below this reciprocal condition number the rounding of the sums (about 1e-7
        # relative with single-precision chunk products) decides the answer, not the anchors.
        if info == 0 and rcond > (1e-13 if exact else 1e-9):
            return cho_solve((c, lower), B, check_finite=False)
    return None


def pinv_tolerance(exact: bool) -> float:
    """Eigenvalues of the Gram matrix below this fraction of the largest count as zero.

    numpy's lstsq cuts singular values of X at ``eps·max(n, d)`` relative; eigenvalues of XᵀX
    are their squares. Sums accumulated from single-precision chunk products carry a relative
    error of about 1e-7, so below ~1e-6 an eigenvalue is rounding, not signal.
    """
    return 1e-12 if exact else 1e-6


def _pinv_solve(A: np.ndarray, B: np.ndarray, *, exact: bool) -> np.ndarray:
    """Minimum-norm solution of ``A W = B`` for symmetric PSD ``A`` (pseudo-inverse by eigh).

    With A = XᵀX and B = XᵀY this is the minimum-norm least-squares solution that
    ``numpy.linalg.lstsq(X, Y)`` returns: directions no anchor spans (constant or collinear
    features, or fewer anchors than dimensions) get zero weight instead of failing.
    """
    from scipy.linalg import eigh

    with _single_thread_lapack():
        lam, V = eigh(A, driver="evd", check_finite=False)
    top = float(lam.max(initial=0.0))
    keep = lam > top * pinv_tolerance(exact) if top > 0 else np.zeros(lam.shape, dtype=bool)
    Vk = V[:, keep]
    return Vk @ ((Vk.T @ B) / lam[keep][:, None])


def gram(stats: SuffStats, *, bias: bool) -> tuple[np.ndarray, np.ndarray]:
    """Cxx, Cxy: centred when a bias is fitted (the bias then absorbs the means)."""
    if bias:
        cxx, cxy, _ = stats.centred()
    else:
        cxx, cxy, _ = stats.raw()
    return cxx, cxy


def solve_lstsq(
    stats: SuffStats, *, bias: bool = True, alpha: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Least squares ``min ‖X W + 1bᵀ − Y‖² + α‖W‖²`` (the bias is not penalised).

    With ``alpha == 0`` and a singular Gram matrix (fewer anchors than dimensions, constant or
    collinear features) the answer is the minimum-norm solution, as numpy's lstsq gives.
    """
    cxx, cxy = gram(stats, bias=bias)
    dx = stats.dx
    n_eff = stats.n - 1 if bias else stats.n
    if alpha < 0 or not math.isfinite(alpha):
        raise MapValueError(f"alpha must be a finite number ≥ 0, got {alpha}")
    if alpha == 0:
        if n_eff < 2 * dx:
            kind = "affine" if bias else "linear"
            what = "underdetermined, so the minimum-norm solution is used" if n_eff < dx else \
                "unstable near anchors ≈ dimension (it can collapse)"
            warnings.warn(
                f"{stats.n} anchors for {dx} dimensions: plain {kind} least squares is {what}; "
                "--method ridge is safer here",
                stacklevel=3,
            )
        W = None if n_eff < dx else _chol_solve(cxx, cxy, exact=stats.exact)
        if W is None:
            W = _pinv_solve(cxx, cxy, exact=stats.exact)
    else:
        W = _chol_solve(cxx + alpha * np.eye(dx), cxy, exact=stats.exact)
        if W is None:
            W = _pinv_solve(cxx + alpha * np.eye(dx), cxy, exact=stats.exact)
    b = stats.mean_y - stats.mean_x @ W if bias else np.zeros(stats.dy)
    return W, b


ALPHA_GRID = tuple(float(v) for v in np.logspace(-6, 2, 33))
"""Ridge penalties relative to the mean eigenvalue of the Gram matrix (trace / dx)."""


def alpha_scale(stats: SuffStats, *, bias: bool) -> float:
    """What a relative alpha is multiplied by: the Gram matrix's mean eigenvalue."""
    cxx, _ = gram(stats, bias=bias)
    return max(float(np.trace(cxx)) / stats.dx, 1e-300)


def ridge_cv_errors(
    train: SuffStats, val: SuffStats, rel_alphas: np.ndarray, *, bias: bool, dims: int | None = None
) -> np.ndarray:
    """Validation sum of squared errors for each relative alpha, from statistics alone.

    One eigendecomposition Cxx = V Λ Vᵀ of the training Gram matrix serves every alpha:
    W(α) = V (Λ + α)⁻¹ Vᵀ Cxy, and the validation error ``‖Y − XW‖²`` expands into traces of
    the validation sums, evaluated in O(D²) per alpha. ``dims`` is the width the relative
    alphas are measured against (the mean eigenvalue is trace / dims), when the statistics are
    those of rows projected onto a subspace (:func:`in_row_space`); by default their own width.
    """
    from scipy.linalg import eigh

    cxx, cxy = gram(train, bias=bias)
    with _single_thread_lapack():
        lam, V = eigh(cxx, driver="evd", check_finite=False)
    lam = np.maximum(lam, 0.0)
    if bias:
        # The fitted bias makes the prediction (x − μx) W + μy with the training means.
        v = val.reshift(train.mean_x, train.mean_y)
    else:
        v = val.reshift(np.zeros(val.dx), np.zeros(val.dy))
    P = V.T @ cxy
    A = V.T @ v.xtx @ V
    B = V.T @ v.xty
    H = A * (P @ P.T)
    r = (P * B).sum(axis=1)
    yy = float(np.trace(v.yty))
    scale = max(float(np.trace(cxx)) / (dims or train.dx), 1e-300)
    errors = np.empty(len(rel_alphas))
    for i, rel in enumerate(rel_alphas):
        d = 1.0 / (lam + rel * scale)
        errors[i] = yy - 2.0 * float(d @ r) + float(d @ H @ d)
    return errors


@dataclass
class RidgeGCV:
    """Ridge with alpha chosen by generalised cross-validation: what :func:`ridge_gcv` returns."""

    alpha_relative: float
    alpha: float
    gcv: np.ndarray  # the GCV estimate of the mean squared error per anchor, one per grid alpha
    W: np.ndarray
    b: np.ndarray


def ridge_gcv(
    stats: SuffStats, *, bias: bool, rel_alphas: tuple[float, ...] = ALPHA_GRID
) -> RidgeGCV:
    """Ridge whose alpha minimises GCV (Golub, Heath & Wahba 1979), from one eigendecomposition.

    With Cxx = V Λ Vᵀ and Z = Vᵀ Cxy, for every alpha, in O(D·D_out) and without the rows:

    * the training residual RSS(α) = RSS₀ + Σₖ ‖zₖ‖²/λₖ · (α / (λₖ + α))², where RSS₀ is the
      residual of plain least squares (``tr Cyy − Σₖ ‖zₖ‖²/λₖ``; it does not depend on α, so
      its rounding cannot move the choice);
    * the hat matrix's trace tr H(α) = [bias] + Σₖ λₖ / (λₖ + α);
    * GCV(α) = n · RSS(α) / (n − tr H(α))², the leave-one-out error with every leverage
      replaced by their mean (scikit-learn's RidgeCV computes the exact leave-one-out error
      from the rows; both agree where leverages are near uniform).

    ``n − tr H`` is summed as ``(n − [bias] − rank) + Σₖ α / (λₖ + α)`` so that it does not
    cancel near n ≈ rank, where plain least squares collapses (GCV is then large, not
    rounding noise). The solution at the chosen alpha reuses the decomposition:
    W = V (Λ + α)⁻¹ Z.
    """
    from scipy.linalg import eigh

    if bias:
        cxx, cxy, cyy = stats.centred()
    else:
        cxx, cxy, cyy = stats.raw()
    with _single_thread_lapack():
        lam, V = eigh(cxx, driver="evd", check_finite=False)
    lam = np.maximum(lam, 0.0)
    Z = V.T @ cxy
    z2 = np.einsum("ij,ij->i", Z, Z)
    top = float(lam.max(initial=0.0))
    # Eigenvalues at rounding level are directions no anchor spans: they carry no leverage,
    # and their ‖z‖² is rounding too (dividing it by λ ≈ 0 would be noise).
    keep = lam > top * pinv_tolerance(stats.exact) if top > 0 else np.zeros(lam.shape, dtype=bool)
    n = stats.n
    # n anchors span at most n − [bias] directions: eigenvalues beyond those are rounding of
    # the single-precision sums, however large. Counting them would make n − tr H negative
    # and GCV tiny at small alpha (eigh returns ascending order: drop the smallest).
    n_eff = max(n - (1 if bias else 0), 0)
    if int(keep.sum()) > n_eff:
        keep[: len(lam) - n_eff] = False
    lk, zk = lam[keep], z2[keep]
    rank = int(keep.sum())
    rss0 = max(float(np.trace(cyy)) - float((zk / lk).sum()), 0.0)
    scale = max(float(np.trace(cxx)) / stats.dx, 1e-300)
    grid = np.asarray(rel_alphas, dtype=np.float64)
    gcv = np.full(len(grid), np.inf)
    free = n - (1 if bias else 0) - rank
    n_gcv = n
    if free > 0 and rss0 <= pinv_tolerance(stats.exact) * max(float(np.trace(cyy)), 1e-300):
        # The anchors span fewer directions than they are (fewer anchors than dimensions
        # with repeats, or duplicate images) and Y lies in their span: those `free` degrees
        # of freedom carry no residual at any alpha, so counting them makes GCV vanish as
        # alpha -> 0 (interpolation looks perfect). GCV is taken over the spanned part.
        n_gcv = n - free
        free = 0
    for i, rel in enumerate(grid):
        a = rel * scale
        shrink = a / (lk + a)
        rss = rss0 + float((zk / lk * shrink * shrink).sum())
        dof_left = free + float(shrink.sum())
        if dof_left > 1e-12 * max(n, 1):
            gcv[i] = n_gcv * rss / (dof_left * dof_left)
    best = int(np.argmin(gcv)) if np.isfinite(gcv).any() else len(grid) - 1
    alpha = float(grid[best]) * scale
    W = V @ (Z / (lam + alpha)[:, None])
    b = stats.mean_y - stats.mean_x @ W if bias else np.zeros(stats.dy)
    return RidgeGCV(float(grid[best]), alpha, gcv, W, b)


def spread_factor(stats: SuffStats, W: np.ndarray, *, bias: bool, weights: np.ndarray) -> float:
    """The factor c that gives the fitted anchors' predictions the targets' own spread.

    A penalised fit predicts ``E[y | x]``, which is shrunk towards the target mean: the fitted
    deviations ``x̃ W`` of the anchors have the total variance ``tr(Wᵀ Cxx W)`` where the targets
    have ``tr(Cyy)``. Scored by cosine (retrieval, prompts), a shrunk prediction is dominated by
    the target mean, which is the same for every sample. ``c = sqrt(tr Cyy / tr(Wᵀ Cxx W))``,
    both traces weighted per output dimension by ``weights`` (the target scale², so that the
    spread is matched in the space the map writes to).
    """
    cxx, _, cyy = stats.centred() if bias else stats.raw()
    fitted = float(np.einsum("ij,ij,j->", W, cxx @ W, weights))
    total = float(np.diag(cyy) @ weights)
    if fitted <= 0 or total <= 0:
        return 1.0
    return math.sqrt(total / fitted)


def in_row_space(folds: list[SuffStats], *, bias: bool) -> list[SuffStats]:
    """The folds with x projected onto the span of all their rows, where that span is narrower
    than x: the same validation errors for every alpha, at the cost of the span's width.

    n anchors span at most n − 1 directions once centred (n without a bias), and a ridge map
    fitted on any fold is zero outside the training rows' span (a penalised least-squares
    solution lies in the row space), so coordinates along the top n − [bias] eigenvectors of
    the anchors' Gram matrix give every fold's errors exactly. The rest of the spectrum is
    the rounding of the sums (about 1e-7 relative), which the ridge solution should not see.
    One D×D eigendecomposition then replaces one per fold: with 16 anchors of 1,280
    dimensions, a fit's alpha costs a fifth of the time.
    """
    whole = merge_all([f for f in folds if f.n > 0])
    span = whole.n - (1 if bias else 0)
    if span >= whole.dx:
        return folds
    from scipy.linalg import eigh

    gram_x = whole.centred()[0] if bias else whole.raw()[0]
    with _single_thread_lapack():
        _, V = eigh(gram_x, subset_by_index=[whole.dx - max(span, 1), whole.dx - 1], check_finite=False)
    return [
        replace(f, shift_x=f.shift_x @ V, sum_x=f.sum_x @ V, xtx=V.T @ f.xtx @ V, xty=V.T @ f.xty)
        for f in folds
    ]


def choose_alpha(
    folds: list[SuffStats], *, bias: bool, rel_alphas: tuple[float, ...] = ALPHA_GRID
) -> tuple[float, np.ndarray]:
    """The relative alpha with the least K-fold validation error; also the error curve.

    Used when a K-fold choice is asked for (``cv=K``); the default is :func:`ridge_gcv`.
    """
    usable = [k for k, f in enumerate(folds) if f.n > 0]
    if len(usable) < 2:
        raise MapValueError(
            f"alpha 'auto' needs at least 2 non-empty folds of anchors, got {len(usable)}: "
            "add anchors or give --alpha"
        )
    grid = np.asarray(rel_alphas, dtype=np.float64)
    total = np.zeros(len(grid))
    dims = folds[0].dx
    folds = in_row_space(folds, bias=bias)
    for k in usable:
        train = merge_all([folds[j] for j in usable if j != k])
        total += ridge_cv_errors(train, folds[k], grid, bias=bias, dims=dims)
    total[~np.isfinite(total)] = np.inf
    best = int(np.argmin(total))
    return float(grid[best]), total / max(sum(folds[k].n for k in usable), 1)


# ---------------------------------------------------------------------------------------------
# applying a fitted map
# ---------------------------------------------------------------------------------------------
def fold_affine(
    W: np.ndarray, b: np.ndarray, pre: Preprocessing, *, restore: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """One matrix A and bias c with ``x A + c`` equal to preprocess → ``W``, ``b`` → restore.

    Computed once in float64 at fit (or load) time, so applying a map is one float32 product
    and one addition instead of four float64 passes over the rows.
    """
    A = W / pre.x_scale[:, None]
    c = b - (pre.x_mean / pre.x_scale) @ W
    if restore:
        A = A * pre.y_scale[None, :]
        c = c * pre.y_scale + pre.y_mean
    return A, c


def apply_folded(X: np.ndarray, A: np.ndarray, c: np.ndarray, *, l2: bool = False) -> np.ndarray:
    """``x A + c`` in float32 (A and c from :func:`fold_affine`, already float32)."""
    Z = np.asarray(X, dtype=np.float32)
    if l2:
        Z = l2_normalize(Z)
    if A.shape[1] == 1:
        # One output column is a matrix-vector product, whose BLAS kernel rounds tail rows
        # differently, so a row's value would depend on its position; in float64 it does not
        # (to float32 precision), and this product is memory-bound, so it costs nothing.
        out = (Z.astype(np.float64) @ A.astype(np.float64)).astype(np.float32)
    else:
        out = Z @ A
    out += c
    return out


def apply_affine(
    X: np.ndarray,
    W: np.ndarray,
    b: np.ndarray,
    pre: Preprocessing,
    *,
    l2: bool = False,
    restore: bool = True,
) -> np.ndarray:
    """The reference path in float64, step by step (what :func:`apply_folded` must equal)."""
    Z = np.asarray(X, dtype=np.float64)
    if l2:
        Z = l2_normalize(Z)
    Z = (Z - pre.x_mean) / pre.x_scale
    out = Z @ W + b
    if restore:
        out = out * pre.y_scale + pre.y_mean
    return out.astype(np.float32)


def invert_orthogonal(
    Y: np.ndarray, W: np.ndarray, b: np.ndarray, s: float, pre: Preprocessing, *, restore: bool = True
) -> np.ndarray:
    """x̃ = (ỹ − b) Wᵀ / s²: exact when dx == dy, the least-squares pre-image otherwise."""
    Z = np.asarray(Y, dtype=np.float64)
    if restore:
        Z = (Z - pre.y_mean) / pre.y_scale
    out = (Z - b) @ W.T / (s * s)
    return (out * pre.x_scale + pre.x_mean).astype(np.float32)
