"""Streaming two stores' anchors into sufficient statistics, locally or through an engine.

The stores are read in chunks; only the statistics (O(D²)) are held in memory.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ..store import EmbeddingStore, StoreUnion, open_stores, require_finite
from . import functional as F
from .anchors import fold_of, rows_of

StoreLike = str | os.PathLike | EmbeddingStore | StoreUnion | Sequence[str | os.PathLike]
ProgressFn = Callable[[int, int], None]


@contextmanager
def _opened(store: StoreLike) -> Iterator[EmbeddingStore | StoreUnion]:
    """An open store; several paths (a list, 'a.h5,b.h5' or a quoted glob) are read as one."""
    if isinstance(store, EmbeddingStore | StoreUnion):
        yield store
        return
    s = open_stores(store)
    try:
        yield s
    finally:
        s.close()


@dataclass(frozen=True)
class StatsSpec:
    """Which statistics of the anchor pairs are accumulated, and how the stores are read for them.

    Every engine computes the same statistics from the same settings (``fit_map`` gives them
    once and asks twice: fit anchors, then held-out anchors for the refit), and a Ray task
    receives them as one picklable value, so they travel together: ``n_folds`` folds assigned
    by a hash of the id under ``seed`` (one: no folds), rows L2-normalised first under ``l2``,
    ``chunk_size`` rows read at a time, float64 products with ``exact``.
    """

    n_folds: int = 1
    seed: int = 0
    l2: bool = False
    chunk_size: int = 16384
    exact: bool = False


def accumulate(
    source: Any,
    target: Any,
    ids: np.ndarray,
    spec: StatsSpec,
    *,
    progress: ProgressFn | None = None,
) -> list[F.SuffStats]:
    """Per-fold sufficient statistics of the anchor pairs ``ids``, read chunk by chunk."""
    src_rows = rows_of(source, ids)
    tgt_rows = rows_of(target, ids)
    # Anchors sorted by id in a store written in id order read in row order already: no sort.
    order = None if np.all(src_rows[1:] > src_rows[:-1]) else np.argsort(src_rows, kind="stable")
    n_ids = len(ids)
    n_folds, chunk_size = spec.n_folds, spec.chunk_size
    folds = [F.SuffStats.zeros(source.dim, target.dim, exact=spec.exact) for _ in range(n_folds)]
    which = fold_of(ids, n_folds, spec.seed) if n_folds > 1 else None
    done = 0
    if progress is not None:
        progress(0, len(ids))
    for start in range(0, n_ids, chunk_size):
        part = slice(start, start + chunk_size) if order is None else order[start : start + chunk_size]
        X = source.read(src_rows[part])
        Y = target.read(tgt_rows[part])
        require_finite(X, ids[part], source.path, "anchor embeddings")
        require_finite(Y, ids[part], target.path, "anchor embeddings")
        if spec.l2:
            X, Y = F.l2_normalize(X), F.l2_normalize(Y)
        if which is None:
            folds[0].update(X, Y)
        else:
            f = which[part]
            for k in range(n_folds):
                sel = f == k
                if sel.any():
                    folds[k].update(X[sel], Y[sel])
        done += len(X)
        if progress is not None:
            progress(done, len(ids))
    return folds


class StatsEngine(Protocol):
    """Where a fit's sufficient statistics are computed: the one thing an engine provides.

    ``ReadOptions(engine=...)`` takes any object with this method; it must return what
    :func:`accumulate` returns for the same arguments (the settings: one :class:`StatsSpec`).
    Engines (``stitchkit.engines``) import the library, never the reverse.
    """

    def accumulate(
        self, source: Any, target: Any, ids: np.ndarray, spec: StatsSpec, *, progress: ProgressFn | None,
    ) -> list[F.SuffStats]: ...


class LocalEngine:
    """Statistics in this process, chunk by chunk (the default)."""

    def accumulate(
        self, source: Any, target: Any, ids: np.ndarray, spec: StatsSpec, *, progress: ProgressFn | None,
    ) -> list[F.SuffStats]:
        return accumulate(source, target, ids, spec, progress=progress)
