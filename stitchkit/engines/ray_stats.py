"""Sufficient statistics of a fit computed per source shard in Ray tasks, then reduced.

Each task opens one source shard and the target store(s) by path, accumulates the statistics
of the anchors that shard holds, and returns them; the driver merges them. The result equals
the single-process fit: statistics add up exactly, and cross-validation folds are assigned
from a hash of the id, so they do not depend on which task saw a row.

This module depends on the maps library (``RayStats`` is a ``maps.stream.StatsEngine``); the
library never imports it: ``fit_map(..., read=ReadOptions(engine=RayStats(address)))``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError
from ..maps.functional import SuffStats, merge_all
from ..maps.stream import ProgressFn, StatsSpec, accumulate
from ..store import EmbeddingStore, StoreUnion, open_stores
from .ray_engine import ray_session, require_ray


def _shard_stats(source: str, targets: list[str], ids: list[str], spec: StatsSpec) -> list[SuffStats]:
    with EmbeddingStore(source) as src, open_stores(targets) as tgt:
        return accumulate(src, tgt, np.asarray(ids, dtype=object), spec)


def accumulate_ray(
    source: EmbeddingStore | StoreUnion,
    target: EmbeddingStore | StoreUnion,
    ids: np.ndarray,
    spec: StatsSpec,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
) -> list[SuffStats]:
    """The same per-fold statistics as ``maps.stream.accumulate``, one Ray task per source shard
    (each task is sent ``spec`` as it is: the settings are one picklable value)."""
    if not isinstance(source, EmbeddingStore | StoreUnion) or not isinstance(target, EmbeddingStore | StoreUnion):
        raise UsageError("--engine ray does not pool groups: drop --pool-by or the engine")
    ray = require_ray()
    shards: Sequence[EmbeddingStore] = source.shards if isinstance(source, StoreUnion) else [source]
    targets = [str(p.path) for p in (target.shards if isinstance(target, StoreUnion) else [target])]
    rows = source.index_of(list(ids))
    if isinstance(source, StoreUnion):
        per_shard = {k: ids[where] for k, where, _ in source.split_rows(rows)}
    else:
        per_shard = {0: ids}
    with ray_session(ray, address, num_cpus):
        task = ray.remote(num_cpus=1)(_shard_stats)
        refs = [task.remote(str(Path(shards[k].path)), targets, list(part), spec)
                for k, part in per_shard.items() if len(part)]
        parts = ray.get(refs)
    return [merge_all([p[f] for p in parts]) for f in range(spec.n_folds)]


class RayStats:
    """A ``StatsEngine`` for ``fit_map``: one Ray task per source shard (at ``address``, else
    a local Ray), reduced in the driver."""

    def __init__(self, address: str | None = None, num_cpus: int | None = None) -> None:
        self.address = address
        self.num_cpus = num_cpus

    def accumulate(
        self, source: Any, target: Any, ids: np.ndarray, spec: StatsSpec, *,
        progress: ProgressFn | None = None,
    ) -> list[SuffStats]:
        return accumulate_ray(source, target, ids, spec, address=self.address, num_cpus=self.num_cpus)
