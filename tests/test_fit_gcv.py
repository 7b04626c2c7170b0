"""Ridge's alpha 'auto': GCV from one eigendecomposition of the streamed Gram matrix.

Checked against the hat matrix written out in full, and against scikit-learn's RidgeCV (its
efficient leave-one-out, gcv_mode 'svd' and 'eigen') on real Lite0 → Lite2 embeddings.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import RidgeCV

from stitchkit.maps import functional as F
from stitchkit.maps import load_map
from stitchkit.maps.estimators import AffineMap, LinearMap, RidgeMap
from stitchkit.store import EmbeddingStore


def _data(n: int, dx: int, dy: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, dx)) @ rng.standard_normal((dx, dx)) * 0.3 + 1.0
    Y = X @ rng.standard_normal((dx, dy)) + 3.0 * rng.standard_normal((n, dy))
    return X, Y


def _standardised(X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (X - X.mean(0)) / X.std(0), (Y - Y.mean(0)) / Y.std(0)


@pytest.mark.parametrize(("n", "dx", "bias"), [(300, 40, True), (30, 40, True), (200, 20, False)])
def test_gcv_curve_equals_the_hat_matrix_written_out(n, dx, bias):
    X, Y = _data(n, dx)
    m = (RidgeMap(rescale=False) if bias else LinearMap(alpha="auto")).fit(X, Y)
    Xs, Ys = _standardised(X, Y)
    Xc = Xs - Xs.mean(0) if bias else Xs
    scale = np.trace(Xc.T @ Xc) / dx
    expected = []
    for rel in F.ALPHA_GRID:
        H = Xc @ np.linalg.solve(Xc.T @ Xc + rel * scale * np.eye(dx), Xc.T)
        if bias:
            H += 1.0 / n  # the unpenalised intercept
        R = Ys - H @ Ys
        expected.append(n * np.square(R).sum() / (n - np.trace(H)) ** 2)
    if n <= 4 * dx:
        # Anchors near or below the dimension: the estimator chooses by 5 folds (GCV's alpha -> 0
        # limit is the interpolating fit there); the GCV curve itself still holds.
        assert m.alpha_selection_ == "5-fold"
        curve = F.ridge_gcv(F.SuffStats.from_arrays(Xs, Ys, exact=True), bias=bias).gcv
    else:
        assert m.alpha_selection_ == "gcv"
        assert m.alpha_relative_ == F.ALPHA_GRID[int(np.argmin(expected))]
        curve = m.cv_errors_
    # rtol: at the smallest alphas with n < dx both sides solve a nearly singular system.
    np.testing.assert_allclose(curve, expected, rtol=1e-5)


def test_gcv_solution_is_the_ridge_solution_at_its_alpha():
    X, Y = _data(200, 30)
    m = RidgeMap(rescale=False).fit(X, Y)
    fixed = AffineMap(alpha=m.alpha_).fit(X, Y)  # Cholesky path
    np.testing.assert_allclose(m.W_, fixed.W_, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(m.b_, fixed.b_, atol=1e-10)


def _real_pairs(lite0_store, lite2_store):
    with EmbeddingStore(lite0_store) as a, EmbeddingStore(lite2_store) as b:
        ids = np.intersect1d(a.ids.astype(str), b.ids.astype(str))
        X = a.read(a.index_of(ids)).astype(np.float64)
        Y = b.read(b.index_of(ids)).astype(np.float64)
    return X, Y


@pytest.mark.parametrize("gcv_mode", ["svd", "eigen"])
def test_auto_alpha_and_coefficients_against_sklearn_ridgecv_on_real_embeddings(
    lite0_store, lite2_store, gcv_mode
):
    """RidgeCV scores alphas by the exact leave-one-out error, GCV by its mean-leverage form.

    On these 180 anchors (fewer than the 1280 dimensions, leverages far from uniform) the two
    minima sit one grid step apart on a flat curve; the test pins that: the coefficients at
    either alpha are RidgeCV's, and GCV's alpha costs < 1 % in RidgeCV's own criterion.
    """
    X, Y = _real_pairs(lite0_store, lite2_store)
    assert X.shape == (180, 1280) and Y.shape == (180, 1280)
    # GCV itself, from one set of statistics (fit(X, Y) on fewer anchors than dimensions
    # chooses by 5 folds instead: RidgeMap.n_folds_for)
    m = RidgeMap(rescale=False).fit_stats(F.SuffStats.from_arrays(X, Y, exact=True))
    assert m.alpha_selection_ == "gcv" and RidgeMap().fit(X, Y).alpha_selection_ == "5-fold"
    # The map's own scaling: some Lite features are constant over these images (scale 1).
    Xs = (X - m.pre_.x_mean) / m.pre_.x_scale
    Ys = (Y - m.pre_.y_mean) / m.pre_.y_scale
    scale = np.square(Xs - Xs.mean(0)).sum() / X.shape[1]
    grid = np.array(F.ALPHA_GRID) * scale
    ref = RidgeCV(alphas=grid, gcv_mode=gcv_mode, store_cv_results=True).fit(Xs, Ys)
    loo = ref.cv_results_.mean(axis=tuple(range(ref.cv_results_.ndim - 1)))
    ours = int(np.argmin(np.abs(grid - m.alpha_)))
    theirs = int(np.argmin(np.abs(grid - ref.alpha_)))
    assert m.alpha_ == pytest.approx(grid[ours], rel=1e-9)
    assert abs(ours - theirs) <= 1
    assert loo[ours] <= 1.01 * loo.min()
    assert F.ALPHA_GRID[0] < m.alpha_relative_ < F.ALPHA_GRID[-1]  # a real choice, not an end
    at_ours = RidgeCV(alphas=[m.alpha_], gcv_mode=gcv_mode).fit(Xs, Ys)
    np.testing.assert_allclose(m.W_, at_ours.coef_.T, rtol=1e-6, atol=1e-9 * np.abs(m.W_).max())
    np.testing.assert_allclose(m.b_, at_ours.intercept_, atol=1e-9)
    at_theirs = RidgeMap(alpha=float(ref.alpha_), rescale=False).fit(X, Y)
    np.testing.assert_allclose(at_theirs.W_, ref.coef_.T, rtol=1e-6, atol=1e-9 * np.abs(m.W_).max())


def test_auto_alpha_and_coefficients_equal_sklearn_ridgecv_with_more_anchors_than_dimensions():
    # Leverages near uniform (n >> dx): GCV and leave-one-out choose the same alpha.
    for n, dx in [(300, 40), (2000, 100)]:
        X, Y = _data(n, dx, seed=n)
        m = RidgeMap(rescale=False).fit(X, Y)
        Xs, Ys = _standardised(X, Y)
        for mode in ("svd", "eigen"):
            ref = RidgeCV(alphas=np.array(F.ALPHA_GRID) * n, gcv_mode=mode).fit(Xs, Ys)
            assert m.alpha_ == pytest.approx(ref.alpha_, rel=1e-9)
            np.testing.assert_allclose(m.W_, ref.coef_.T, rtol=1e-7, atol=1e-12)
            np.testing.assert_allclose(m.b_, ref.intercept_, atol=1e-10)


def test_streamed_float32_statistics_choose_the_same_alpha(lite0_store, lite2_store):
    X, Y = _real_pairs(lite0_store, lite2_store)
    exact = RidgeMap().fit_stats(F.SuffStats.from_arrays(X, Y, exact=True))
    streamed = RidgeMap().fit_stats(F.SuffStats.from_arrays(X.astype(np.float32), Y.astype(np.float32),
                                                             chunk_size=64))
    assert streamed.alpha_relative_ == exact.alpha_relative_
    np.testing.assert_allclose(streamed.W_, exact.W_, atol=1e-4 * np.abs(exact.W_).max())


def test_gcv_reads_the_anchors_once_and_cv_k_keeps_k_fold():
    assert RidgeMap().n_folds_for(6000, 1280) == 1
    assert RidgeMap(cv=3).n_folds_for(6000, 1280) == 3
    # fewer anchors than dimensions: 3 folds choose (GCV's limit there is the interpolating fit)
    assert RidgeMap().n_folds_for(185, 1280) == 5
    # near the dimension too (GCV's mean-leverage form fails there: docs/maps.md), up to 4 D
    assert RidgeMap().n_folds_for(4 * 1280, 1280) == 5 and RidgeMap().n_folds_for(4 * 1280 + 1, 1280) == 1
    X, Y = _data(300, 40)
    ids = [f"s{i}" for i in range(len(X))]
    kfold = RidgeMap(cv=3).fit(X, Y, ids=ids)
    assert kfold.alpha_selection_ == "3-fold"
    assert len(kfold.cv_errors_) == len(F.ALPHA_GRID)
    assert AffineMap().fit(X, Y).alpha_selection_ is None


def test_alpha_selection_survives_save_and_load(tmp_path):
    X, Y = _data(200, 30)
    m = RidgeMap().fit(X, Y)
    back = load_map(m.save(tmp_path / "r.map"))
    assert back.alpha_selection_ == "gcv"
    assert back.alpha_ == pytest.approx(m.alpha_)
    np.testing.assert_allclose(back.cv_errors_, m.cv_errors_)


def test_gcv_avoids_the_collapse_where_anchors_equal_the_dimension():
    # n - 1 == dx: plain least squares interpolates noise; GCV must pick a real penalty.
    X, Y = _data(41, 40)
    m = RidgeMap(rescale=False).fit(X, Y)
    assert m.alpha_relative_ >= 1e-2
    Xt, Yt = _data(2000, 40, seed=0)
    err_ridge = np.square(m.transform(Xt) - Yt).mean()
    with pytest.warns(UserWarning, match="unstable|underdetermined"):
        err_plain = np.square(AffineMap(alpha=0.0).fit(X, Y).transform(Xt) - Yt).mean()
    assert err_ridge < err_plain


def test_rescale_gives_the_anchors_predictions_the_targets_spread():
    """Ridge shrinks predictions towards the target mean; rescale undoes it with one factor."""
    X, Y = _data(200, 30)
    plain = RidgeMap(alpha=50.0, rescale=False).fit(X, Y)
    m = RidgeMap(alpha=50.0).fit(X, Y)
    spread = lambda Z: np.square(Z - Z.mean(0)).sum()  # noqa: E731
    assert spread(plain.transform(X)) < 0.95 * spread(Y)  # the penalty shrinks
    assert spread(m.transform(X)) == pytest.approx(spread(Y), rel=1e-5)
    c = m.rescale_factor_
    assert c > 1.0
    # one factor on the deviations from the anchors' target mean, nothing else
    np.testing.assert_allclose(m.transform(X) - Y.mean(0), c * (plain.transform(X) - Y.mean(0)),
                               rtol=1e-4, atol=1e-4 * np.abs(Y).max())
    assert AffineMap(alpha=50.0).fit(X, Y).rescale_factor_ == 1.0  # off unless asked for
