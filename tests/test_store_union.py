"""Shards read together (StoreUnion) behave like the merged store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stitchkit.errors import ProvenanceError, UsageError
from stitchkit.store import EmbeddingStore, StoreUnion, open_stores, write_store


def split_into_shards(store_path: Path, folder: Path, n: int) -> list[Path]:
    with EmbeddingStore(store_path) as store:
        attrs = {k: v for k, v in store.attrs.items() if k in ("model_spec", "weights_sha256", "modality")}
        paths = []
        for k, rows in enumerate(np.array_split(np.arange(len(store)), n)):
            path = folder / f"shard-{k}.h5"
            write_store(path, store.ids[rows], store.read(rows), attrs=attrs,
                        columns={"labels": store.labels[rows]})
            paths.append(path)
    return paths


def test_union_reads_like_the_whole(lite0_store: Path, tmp_path: Path) -> None:
    shards = split_into_shards(lite0_store, tmp_path, 3)
    with EmbeddingStore(lite0_store) as whole, open_stores(str(tmp_path / "shard-*.h5")) as union:
        assert isinstance(union, StoreUnion) and len(union) == len(whole)
        assert list(union.ids) == list(whole.ids) and list(union.labels) == list(whole.labels)
        rows = np.random.default_rng(0).permutation(len(whole))[:50]
        ids = list(whole.ids[rows])
        np.testing.assert_array_equal(union.read(union.index_of(ids)), whole.read(rows))
        assert union.space() == whole.space()
    one = open_stores(",".join(map(str, shards[:1])))
    assert isinstance(one, EmbeddingStore)
    one.close()


def test_union_refuses_overlap_and_mixed_models(lite0_store: Path, minilm_store: Path) -> None:
    with pytest.raises(UsageError, match="more than one shard"):
        StoreUnion([lite0_store, lite0_store])
    with pytest.raises(ProvenanceError, match="one model"):
        StoreUnion([lite0_store, minilm_store])
