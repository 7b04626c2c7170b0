"""The map classes: scikit-learn's contract, transforms, inverses and files."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
from sklearn.base import clone

from stitchkit.errors import UsageError
from stitchkit.maps import AffineMap, LinearMap, OrthogonalMap, RidgeMap, load_map

ALL = [OrthogonalMap, AffineMap, LinearMap, RidgeMap]


def _pair(n=400, dx=20, dy=12, seed=0, noise=0.05):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, dx)) * rng.uniform(0.5, 2, dx) + rng.uniform(-1, 1, dx)
    Y = X @ rng.standard_normal((dx, dy)) + 0.5 + noise * rng.standard_normal((n, dy))
    return X.astype(np.float32), Y.astype(np.float32)


@pytest.mark.parametrize("cls", ALL)
def test_constructor_only_stores_parameters_and_clone_works(cls):
    m = cls()
    params = m.get_params()
    assert params and not any(k.endswith("_") for k in vars(m))
    c = clone(m)
    assert c.get_params() == params
    X, Y = _pair()
    assert m.fit(X, Y) is m
    assert {"W_", "b_", "n_anchors_", "n_features_in_", "source_space_", "metrics_"} <= set(vars(m))
    assert not hasattr(clone(m), "W_")


@pytest.mark.parametrize("cls", ALL)
def test_transform_before_fit_and_invalid_parameters(cls):
    with pytest.raises(UsageError, match="not fitted"):
        cls().transform(np.zeros((2, 3)))
    m = cls(center="yes")  # accepted at construction, refused at fit
    with pytest.raises(UsageError, match="invalid center"):
        m.fit(*_pair())


def test_invalid_alpha_is_refused_at_fit():
    m = AffineMap(alpha=-1.0)
    with pytest.raises(UsageError, match="invalid alpha"):
        m.fit(*_pair())


@pytest.mark.parametrize("cls", ALL)
def test_wrong_width_names_both_widths(cls):
    m = cls().fit(*_pair())
    with pytest.raises(UsageError, match="X has 7 features, but .* expecting 20 .* source side has width 20"):
        m.transform(np.zeros((3, 7)))


@pytest.mark.parametrize("cls", ALL)
def test_save_load_round_trip(cls, tmp_path):
    X, Y = _pair()
    m = cls().fit(X, Y)
    m.save(tmp_path / "m.map")
    back = load_map(tmp_path / "m.map")
    assert type(back) is cls and back.get_params() == m.get_params()
    out = back.transform(X[:50])
    assert out.dtype == np.float32 and out.shape == (50, 12)
    np.testing.assert_array_equal(out, m.transform(X[:50]))


def test_orthogonal_map_through_the_class_matches_scipy_after_standardising():
    X, Y = _pair(dx=16, dy=16)
    X64, Y64 = X.astype(np.float64), Y.astype(np.float64)
    Xs = (X64 - X64.mean(0)) / X64.std(0)
    Ys = (Y64 - Y64.mean(0)) / Y64.std(0)
    R, _ = scipy.linalg.orthogonal_procrustes(Xs, Ys)
    m = OrthogonalMap().fit(X, Y)
    np.testing.assert_allclose(m.W_, R, atol=1e-8)
    expected = (Xs @ R) * Y64.std(0) + Y64.mean(0)
    np.testing.assert_allclose(m.transform(X), expected, rtol=1e-5, atol=1e-5)


def test_orthogonal_inverse_round_trips_and_others_refuse():
    X, Y = _pair(dx=16, dy=16)
    m = OrthogonalMap(scale=True).fit(X, Y)
    np.testing.assert_allclose(m.inverse_transform(m.transform(X)), X, atol=1e-4)
    a = AffineMap().fit(X, Y)
    with pytest.raises(UsageError, match="no inverse"):
        a.inverse_transform(Y)


def test_l2_option_normalises_inputs():
    X, Y = _pair()
    m = AffineMap(l2=True).fit(X, Y)
    np.testing.assert_allclose(m.transform(X * 5.0), m.transform(X), atol=1e-5)


def test_restore_false_leaves_outputs_standardised():
    X, Y = _pair(noise=0.0)
    out = AffineMap(alpha=0.0, restore=False).fit(X, Y).transform(X)
    np.testing.assert_allclose(out.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(out.std(0), 1, atol=1e-3)


def test_ridge_auto_is_independent_of_row_order_given_ids():
    X, Y = _pair(n=300, dx=40, noise=1.0)
    ids = [f"s{i}" for i in range(len(X))]
    perm = np.random.default_rng(1).permutation(len(X))
    a = RidgeMap().fit(X, Y, ids=ids)
    b = RidgeMap().fit(X[perm], Y[perm], ids=[ids[i] for i in perm])
    assert a.alpha_ == pytest.approx(b.alpha_)
    np.testing.assert_allclose(a.W_, b.W_, atol=1e-9)


def test_ridge_beats_exact_least_squares_near_the_dimension():
    rng = np.random.default_rng(2)
    dx, dy = 60, 20
    W = rng.standard_normal((dx, dy))
    X = rng.standard_normal((70, dx))
    Y = X @ W + 2.0 * rng.standard_normal((70, dy))
    Xt = rng.standard_normal((500, dx))
    Yt = Xt @ W
    with pytest.warns(UserWarning):
        aff = AffineMap(alpha=0.0).fit(X, Y)
    ridge = RidgeMap().fit(X, Y)
    def err(m):
        return float(np.square(m.transform(Xt) - Yt).mean())
    assert err(ridge) < 0.5 * err(aff)
