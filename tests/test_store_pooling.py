"""One pooling rule for every command: group mean of embeddings, union of labels, streamed."""

from __future__ import annotations

import numpy as np
import pytest

from stitchkit.errors import StoreError, UsageError
from stitchkit.store import EmbeddingStore, write_store
from stitchkit.store.pooling import PooledStore


def _store(tmp_path, groups, labels, dim=6, seed=0):
    rng = np.random.default_rng(seed)
    ids = [f"view{i:03d}" for i in range(len(groups))]
    emb = rng.normal(size=(len(groups), dim)).astype(np.float32)
    path = write_store(tmp_path / "s.h5", ids, emb, attrs={"model_spec": "m", "modality": "image"},
                       columns={"groups": groups, "labels": labels})
    return path, emb


def test_pooled_rows_are_group_means_and_labels_their_union(tmp_path):
    # Views of one study need not be contiguous: study "b" has rows 1, 3 and 4.
    groups = ["a", "b", "a", "b", "b", "c"]
    labels = ["Effusion", "", "Nodule|Effusion", "Mass", "Effusion", "No Finding"]
    path, emb = _store(tmp_path, groups, labels)
    with EmbeddingStore(path) as s:
        pooled = PooledStore(s)
        assert list(pooled.ids) == ["a", "b", "c"]
        assert list(pooled.labels) == ["Effusion|Nodule", "Effusion|Mass", "No Finding"]
        reference = np.stack([emb[[0, 2]].mean(0), emb[[1, 3, 4]].mean(0), emb[[5]].mean(0)])
        np.testing.assert_allclose(pooled.read(), reference, rtol=1e-6)
        # Any subset, in any order, and a slice.
        rows = pooled.index_of(["c", "a"])
        np.testing.assert_allclose(pooled.read(rows), reference[[2, 0]], rtol=1e-6)
        np.testing.assert_allclose(pooled.read(slice(1, 3)), reference[1:], rtol=1e-6)
        with pytest.raises(StoreError, match="not found"):
            pooled.index_of(["zzz"])


def test_pooled_view_holds_no_embeddings(tmp_path):
    groups = [f"g{i // 3}" for i in range(300)]
    path, _ = _store(tmp_path, groups, [""] * 300, dim=64)
    with EmbeddingStore(path) as s:
        pooled = PooledStore(s)
        held = [v for v in vars(pooled).values() if isinstance(v, np.ndarray) and v.dtype.kind == "f"]
        assert held == []  # only the group index: embeddings are read per block


def test_a_store_without_groups_is_one_clear_line(tmp_path):
    path = write_store(tmp_path / "n.h5", ["a", "b"], np.ones((2, 3), np.float32),
                       attrs={"model_spec": "m"})
    with EmbeddingStore(path) as s, pytest.raises(UsageError, match="no groups column"):
        PooledStore(s)


@pytest.mark.parametrize("chunk_size", [1, 4, 1000])
def test_classify_head_and_fit_pool_alike(tmp_path, chunk_size):
    """classify (blocks of whole groups), head training (read_side) and fits (PooledStore) see
    the same pooled vectors and labels, whatever the block size."""
    from stitchkit.head.data import read_side
    from stitchkit.store.pooling import group_blocks, pool_views

    groups = ["a", "b", "a", "c", "b", "b", "d", "c", "e"]
    labels = ["Effusion", "", "Mass", "Nodule", "Effusion", "Mass", "No Finding", "", "Edema"]
    path, emb = _store(tmp_path, groups, labels, dim=5, seed=3)
    with EmbeddingStore(path) as s:
        fit = PooledStore(s)
        head = read_side(s, pool_by="group")
        rows = np.arange(len(s))
        ids, vectors, pooled_labels = [], [], []
        for block, members, keys in group_blocks(s, rows, "group", chunk_size):
            glob, _, _, lab = pool_views(members, s.read(block), labels=s.labels[block])
            ids += list(keys)
            vectors.append(glob)
            pooled_labels += list(lab)
        classify = np.concatenate(vectors)
        assert ids == list(fit.ids) == list(head.ids) == ["a", "b", "c", "d", "e"]
        np.testing.assert_array_equal(classify, fit.read())
        np.testing.assert_array_equal(head.glob, fit.read())
        assert pooled_labels == list(fit.labels) == list(head.labels)
        np.testing.assert_allclose(fit.read()[1], emb[[1, 4, 5]].mean(0), rtol=1e-6)
