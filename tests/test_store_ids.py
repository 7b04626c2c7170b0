"""Ids and string columns as arrays: lookups by binary search, columns read once, rows in order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stitchkit.errors import StoreError, UsageError
from stitchkit.store import EmbeddingStore, StoreUnion, StoreWriter, write_store
from stitchkit.store.merge import merge_stores
from stitchkit.store.store import base_attrs

IDS = ["b-2", "a-1", "é-3", "c/4.jpeg", "中-5", "a-10"]


@pytest.fixture
def store(tmp_path: Path) -> Path:
    x = np.arange(len(IDS) * 3, dtype=np.float32).reshape(len(IDS), 3)
    labels = ["normal", "pneumonia", "normal", "", "pneumonia", "normal"]
    return write_store(tmp_path / "s.h5", IDS, x, columns={"labels": labels, "groups": IDS})


def test_index_of_any_id_container(store: Path) -> None:
    with EmbeddingStore(store) as s:
        want = [2, 4, 0, 5]
        query = [IDS[i] for i in want]
        for ids in (query, np.array(query, dtype=object), np.array(query), tuple(query)):
            np.testing.assert_array_equal(s.index_of(ids), want)
        assert list(s.ids) == IDS and all(type(i) is str for i in s.ids)
        np.testing.assert_array_equal(s.read(s.index_of(query)), s.read(np.array(want)))
        assert len(s.index_of([])) == 0
        with pytest.raises(StoreError, match=r"2 ids not found \(e.g. \['zz', 'a-'\]\)"):
            s.index_of(["a-1", "zz", "a-"])  # a prefix of a stored id is not that id


def test_repeated_ids_are_refused_by_name(tmp_path: Path) -> None:
    path = write_store(tmp_path / "r.h5", ["x", "y", "x", "z", "y"], np.zeros((5, 2), np.float32))
    with EmbeddingStore(path) as s:
        with pytest.raises(StoreError, match=r"2 ids repeat \(e.g. \['x', 'y'\]\)"):
            s.check_unique_ids()
        with pytest.raises(StoreError, match="ids repeat"):
            s.index_of(["z"])
        with pytest.raises(StoreError, match="ids repeat"):  # a failed check is not cached
            s.index_of(["z"])


def test_columns_are_read_once_and_shared(store: Path) -> None:
    with EmbeddingStore(store) as s:
        labels = s.labels
        assert labels is s.labels and s.column("texts") is None
        assert list(labels) == ["normal", "pneumonia", "normal", "", "pneumonia", "normal"]
        assert labels[0] is labels[2]  # one str object per distinct label
        with pytest.raises(ValueError):
            labels[0] = "changed"  # cached for every caller: read-only
        assert list(s.groups) == IDS


def test_read_keeps_the_order_asked_for(tmp_path: Path) -> None:
    n = 300
    x = np.random.default_rng(0).normal(size=(n, 4)).astype(np.float32)
    path = write_store(tmp_path / "o.h5", [f"i{k}" for k in range(n)], x)
    with EmbeddingStore(path) as s:
        for rows in (np.arange(40, 90), np.array([5, 3, 3, 200, 0]), np.array([7]),
                     np.arange(0, n, 7)[::-1], np.array([299, 1]), np.array([], dtype=np.int64)):
            np.testing.assert_array_equal(s.read(rows), x[rows])


def test_read_tokens_reads_only_the_rows_asked_for(tmp_path: Path) -> None:
    n, t, d = 50, 5, 3
    rng = np.random.default_rng(1)
    tok = rng.normal(size=(n, t, d)).astype(np.float16)
    mask = rng.random((n, t)) > 0.3
    path = tmp_path / "t.h5"
    with StoreWriter(path, dim=d, attrs=base_attrs(modality="text"), token_shape=(t, d)) as w:
        w.append([f"t{k}" for k in range(n)], tok.mean(axis=1).astype(np.float32), tokens=tok,
                 tokens_mask=mask)
    with EmbeddingStore(path) as s:
        rows = np.array([9, 2, 40, 2])
        got_tok, got_mask = s.read_tokens(rows)
        np.testing.assert_array_equal(got_tok, tok[rows].astype(np.float32))
        np.testing.assert_array_equal(got_mask, mask[rows])


def test_union_and_merge_join_by_sorted_ids(tmp_path: Path) -> None:
    x = np.ones((3, 2), np.float32)
    a = write_store(tmp_path / "a.h5", ["k1", "k2", "k3"], x)
    b = write_store(tmp_path / "b.h5", ["k4", "é5", "k6"], 2 * x)
    c = write_store(tmp_path / "c.h5", ["k7", "k2", "k8"], x)
    with StoreUnion([a, b]) as u:
        np.testing.assert_array_equal(u.index_of(["é5", "k1", "k6"]), [4, 0, 5])
        assert list(u.ids) == ["k1", "k2", "k3", "k4", "é5", "k6"]
        with pytest.raises(StoreError, match="1 ids not found"):
            u.index_of(["k9"])
    with pytest.raises(UsageError, match="'k2' is in more than one shard"):
        StoreUnion([a, b, c])
    with pytest.raises(UsageError, match=r"'k2' is in both .*a\.h5 and .*c\.h5"):
        merge_stores([a, b, c], tmp_path / "m.h5")
    twice = write_store(tmp_path / "d.h5", ["k9", "k10", "k9"], x)
    with pytest.raises(StoreError, match=r"'k9' appears twice in .*d\.h5"):
        merge_stores([a, twice], tmp_path / "m.h5")
    merged = merge_stores([a, b], tmp_path / "m.h5")
    with EmbeddingStore(merged["path"]) as m:
        assert list(m.ids) == ["k1", "k2", "k3", "k4", "é5", "k6"]


def test_ids_at_decodes_only_the_rows_asked_for(store: Path) -> None:
    with EmbeddingStore(store) as s:
        rows = np.array([4, 0, 2])
        assert list(s.ids_at(rows)) == [IDS[i] for i in rows] and s._ids is None
        assert list(s.ids_at(slice(1, 3))) == IDS[1:3]
        assert list(s.ids_at(rows)) == list(s.ids[rows])  # the same once all ids are decoded
