"""Fits from shard stores (never merged) equal the fit from the whole stores (issue 6)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stitchkit.maps import AnchorPlan, ReadOptions, fit_map
from stitchkit.store import EmbeddingStore

from .test_store_union import split_into_shards


@pytest.fixture(scope="module")
def shards(lite0_store: Path, lite2_store: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("fit-shards")
    (folder / "src").mkdir()
    (folder / "tgt").mkdir()
    split_into_shards(lite0_store, folder / "src", 3)
    split_into_shards(lite2_store, folder / "tgt", 2)  # the two sides need not be cut alike
    return {"source": str(folder / "src" / "shard-*.h5"), "target": str(folder / "tgt" / "shard-*.h5")}


@pytest.mark.parametrize("method", ["orthogonal", "ridge"])
def test_fit_from_shards_equals_fit_from_whole(shards: dict, lite0_store: Path, lite2_store: Path, method: str) -> None:
    whole = fit_map(lite0_store, lite2_store, method, plan=AnchorPlan(metrics=False))
    sharded = fit_map(shards["source"], shards["target"], method, plan=AnchorPlan(metrics=False))
    with EmbeddingStore(lite0_store) as store:
        X = store.read()
    np.testing.assert_allclose(sharded.transform(X), whole.transform(X), rtol=1e-4, atol=1e-4)
    assert sharded.n_anchors_ == whole.n_anchors_


def test_fit_shard_statistics_in_ray_tasks(shards: dict, lite0_store: Path, lite2_store: Path) -> None:
    pytest.importorskip("ray")
    from stitchkit.engines.ray_stats import RayStats

    whole = fit_map(lite0_store, lite2_store, "ridge", plan=AnchorPlan(metrics=False))
    sharded = fit_map(shards["source"], shards["target"], "ridge", plan=AnchorPlan(metrics=False), read=ReadOptions(engine=RayStats()))
    with EmbeddingStore(lite0_store) as store:
        X = store.read()
    np.testing.assert_allclose(sharded.transform(X), whole.transform(X), rtol=1e-4, atol=1e-4)
