"""The map classes under scikit-learn's own contract, and the float32 apply path.

check_estimator runs scikit-learn's estimator checks (multi-output transformer tags, 1-D
targets, empty and non-finite input, unfitted use, pickling, clone); Pipeline, clone and
GridSearchCV are exercised with the provided cosine scorer. The float32 apply is compared with
the step-by-step float64 path it replaced, on real Lite0 → Lite2 embeddings.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.decomposition import PCA
from sklearn.exceptions import NotFittedError as SklearnNotFittedError
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import check_estimator

from stitchkit.errors import UsageError
from stitchkit.maps import (
    AffineMap,
    LinearMap,
    MapValueError,
    OrthogonalMap,
    RidgeMap,
    cosine_scorer,
    load_map,
)
from stitchkit.maps import functional as F
from stitchkit.store import EmbeddingStore

ALL = [OrthogonalMap, AffineMap, LinearMap, RidgeMap]


def _pair(n=300, dx=20, dy=12, seed=0, noise=0.3):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, dx)) * rng.uniform(0.5, 2, dx) + rng.uniform(-1, 1, dx)
    Y = X @ rng.standard_normal((dx, dy)) + 0.5 + noise * rng.standard_normal((n, dy))
    return X.astype(np.float32), Y.astype(np.float32)


@pytest.mark.parametrize("cls", ALL)
def test_passes_scikit_learns_estimator_checks(cls):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few-anchor warnings on the checks' tiny data sets
        check_estimator(cls())  # raises on the first failing check


@pytest.mark.parametrize("cls", ALL)
def test_errors_are_sklearn_types_and_carry_the_cli_message(cls):
    with pytest.raises(SklearnNotFittedError) as info:
        cls().transform(np.zeros((2, 3)))
    assert isinstance(info.value, UsageError) and "call fit first" in str(info.value)
    X, Y = _pair()
    m = cls().fit(X, Y)
    for bad, match in [
        (X[:, :7], "X has 7 features, but .* expecting 20"),
        (X[0], "Expected 2D array"),
        (np.full((3, 20), np.nan), "contains NaN"),
    ]:
        with pytest.raises(MapValueError, match=match) as info:
            m.transform(bad)
        assert isinstance(info.value, ValueError) and isinstance(info.value, UsageError)
        assert "\n" not in str(info.value) and "array=" not in str(info.value)
    with pytest.raises(ValueError, match="requires y"):
        cls().fit(X, None)
    with pytest.raises(ValueError, match="1 sample"):
        cls().fit(X[:1], Y[:1])


@pytest.mark.parametrize("cls", ALL)
def test_one_dimensional_target_is_one_column(cls):
    X, Y = _pair()
    a = cls().fit(X, Y[:, 0])
    b = cls().fit(X, Y[:, :1])
    assert a.n_features_out_ == 1 and a.transform(X).shape == (len(X), 1)
    np.testing.assert_array_equal(a.transform(X), b.transform(X))


def test_pipeline_and_clone():
    X, Y = _pair()
    pipe = Pipeline([("pca", PCA(8, random_state=0)), ("map", RidgeMap())]).fit(X, Y)
    by_hand = RidgeMap().fit(PCA(8, random_state=0).fit_transform(X), Y)
    np.testing.assert_allclose(pipe.transform(X), by_hand.transform(PCA(8, random_state=0).fit(X).transform(X)),
                               rtol=1e-5, atol=1e-6)
    c = clone(pipe)
    assert not hasattr(c.named_steps["map"], "W_")
    assert c.get_params()["map__alpha"] == "auto"
    assert list(pipe.get_feature_names_out()) == [f"ridgemap{i}" for i in range(12)]


def test_grid_search_with_the_cosine_scorer():
    X, Y = _pair(n=240, noise=2.0)
    grid = [1e-3, 30.0, 3000.0]
    cv = KFold(3, shuffle=True, random_state=0)
    search = GridSearchCV(AffineMap(), {"alpha": grid}, scoring=cosine_scorer, cv=cv).fit(X, Y)
    # The search's scores are the held-out mean cosines, computed here by hand.
    by_hand = []
    for alpha in grid:
        scores = []
        for tr, te in cv.split(X):
            m = AffineMap(alpha=alpha).fit(X[tr], Y[tr])
            P, T = m.transform(X[te]), Y[te]
            cos = (P * T).sum(1) / np.linalg.norm(P, axis=1) / np.linalg.norm(T, axis=1)
            scores.append(cos.mean())
        by_hand.append(np.mean(scores))
    np.testing.assert_allclose(search.cv_results_["mean_test_score"], by_hand, rtol=1e-5)
    assert search.best_params_["alpha"] == grid[int(np.argmax(by_hand))]
    assert search.best_estimator_.n_anchors_ == len(X)


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("opts", [{}, {"l2": True}, {"restore": False}, {"center": False, "standardize": False}])
def test_float32_apply_equals_the_float64_path(cls, opts):
    X, Y = _pair(noise=0.1)
    X = X * 3 + 10  # means large against the spread: the folded bias must not lose digits
    m = cls(**opts).fit(X, Y)
    out = m.transform(X)
    ref = F.apply_affine(X, m.W_, m.b_, m.pre_, l2=m.l2, restore=m.restore)
    assert out.dtype == np.float32 and m.matrix_.dtype == np.float32
    rel = np.linalg.norm(out - ref, axis=1) / np.linalg.norm(ref, axis=1)
    assert rel.max() < 1e-5


@pytest.mark.parametrize("method", ["ridge", "affine", "orthogonal"])
def test_float32_apply_on_real_embeddings(lite0_store, lite2_store, tmp_path, method):
    """Lite0 → Lite2 on Kermany images: the folded float32 map within 1e-5 of the float64 path."""
    from stitchkit.maps import AnchorPlan, fit_map

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # affine on 144 anchors for 1280 dimensions warns
        m = fit_map(lite0_store, lite2_store, method, plan=AnchorPlan(metrics=False))
    with EmbeddingStore(lite0_store) as s:
        X = s.read()
    out = m.transform(X)
    ref = F.apply_affine(X, m.W_, m.b_, m.pre_, l2=m.l2, restore=m.restore)
    rel = np.linalg.norm(out - ref, axis=1) / np.linalg.norm(ref, axis=1)
    assert rel.max() < 1e-5
    m.save(tmp_path / "m.map")
    np.testing.assert_array_equal(load_map(tmp_path / "m.map").transform(X), out)
