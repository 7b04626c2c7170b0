"""Anchor pools, id files, selection strategies and the holdout split."""

from __future__ import annotations

import numpy as np
import pytest

from stitchkit.errors import UsageError
from stitchkit.fileio import read_id_file
from stitchkit.maps.anchors import fold_of, select, split_holdout


def _ids(n):
    return np.array([f"id{i:04d}" for i in range(n)], dtype=object)


@pytest.mark.parametrize("strategy", ["random", "stratified", "farthest", "kmeans"])
def test_every_strategy_returns_n_distinct_known_ids_deterministically(strategy):
    rng = np.random.default_rng(0)
    ids = _ids(300)
    labels = np.array(["a", "b", "c"])[rng.integers(0, 3, 300)]
    emb = rng.standard_normal((300, 8))
    a = select(ids, 40, strategy=strategy, seed=3, labels=labels, embeddings=emb)
    b = select(ids, 40, strategy=strategy, seed=3, labels=labels, embeddings=emb)
    assert len(a) == 40 and len(set(a)) == 40 and set(a) <= set(ids)
    np.testing.assert_array_equal(a, b)


def test_selection_does_not_depend_on_the_order_of_the_pool():
    rng = np.random.default_rng(1)
    ids = _ids(200)
    emb = rng.standard_normal((200, 6))
    perm = rng.permutation(200)
    for strategy in ("random", "farthest"):
        a = select(ids, 25, strategy=strategy, seed=0, embeddings=emb)
        b = select(ids[perm], 25, strategy=strategy, seed=0, embeddings=emb[perm])
        np.testing.assert_array_equal(a, b)


def test_stratified_keeps_label_proportions_and_every_label():
    labels = np.array(["common"] * 900 + ["rare"] * 90 + ["tiny"] * 10)
    picked = select(_ids(1000), 100, strategy="stratified", seed=0, labels=labels)
    lab = dict(zip(_ids(1000), labels, strict=True))
    counts = {k: sum(lab[i] == k for i in picked) for k in ("common", "rare", "tiny")}
    assert counts == {"common": 90, "rare": 9, "tiny": 1}


def test_farthest_point_covers_separated_clusters_first():
    rng = np.random.default_rng(2)
    centres = np.eye(5) * 10
    emb = np.vstack([c + 0.1 * rng.standard_normal((50, 5)) for c in centres])
    picked = select(_ids(250), 5, strategy="farthest", seed=0, embeddings=emb)
    clusters = {int(str(i)[2:]) // 50 for i in picked}
    assert clusters == set(range(5))


def test_kmeans_picks_real_samples_one_per_cluster():
    rng = np.random.default_rng(3)
    centres = np.eye(4) * 10
    emb = np.vstack([c + 0.1 * rng.standard_normal((40, 4)) for c in centres])
    picked = select(_ids(160), 4, strategy="kmeans", seed=0, embeddings=emb)
    assert {int(str(i)[2:]) // 40 for i in picked} == set(range(4))


def test_too_many_anchors_and_unknown_strategy_are_usage_errors():
    with pytest.raises(UsageError, match="only 10 anchors"):
        select(_ids(10), 20)
    with pytest.raises(UsageError, match="unknown anchor strategy"):
        select(_ids(10), 5, strategy="best")
    with pytest.raises(UsageError, match="needs labels"):
        select(_ids(10), 5, strategy="stratified")


def test_holdout_split_is_disjoint_seeded_and_order_free():
    ids = _ids(100)
    rest, held = split_holdout(ids, 0.2, seed=5)
    assert len(held) == 20 and len(rest) == 80 and not set(rest) & set(held)
    rest2, held2 = split_holdout(ids[::-1], 0.2, seed=5)
    np.testing.assert_array_equal(held, held2)
    _, held3 = split_holdout(ids, 0.2, seed=6)
    assert set(held3) != set(held)
    with pytest.raises(UsageError):
        split_holdout(ids, 1.0, seed=0)


def test_fold_assignment_hashes_ids():
    f = fold_of(list(_ids(3000)), 3, seed=0)
    assert set(f) == {0, 1, 2} and abs(np.bincount(f) - 1000).max() < 100
    np.testing.assert_array_equal(fold_of(["x", "y"], 3, 0), fold_of(["x", "y"], 3, 0))


def test_id_file(tmp_path):
    p = tmp_path / "ids.txt"
    p.write_text("# anchors\na\n\nb\na\n")
    assert read_id_file(p) == ["a", "b"]
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(UsageError, match="lists no ids"):
        read_id_file(tmp_path / "empty.txt")
    with pytest.raises(UsageError, match="no such id file"):
        read_id_file(tmp_path / "missing.txt")
