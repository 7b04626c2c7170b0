"""fit_map / apply_map / sweep over real HDF5 stores (synthetic and real embeddings)."""

from __future__ import annotations

import warnings

import h5py
import numpy as np
import pytest
import scipy.linalg

from stitchkit.errors import ProvenanceError, StoreError, UsageError
from stitchkit.maps import (
    AffineMap,
    AnchorPlan,
    LinearMap,
    OrthogonalMap,
    ReadOptions,
    apply_map,
    fit_map,
    load_map,
    make_map,
)
from stitchkit.maps.sweep import SweepGrid, summarize, sweep, write_table
from stitchkit.report.sweep_plot import plot_sweep
from stitchkit.store import EmbeddingStore, write_store


def _planted(n=600, dx=24, dy=16, seed=0, noise=0.05):
    rng = np.random.default_rng(seed)
    labels = np.array(["normal", "pneumonia"])[rng.integers(0, 2, n)]
    X = rng.standard_normal((n, dx)) + (labels == "pneumonia")[:, None] * 0.8
    Y = X @ rng.standard_normal((dx, dy)) + 1.0 + noise * rng.standard_normal((n, dy))
    ids = np.array([f"img{i:05d}" for i in range(n)], dtype=object)
    return ids, X.astype(np.float32), Y.astype(np.float32), labels


def _write(path, ids, E, labels=None, spec="src-model", sha="aaa", groups=None):
    cols = {}
    if labels is not None:
        cols["labels"] = list(labels)
    if groups is not None:
        cols["groups"] = list(groups)
    return write_store(path, list(ids), E, attrs={"model_spec": spec, "weights_sha256": sha,
                                                   "modality": "image"}, columns=cols)


@pytest.fixture
def stores(tmp_path):
    ids, X, Y, labels = _planted()
    src = _write(tmp_path / "src.h5", ids, X, labels)
    # The target lists its rows in another order and has extra samples: the join is by id.
    perm = np.random.default_rng(9).permutation(len(ids))
    extra = np.array([f"extra{i}" for i in range(5)], dtype=object)
    tgt = _write(tmp_path / "tgt.h5", np.r_[ids[perm], extra],
                 np.r_[Y[perm], np.ones((5, Y.shape[1]), np.float32)],
                 np.r_[labels[perm], ["normal"] * 5], spec="tgt-model", sha="bbb")
    return src, tgt, (ids, X, Y, labels)


def test_streaming_fit_equals_in_memory_fit_on_the_same_anchors(stores):
    src, tgt, (ids, X, Y, _) = stores
    m = fit_map(src, tgt, "affine", plan=AnchorPlan(holdout=0.0), read=ReadOptions(chunk_size=37, exact=True))
    ref = AffineMap().fit(X, Y)
    np.testing.assert_allclose(m.W_, ref.W_, atol=1e-9)
    np.testing.assert_allclose(m.b_, ref.b_, atol=1e-9)
    mixed = fit_map(src, tgt, "affine", plan=AnchorPlan(holdout=0.0), read=ReadOptions(chunk_size=37))
    np.testing.assert_allclose(mixed.W_, ref.W_, atol=1e-4)


def test_orthogonal_fit_from_stores_matches_scipy(stores):
    src, tgt, (ids, X, Y, _) = stores
    m = fit_map(src, tgt, make_map("orthogonal", center=False, standardize=False), plan=AnchorPlan(holdout=0.0), read=ReadOptions(exact=True))
    R, _ = scipy.linalg.orthogonal_procrustes(X.astype(float), np.c_[Y, np.zeros((len(Y), 8))])
    np.testing.assert_allclose(m.W_, R[:, :16], atol=1e-9)


def test_anchor_order_in_the_stores_does_not_change_the_map(stores, tmp_path):
    src, tgt, (ids, X, Y, labels) = stores
    perm = np.random.default_rng(3).permutation(len(ids))
    src2 = _write(tmp_path / "src2.h5", ids[perm], X[perm], labels[perm])
    a = fit_map(src, tgt, "ridge", plan=AnchorPlan(n_anchors=200, seed=4))
    b = fit_map(src2, tgt, "ridge", plan=AnchorPlan(n_anchors=200, seed=4))
    assert a.alpha_ == pytest.approx(b.alpha_)
    # Single-precision chunk sums differ in their last bits with the row order; GCV's alpha
    # here is small enough that W carries them at about 1e-6 of its largest entry.
    np.testing.assert_allclose(a.W_, b.W_, rtol=1e-5, atol=1e-6 * np.abs(a.W_).max())
    assert a.metrics_["top1"] == pytest.approx(b.metrics_["top1"])


def test_metrics_are_stored_and_sensible(stores, tmp_path):
    src, tgt, _ = stores
    m = fit_map(src, tgt, "ridge", plan=AnchorPlan(holdout=0.25, seed=0))
    q = m.metrics_
    assert q["n_heldout"] == 150
    assert q["cosine_mean"] > 0.99 and q["relative_mse"] < 0.01 and q["top1"] > 0.9
    assert 0.9 < q["probe_auc_ratio"] < 1.1 and q["probe_n_train"] == 450
    assert m.source_space_["model_spec"] == "src-model" and m.target_space_["weights_sha256"] == "bbb"
    m.save(tmp_path / "m.map")
    assert load_map(tmp_path / "m.map").metrics_ == pytest.approx(q, nan_ok=True)


def test_a_wrong_pairing_scores_badly(stores, tmp_path):
    src, _, (ids, X, Y, labels) = stores
    shuffled = np.random.default_rng(0).permutation(len(ids))
    bad = _write(tmp_path / "bad.h5", ids, Y[shuffled], labels, spec="tgt-model")
    q = fit_map(src, bad, "ridge").metrics_
    assert q["top1"] < 0.05 and q["cosine_mean"] < 0.5


def test_anchor_file_and_selection(stores, tmp_path):
    src, tgt, (ids, *_rest) = stores
    (tmp_path / "a.txt").write_text("\n".join(ids[:100]))
    m = fit_map(src, tgt, "orthogonal", plan=AnchorPlan(anchors=tmp_path / "a.txt", holdout=0.2, refit=False))
    assert m.anchors_["n_pool"] == 100 and m.n_anchors_ == 80 and m.anchors_["n_refit"] == 0
    m = fit_map(src, tgt, "ridge", plan=AnchorPlan(n_anchors=50, strategy="stratified", refit=False))
    assert m.n_anchors_ == 50 and m.anchors_["strategy"] == "stratified"
    (tmp_path / "b.txt").write_text("nope\n")
    with pytest.raises(StoreError, match="ids not found"):
        fit_map(src, tgt, plan=AnchorPlan(anchors=tmp_path / "b.txt"))


def test_clear_errors(stores, tmp_path):
    src, tgt, (ids, X, Y, labels) = stores
    other = _write(tmp_path / "other.h5", [f"x{i}" for i in range(10)], X[:10])
    with pytest.raises(UsageError, match="share no ids"):
        fit_map(src, other)
    Xn = X.copy()
    Xn[7, 3] = np.nan
    nan = _write(tmp_path / "nan.h5", ids, Xn, labels)
    with pytest.raises(StoreError, match="NaN or Inf.*img00007"):
        fit_map(nan, tgt, plan=AnchorPlan(holdout=0.0))
    with pytest.warns(UserWarning, match="underdetermined, so the minimum-norm solution.*ridge"):
        fit_map(src, tgt, AffineMap(alpha=0.0), plan=AnchorPlan(n_anchors=20))
    with pytest.raises(UsageError, match="only"):
        fit_map(src, tgt, plan=AnchorPlan(n_anchors=10_000))


def test_apply_writes_a_target_space_store_and_checks_provenance(stores, tmp_path):
    src, tgt, (ids, X, Y, labels) = stores
    m = fit_map(src, tgt, "ridge")
    m.save(tmp_path / "m.map")
    out = tmp_path / "out.h5"
    result = apply_map(tmp_path / "m.map", src, out, chunk_size=100)
    assert result["samples"] == len(ids)
    with EmbeddingStore(out) as s:
        assert s.model_spec == "tgt-model" and s.attrs["weights_sha256"] == "bbb"
        assert s.attrs["map"] == str(tmp_path / "m.map") and s.attrs["source"] == str(src)
        assert list(s.ids) == list(ids) and list(s.labels) == list(labels)
        # float32 products of 100-row chunks and of all rows round differently (BLAS tails)
        np.testing.assert_allclose(s.read(), m.transform(X), rtol=1e-5, atol=1e-5)
    # a store of another model is refused, unless forced
    alien = _write(tmp_path / "alien.h5", ids, X, spec="another-model")
    with pytest.raises(ProvenanceError, match="another-model.*model_spec differs.*--force"):
        apply_map(tmp_path / "m.map", alien, tmp_path / "x.h5")
    apply_map(tmp_path / "m.map", alien, tmp_path / "x.h5", force_space=True)
    narrow = _write(tmp_path / "narrow.h5", ids, X[:, :5])
    with pytest.raises(ProvenanceError, match="widths differ"):
        apply_map(tmp_path / "m.map", narrow, tmp_path / "y.h5", force_space=True)


def test_pool_by_group_averages_views(tmp_path):
    ids, X, Y, labels = _planted(n=400)
    groups = [f"study{i // 2}" for i in range(400)]
    src = _write(tmp_path / "s.h5", ids, X, labels, groups=groups)
    tgt = _write(tmp_path / "t.h5", ids, Y, labels, groups=groups, spec="t")
    m = fit_map(src, tgt, "affine", plan=AnchorPlan(pool_by="group", holdout=0.0), read=ReadOptions(exact=True))
    assert m.n_anchors_ == 200
    Xg = X.reshape(200, 2, -1).mean(1)
    Yg = Y.reshape(200, 2, -1).mean(1)
    np.testing.assert_allclose(m.W_, AffineMap().fit(Xg, Yg).W_, atol=1e-6)


@pytest.mark.slow
def test_sweep_table_and_plot(stores, tmp_path):
    src, tgt, _ = stores
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = sweep(src, tgt, SweepGrid(n_anchors=[20, 100], methods=["orthogonal", "affine", "ridge"],
                                         seeds=[0, 1]))
    assert len(rows) == 12
    # Affine at 20 anchors (fewer than the dimension) is stabilised (alpha 'stable'): no note.
    assert not [r for r in rows if "error" in r]
    assert not [r for r in rows if "minimum-norm" in r.get("note", "")]
    assert {r["alpha_relative"] for r in rows if r["method"] == "affine"} == {0.1}
    summary = summarize(rows)
    ridge100 = next(e for e in summary if e["method"] == "ridge" and e["n_anchors"] == 100)
    assert ridge100["n_seeds"] == 2 and ridge100["top1_mean"] > 0.5
    write_table(summary, tmp_path / "s.csv")
    assert (tmp_path / "s.csv").read_text().startswith("method,n_anchors")
    plot_sweep(summary, tmp_path / "s.png")
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


def test_plain_hdf5_without_provenance_warns_on_apply(tmp_path):
    ids, X, Y, _ = _planted(n=200)
    with h5py.File(tmp_path / "p.h5", "w") as h:
        h["embeddings"] = X
        h["ids"] = np.array(ids, dtype=h5py.string_dtype())
    tgt = _write(tmp_path / "t.h5", ids, Y, spec="t")
    m = fit_map(tmp_path / "p.h5", tgt, "orthogonal")
    with pytest.warns(UserWarning, match="provenance unknown"):
        apply_map(m, tmp_path / "p.h5", tmp_path / "o.h5")


# -- real embeddings of the packaged models ---------------------------------------------------
@pytest.mark.slow
def test_real_lite0_to_lite2_methods_match_references(lite0_store, lite2_store):
    with EmbeddingStore(lite0_store) as a, EmbeddingStore(lite2_store) as b:
        ids = np.intersect1d(a.ids.astype(str), b.ids.astype(str))
        X = a.read(a.index_of(ids)).astype(np.float64)
        Y = b.read(b.index_of(ids)).astype(np.float64)
    # Least squares needs more anchors than dims, and EfficientNet has dead (constant)
    # features that make any Gram matrix singular: use the 64 / 48 most variable coordinates.
    x = X[:, np.sort(np.argsort(X.std(0))[-64:])]
    y = Y[:, np.sort(np.argsort(Y.std(0))[-48:])]
    ref = np.linalg.lstsq(np.c_[x, np.ones(len(x))], y, rcond=None)[0]
    aff = AffineMap(alpha=0.0, standardize=False, center=False).fit(x, y)
    np.testing.assert_allclose(aff.W_, ref[:-1], rtol=1e-6, atol=1e-8)
    R, _ = scipy.linalg.orthogonal_procrustes(x, np.c_[y, np.zeros((len(y), 16))])
    o = OrthogonalMap(standardize=False, center=False).fit(x, y)
    np.testing.assert_allclose(o.W_, R[:, :48], atol=1e-8)
    # With the default standard scaling: scipy on standardised rows, zero-padded.
    xs, ys = (x - x.mean(0)) / x.std(0), (y - y.mean(0)) / y.std(0)
    R, _ = scipy.linalg.orthogonal_procrustes(xs, np.c_[ys, np.zeros((len(ys), 16))])
    np.testing.assert_allclose(OrthogonalMap().fit(x, y).W_, R[:, :48], atol=1e-8)
    lin = np.linalg.lstsq(x, y, rcond=None)[0]
    np.testing.assert_allclose(
        LinearMap(alpha=0.0, standardize=False, center=False).fit(x, y).W_, lin, rtol=1e-6, atol=1e-8)


@pytest.mark.slow
def test_real_lite0_to_lite2_ridge_stitches_well(lite0_store, lite2_store, tmp_path):
    m = fit_map(lite0_store, lite2_store, "ridge", plan=AnchorPlan(holdout=0.3, seed=0))
    q = m.metrics_
    # Same family, 126 anchors for 1280 dims: far from perfect but far above chance.
    assert q["cosine_mean"] > 0.7 and q["top1"] > 5 / q["n_heldout"]
    assert q["probe_auc_ratio"] > 0.85
    m.save(tmp_path / "m.map")
    apply_map(tmp_path / "m.map", lite0_store, tmp_path / "out.h5")
    with EmbeddingStore(tmp_path / "out.h5") as out, EmbeddingStore(lite2_store) as t:
        assert out.space()["model_spec"] == t.space()["model_spec"]


@pytest.mark.parametrize("method", ["ridge", "orthogonal", "affine"])
def test_refit_measures_on_the_holdout_then_writes_the_map_of_every_anchor(stores, tmp_path, method):
    """scikit-learn's refit: metrics of the map without the held-out anchors, the map of all."""
    src, tgt, (ids, *_rest) = stores
    (tmp_path / "a.txt").write_text("\n".join(ids[:150]))
    plan = dict(anchors=tmp_path / "a.txt", seed=3)
    exact = ReadOptions(exact=True)
    refitted = fit_map(src, tgt, method, AnchorPlan(holdout=0.2, **plan), exact)
    measured = fit_map(src, tgt, method, AnchorPlan(holdout=0.2, refit=False, **plan), exact)
    everything = fit_map(src, tgt, method, AnchorPlan(holdout=0.0, metrics=False, **plan), exact)
    assert refitted.anchors_["n_fit"] == 120 and refitted.anchors_["n_heldout"] == 30
    assert refitted.anchors_["n_refit"] == refitted.n_anchors_ == 150 and measured.n_anchors_ == 120
    assert refitted.metrics_ == measured.metrics_  # the report is the held-out one
    np.testing.assert_allclose(refitted.matrix_, everything.matrix_, rtol=1e-5, atol=1e-6)
    assert not np.allclose(refitted.matrix_, measured.matrix_, rtol=1e-3, atol=1e-4)
