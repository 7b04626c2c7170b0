"""No map collapses where the anchors are about as many as the dimensions (issue 36).

Real Lite0 → Lite2 embeddings of the session's 760 Kermany images; the source is cut to its
first 300 channels so that counts on both sides of the dimension fit in them."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from stitchkit.maps import make_map
from stitchkit.maps.metrics import cosine_rows, relative_mse
from stitchkit.store.store import EmbeddingStore

DIM = 300
COUNTS = (150, 250, 300, 350, 500)
N_HELD = 160

pytestmark = pytest.mark.slow  # the session's real stores (760 images embedded once)


@pytest.fixture(scope="module")
def pairs(kermany_base: dict[str, Path]) -> tuple[np.ndarray, np.ndarray]:
    with EmbeddingStore(kermany_base["lite0"]) as a, EmbeddingStore(kermany_base["lite2"]) as b:
        assert list(a.ids) == list(b.ids)
        X, Y = a.read()[:, :DIM].astype(np.float64), b.read().astype(np.float64)
    order = np.random.default_rng(0).permutation(len(X))
    return X[order], Y[order]


def _held_out_cosine(pairs: tuple[np.ndarray, np.ndarray], method: str, **params: object) -> list[float]:
    X, Y = pairs
    held = slice(len(X) - N_HELD, None)
    out = []
    for n in COUNTS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # alpha=0 warns near n ≈ d, by design
            m = make_map(method, **params).fit(X[:n], Y[:n])
        out.append(float(cosine_rows(m.transform(X[held]), Y[held]).mean()))
    return out


@pytest.mark.parametrize("method", ["affine", "linear"])
def test_the_default_degrades_gracefully_at_the_dimension(pairs, method: str) -> None:
    cos = _held_out_cosine(pairs, method)
    # More anchors never cost more than 0.02 of held-out cosine, the dimension included.
    assert all(later >= earlier - 0.02 for earlier, later in zip(cos, cos[1:], strict=False)), cos
    assert cos[COUNTS.index(DIM)] > 0.75, cos


def test_exact_least_squares_is_what_collapses(pairs) -> None:
    cos = _held_out_cosine(pairs, "affine", alpha=0.0)
    at_d = cos[COUNTS.index(DIM)]
    assert at_d < min(cos[0], cos[-1]) - 0.2, cos  # the interpolation peak the default avoids


def test_relative_mse_follows_the_typical_row_not_the_worst(pairs) -> None:
    X, Y = pairs
    m = make_map("ridge").fit(X[:400], Y[:400])
    P, T = m.transform(X[-N_HELD:]), Y[-N_HELD:]
    before = relative_mse(P, T)
    P_bad = P.copy()
    P_bad[0] += 1e3 * np.abs(T).max()  # one far-off row, as a feature that fired once does
    assert 0 < before < 1
    assert relative_mse(P_bad, T) == pytest.approx(before, rel=0.05)
    summed = np.square(P_bad - T).sum() / np.square(T - T.mean(axis=0)).sum()
    assert summed > 100 * before  # what the sum of squares (1 − R²) would have reported


def test_the_levers_script_measures_as_stitch_fit_does(kermany_base: dict[str, Path]) -> None:
    """docs/cross-family.md's lever table comes from examples/cross-family/levers.py: its split,
    anchors, probe and metrics are the fit's own."""
    import importlib.util

    from stitchkit.maps import AnchorPlan, fit_map

    path = Path(__file__).resolve().parents[1] / "examples" / "cross-family" / "levers.py"
    spec = importlib.util.spec_from_file_location("cross_family_levers", path)
    levers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(levers)
    pair = levers.read_pair(kermany_base["lite0"], kermany_base["lite2"])
    ours = levers.measure(pair, "ridge", {}, "random", 200, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted = fit_map(kermany_base["lite0"], kermany_base["lite2"], "ridge",
                         plan=AnchorPlan(n_anchors=200, seed=1))
    for key in ("cosine_mean", "top1", "probe_auc_ratio"):
        assert ours[key] == pytest.approx(fitted.metrics_[key], abs=2e-3), key
