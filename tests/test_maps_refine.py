"""Unpaired refinement: mutual nearest neighbours, the excluded ids, and the held-out check."""

from __future__ import annotations

import warnings

import numpy as np

from stitchkit.maps import AnchorPlan, fit_map
from stitchkit.maps.plan import unpaired_rows
from stitchkit.maps.refine import mutual_nearest
from stitchkit.store import EmbeddingStore, write_store


def test_mutual_nearest_recovers_a_permutation_and_only_mutual_pairs():
    rng = np.random.default_rng(0)
    T = rng.standard_normal((500, 32)).astype(np.float32)
    perm = rng.permutation(500)
    P = T[perm] + 0.01 * rng.standard_normal((500, 32)).astype(np.float32)
    i, j, sim = mutual_nearest(P, T, block=64)  # several blocks
    assert len(i) == 500 and (j == perm[i]).all() and (sim > 0.99).all()
    # Two sources nearest to one target: only the closer is mutual.
    T2 = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    P2 = np.array([[1.0, 0.1], [1.0, 0.3]], np.float32)
    i, j, _ = mutual_nearest(P2, T2)
    assert i.tolist() == [0] and j.tolist() == [0]


def test_unpaired_rows_exclude_given_ids_and_non_finite_rows(tmp_path):
    X = np.arange(40, dtype=np.float32).reshape(10, 4)
    X[3, 1] = np.nan
    s = write_store(tmp_path / "s.h5", [f"a{i}" for i in range(10)], X)
    with EmbeddingStore(s) as store:
        rows = unpaired_rows(store, np.array(["a0", "a1", "a9"]), 100, seed=0)
    assert rows.shape == (6, 4)  # 10 − 3 excluded − 1 NaN
    assert not ({0.0, 4.0, 36.0} & set(rows[:, 0].tolist()))


def test_refinement_on_real_embeddings_reports_itself(lite0_store, lite2_store):
    """Lite0 → Lite2, 20 anchors, the other Kermany images as unpaired samples."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        base = fit_map(lite0_store, lite2_store, "ridge", plan=AnchorPlan(n_anchors=20, refit=False))
        m = fit_map(lite0_store, lite2_store, "ridge", plan=AnchorPlan(n_anchors=20, unpaired=1000, refit=False))
    ref = m.anchors_["refinement"]
    # 180 images: 36 held out, 20 anchors, so 124 unpaired per side.
    assert ref["unpaired_source"] == ref["unpaired_target"] == 124
    assert ref["pseudo_pairs_per_round"] and ref["pseudo_pairs_per_round"][0] >= 2
    assert m.n_anchors_ == 20 + ref["pseudo_pairs_per_round"][-1]
    # The anchors-only figures recorded are the anchors-only fit's own.
    for k, v in ref["anchors_only"].items():
        assert abs(v - base.metrics_[k]) < 1e-6
    worse = ref["worse_than_anchors_only"]
    warned = [w for w in caught if "made the held-out anchors worse" in str(w.message)]
    assert bool(worse) == bool(warned)
    for k in ("cosine_mean", "top1"):
        got_worse = m.metrics_[k] < base.metrics_[k] - 1e-4
        assert got_worse == any(s.startswith(k + " ") for s in worse)
