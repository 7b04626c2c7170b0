"""The pure solvers against hand-written numpy / scipy references."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.linalg
from hypothesis import given, settings
from hypothesis import strategies as st

from stitchkit.maps import functional as F


def _data(n=300, dx=24, dy=16, seed=0, noise=0.1):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, dx)) * rng.uniform(0.5, 3, dx) + rng.uniform(-4, 4, dx)
    W = rng.standard_normal((dx, dy))
    Y = X @ W + rng.uniform(-2, 2, dy) + noise * rng.standard_normal((n, dy))
    return X, Y


def _stats(X, Y, exact=True, chunk=64):
    return F.SuffStats.from_arrays(X, Y, chunk_size=chunk, exact=exact)


@pytest.mark.parametrize("dx,dy", [(16, 16), (24, 16), (16, 24)])
def test_orthogonal_matches_scipy_with_zero_padding(dx, dy):
    X, Y = _data(dx=dx, dy=dy)
    d = max(dx, dy)
    Xp = np.hstack([X, np.zeros((len(X), d - dx))])
    Yp = np.hstack([Y, np.zeros((len(Y), d - dy))])
    R, _ = scipy.linalg.orthogonal_procrustes(Xp, Yp)
    W, b, s = F.solve_orthogonal(_stats(X, Y))
    np.testing.assert_allclose(W, R[:dx, :dy], atol=1e-10)
    assert s == 1.0 and not b.any()


def test_orthogonal_isotropic_scale_matches_reference():
    X, Y = _data(dx=12, dy=12)
    R, sv_sum = scipy.linalg.orthogonal_procrustes(X, Y)
    W, _, s = F.solve_orthogonal(_stats(X, Y), scale=True)
    # argmin_s ‖sXR − Y‖² = tr(RᵀXᵀY) / ‖X‖² = Σσ / ‖X‖²
    assert s == pytest.approx(sv_sum / np.square(X).sum(), rel=1e-10)
    np.testing.assert_allclose(W, s * R, atol=1e-10)


def test_affine_and_linear_match_lstsq():
    X, Y = _data()
    ref = np.linalg.lstsq(np.hstack([X, np.ones((len(X), 1))]), Y, rcond=None)[0]
    W, b = F.solve_lstsq(_stats(X, Y), bias=True)
    np.testing.assert_allclose(W, ref[:-1], atol=1e-8)
    np.testing.assert_allclose(b, ref[-1], atol=1e-7)
    W0, b0 = F.solve_lstsq(_stats(X, Y), bias=False)
    np.testing.assert_allclose(W0, np.linalg.lstsq(X, Y, rcond=None)[0], atol=1e-8)
    assert not b0.any()


def test_ridge_matches_closed_form_with_unpenalised_bias():
    X, Y = _data(n=40, dx=30)
    alpha = 7.5
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    W_ref = np.linalg.solve(Xc.T @ Xc + alpha * np.eye(X.shape[1]), Xc.T @ Yc)
    W, b = F.solve_lstsq(_stats(X, Y), bias=True, alpha=alpha)
    np.testing.assert_allclose(W, W_ref, atol=1e-9)
    np.testing.assert_allclose(b, Y.mean(0) - X.mean(0) @ W_ref, atol=1e-9)


def test_preprocessed_statistics_equal_statistics_of_preprocessed_rows():
    X, Y = _data()
    stats = _stats(X, Y)
    pre = F.preprocessing_from_stats(stats, center=True, standardize=True)
    np.testing.assert_allclose(pre.x_mean, X.mean(0), atol=1e-10)
    np.testing.assert_allclose(pre.x_scale, X.std(0), rtol=1e-10)
    Xt, Yt = (X - X.mean(0)) / X.std(0), (Y - Y.mean(0)) / Y.std(0)
    t = F.transform_stats(stats, pre)
    np.testing.assert_allclose(t.raw()[0], Xt.T @ Xt, atol=1e-8)
    np.testing.assert_allclose(t.raw()[1], Xt.T @ Yt, atol=1e-8)
    np.testing.assert_allclose(t.sum_x, 0, atol=1e-9)


def test_planted_affine_map_is_recovered_on_noiseless_data():
    X, Y = _data(noise=0.0, seed=3)
    rng = np.random.default_rng(3)
    W_true = rng.standard_normal((24, 16))
    b_true = rng.standard_normal(16)
    Y = X @ W_true + b_true
    W, b = F.solve_lstsq(_stats(X, Y), bias=True)
    np.testing.assert_allclose(W, W_true, atol=1e-8)
    np.testing.assert_allclose(b, b_true, atol=1e-7)


def test_planted_rotation_and_scale_are_recovered():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((200, 20))
    Q = np.linalg.qr(rng.standard_normal((20, 20)))[0]
    W, _, s = F.solve_orthogonal(_stats(X, 3.0 * X @ Q), scale=True)
    assert s == pytest.approx(3.0)
    np.testing.assert_allclose(W, 3.0 * Q, atol=1e-10)


@pytest.mark.parametrize("exact,tol", [(True, 1e-12), (False, 1e-5)])
def test_streaming_equals_in_memory(exact, tol):
    X, Y = _data(n=1000)
    one = _stats(X, Y, exact=True, chunk=len(X))
    for chunk in (1, 7, 333):
        s = _stats(X, Y, exact=exact, chunk=chunk)
        for a, b in zip(s.centred(), one.centred(), strict=True):
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol * np.abs(b).max())
        np.testing.assert_allclose(s.mean_x, X.mean(0), atol=tol * np.abs(X).max())


def test_single_precision_products_survive_a_large_mean():
    # float32 XᵀX − nμμᵀ without the shift loses everything when |μ| ≫ σ.
    rng = np.random.default_rng(5)
    X = rng.standard_normal((5000, 8)) + 1e4
    Y = rng.standard_normal((5000, 4)) - 1e4
    s = _stats(X, Y, exact=False, chunk=1000)
    np.testing.assert_allclose(s.centred()[0], np.cov(X.T, bias=True) * len(X), rtol=1e-4, atol=1)


@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(1, 99), max_size=5), seed=st.integers(0, 1000))
def test_merge_of_any_partition_equals_the_whole(cuts, seed):
    X, Y = _data(n=100, dx=5, dy=3, seed=seed)
    bounds = [0, *sorted(set(cuts)), 100]
    parts = [_stats(X[a:b], Y[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    merged = F.merge_all(parts)
    whole = _stats(X, Y)
    assert merged.n == 100
    for a, b in zip(merged.raw(), whole.raw(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-8)


def test_ridge_cv_errors_equal_brute_force():
    X, Y = _data(n=120, dx=30, noise=1.0)
    tr, va = slice(0, 80), slice(80, 120)
    train, val = _stats(X[tr], Y[tr]), _stats(X[va], Y[va])
    rel = np.array([1e-4, 1e-2, 1.0])
    got = F.ridge_cv_errors(train, val, rel, bias=True)
    Xc = X[tr] - X[tr].mean(0)
    scale = np.trace(Xc.T @ Xc) / X.shape[1]
    for r, e in zip(rel, got, strict=True):
        W, b = F.solve_lstsq(train, bias=True, alpha=r * scale)
        ref = np.square(Y[va] - (X[va] @ W + b)).sum()
        assert e == pytest.approx(ref, rel=1e-8)


@pytest.mark.parametrize("bias", [True, False])
def test_choose_alpha_in_the_row_space_equals_each_folds_own_solution(bias):
    """Fewer anchors than dimensions: the errors computed in the anchors' span are those of
    each fold's ridge solution in the full width, computed directly."""
    X, Y = _data(n=20, dx=30, noise=1.0)
    which = np.arange(20) % 4
    folds = [F.SuffStats.from_arrays(X[which == k], Y[which == k], exact=True) for k in range(4)]
    assert F.in_row_space(folds, bias=bias)[0].dx == 20 - bias
    grid = (1e-4, 1e-2, 1.0, 10.0)
    _, curve = F.choose_alpha(folds, bias=bias, rel_alphas=grid)
    expected = np.zeros(len(grid))
    for k in range(4):
        tr = which != k
        Xt = X[tr] - X[tr].mean(0) if bias else X[tr]
        scale = np.trace(Xt.T @ Xt) / X.shape[1]
        train = F.SuffStats.from_arrays(X[tr], Y[tr], exact=True)
        for i, rel in enumerate(grid):
            W, b = F.solve_lstsq(train, bias=bias, alpha=rel * scale)
            expected[i] += np.square(Y[~tr] - (X[~tr] @ W + b)).sum()
    np.testing.assert_allclose(curve * 20, expected, rtol=1e-7)


def test_auto_alpha_regularises_when_anchors_are_few_and_not_when_many():
    rng = np.random.default_rng(6)
    dx = 60
    W = rng.standard_normal((dx, 10))
    def folds(n):
        X = rng.standard_normal((n, dx))
        Y = X @ W + 3.0 * rng.standard_normal((n, 10))
        which = np.arange(n) % 3
        return [_stats(X[which == k], Y[which == k]) for k in range(3)]
    few, _ = F.choose_alpha(folds(50), bias=True)
    many, _ = F.choose_alpha(folds(6000), bias=True)
    assert few > 100 * many


def _lstsq_affine(X, Y):
    """numpy's minimum-norm least squares with a bias: centre, lstsq, bias from the means."""
    mx, my = X.mean(axis=0), Y.mean(axis=0)
    W = np.linalg.lstsq(X - mx, Y - my, rcond=None)[0]
    return W, my - mx @ W


@pytest.mark.parametrize("n, dx", [(20, 24), (5, 24), (25, 24), (200, 10)])
def test_affine_is_numpys_minimum_norm_least_squares_at_any_count(n, dx):
    X, Y = _data(n=n, dx=dx)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        W, b = F.solve_lstsq(_stats(X, Y), bias=True)
    W_ref, b_ref = _lstsq_affine(X, Y)
    np.testing.assert_allclose(W, W_ref, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(b, b_ref, rtol=1e-6, atol=1e-8)


def test_constant_and_collinear_features_get_the_minimum_norm_solution():
    X, Y = _data(n=200, dx=10)
    X[:, 3] = X[:, 2]  # collinear
    X[:, 7] = 4.0  # constant
    W, b = F.solve_lstsq(_stats(X, Y), bias=True)
    W_ref, b_ref = _lstsq_affine(X, Y)
    np.testing.assert_allclose(W, W_ref, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(b, b_ref, rtol=1e-6, atol=1e-8)
    # Minimum norm: the weight splits evenly over the twin columns, none on the constant one.
    np.testing.assert_allclose(W[2], W[3], atol=1e-8)
    assert np.abs(W[7]).max() < 1e-8
    W, _ = F.solve_lstsq(_stats(X, Y), bias=True, alpha=1.0)
    assert np.isfinite(W).all()


def test_fewer_anchors_than_dimensions_warns_and_names_ridge():
    X, Y = _data(n=20, dx=24)
    with pytest.warns(UserWarning, match="20 anchors for 24 dimensions.*minimum-norm.*ridge"):
        F.solve_lstsq(_stats(X, Y), bias=True)


def test_near_dimension_least_squares_warns():
    X, Y = _data(n=40, dx=24)
    with pytest.warns(UserWarning, match="unstable near anchors"):
        F.solve_lstsq(_stats(X, Y), bias=True)


def test_orthogonal_with_fewer_anchors_than_dims_warns_not_unique():
    X, Y = _data(n=10, dx=24, dy=24)
    with pytest.warns(UserWarning, match="not unique.*partial isometry"):
        W, _, _ = F.solve_orthogonal(_stats(X, Y))
    assert np.isfinite(W).all()


@pytest.mark.parametrize("exact", [True, False])
def test_underdetermined_orthogonal_is_the_partial_isometry_on_the_anchors_span(exact):
    """Fewer anchors than dimensions: U_r V_rᵀ of XᵀY, the rest of the space mapped to zero."""
    X, Y = _data(n=10, dx=24, dy=20, seed=3)
    U, sv, Vt = np.linalg.svd(X.T @ Y)  # rank 10: the reference keeps exactly those pairs
    reference = U[:, :10] @ Vt[:10]
    with pytest.warns(UserWarning, match="rank 10 < 20"):
        W, _, _ = F.solve_orthogonal(_stats(X, Y, exact=exact))
    np.testing.assert_allclose(W, reference, atol=1e-9 if exact else 1e-5)
    # a partial isometry: lengths kept on the anchors' span, zero on its complement
    Q, _ = np.linalg.qr(X.T)
    outside = np.random.default_rng(0).standard_normal(24)
    outside -= Q @ (Q.T @ outside)
    assert np.linalg.norm(outside @ W) < 1e-6 * np.linalg.norm(outside)
    np.testing.assert_allclose(np.linalg.norm(X @ W, axis=1), np.linalg.norm(X, axis=1), rtol=1e-5)


def test_underdetermined_orthogonal_does_not_depend_on_row_order_or_chunks():
    X, Y = _data(n=12, dx=30, dy=30, seed=5)
    perm = np.random.default_rng(1).permutation(len(X))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        W1, _, _ = F.solve_orthogonal(_stats(X, Y, exact=False, chunk=5))
        W2, _, _ = F.solve_orthogonal(_stats(X[perm], Y[perm], exact=False, chunk=7))
    assert np.linalg.norm(W1 - W2) <= 1e-5 * np.linalg.norm(W1)


def test_centred_orthogonal_map_keeps_n_minus_one_directions():
    """n centred anchors span n − 1 directions: the map's rank says so, whatever the rounding."""
    from stitchkit.maps import OrthogonalMap

    X, Y = _data(n=9, dx=40, dy=40, seed=2)
    with pytest.warns(UserWarning, match="rank 8 < 40"):
        m = OrthogonalMap().fit(X, Y)
    assert np.linalg.matrix_rank(m.W_, tol=1e-6) == 8
