"""Several views, one study (ALTA): the rows of one group pooled into one sample.

One rule everywhere (fit, head training, classify): a group's embedding is the mean of its
views' embeddings; its tokens are its views' real tokens concatenated (padded to the longest
group) so that cross-attention can look at every view; its label is the union of its views'
labels (``|``-joined, sorted), the study-level truth for multi-label findings.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ..errors import UsageError
from .store import IdIndex, _query_keys

POOL_CHOICES = ("none", "group")


def check_pool_by(pool_by: str | None) -> str | None:
    if pool_by in (None, "none", ""):
        return None
    if pool_by != "group":
        raise UsageError(f"pool_by (--pool-by) must be one of {', '.join(POOL_CHOICES)}, got {pool_by!r}")
    return pool_by


def store_groups(store: Any) -> np.ndarray:
    """The store's groups column, or one clear line saying there is nothing to pool."""
    groups = store.groups
    if groups is None:
        raise UsageError(
            f"{store.path} has no groups column, so --pool-by group has nothing to pool: "
            "embed with a manifest that has a group (study id) column, or drop --pool-by"
        )
    return groups


def group_rows(groups: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Group keys in order of first appearance, and the row positions of each group."""
    groups = np.asarray(groups, dtype=object)
    keys, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    members = np.argsort(inverse, kind="stable")
    bounds = np.cumsum(np.bincount(inverse, minlength=len(keys)))[:-1]
    split = np.split(members, bounds)
    return keys[order], [split[i] for i in order]


def pool_embeddings(x: np.ndarray, members: list[np.ndarray]) -> np.ndarray:
    """The mean of each group's rows of ``x`` (float64 sums, float32 out)."""
    if not members:
        return np.zeros((0, x.shape[1]), dtype=np.float32)
    counts = np.array([len(m) for m in members], dtype=np.int64)
    return _mean_of_runs(x[np.concatenate(members)], counts)


def _mean_of_runs(x: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Means of consecutive runs of rows of ``x``, run ``i`` being ``counts[i]`` rows long."""
    begin = np.cumsum(counts) - counts
    sums = np.add.reduceat(x.astype(np.float64, copy=False), begin, axis=0)
    return (sums / counts[:, None]).astype(np.float32)


def pool_tokens(
    tokens: np.ndarray, mask: np.ndarray, members: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate the real tokens of each group's views; pad to the longest group."""
    per = [tokens[rows][mask[rows]] for rows in members]
    t = max(1, max((len(p) for p in per), default=1))
    out = np.zeros((len(members), t, tokens.shape[2]), dtype=tokens.dtype)
    out_mask = np.zeros((len(members), t), dtype=bool)
    for i, p in enumerate(per):
        out[i, : len(p)] = p
        out_mask[i, : len(p)] = True
    return out, out_mask


def pool_labels(labels: np.ndarray | None, members: list[np.ndarray]) -> np.ndarray | None:
    if labels is None:
        return None
    out = []
    for rows in members:
        parts = {p for lab in labels[rows] for p in str(lab).split("|") if p}
        out.append("|".join(sorted(parts)))
    return np.asarray(out, dtype=object)


def pool_views(
    members: list[np.ndarray], glob: np.ndarray, tokens: np.ndarray | None = None,
    mask: np.ndarray | None = None, labels: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """(globals, tokens, mask, labels) of each group of rows: the one pooling rule (see above)."""
    if tokens is not None and mask is not None:
        tokens, mask = pool_tokens(tokens, mask, members)
    return pool_embeddings(glob, members), tokens, mask, pool_labels(labels, members)


def group_blocks(
    store: Any, rows: np.ndarray, pool_by: str | None, chunk_size: int
) -> Iterator[tuple[np.ndarray, list[np.ndarray] | None, np.ndarray | None]]:
    """``(rows, members, keys)`` blocks of about ``chunk_size`` rows of ``store``. Unpooled,
    members and keys are None; pooled, each block holds whole groups: ``members`` are the
    positions of each group's views within the block and ``keys`` the groups' names."""
    if pool_by is None:
        for a in range(0, len(rows), chunk_size):
            yield rows[a:a + chunk_size], None, None
        return
    keys, members = group_rows(store_groups(store)[rows])
    start = 0
    while start < len(members):
        stop, size = start, 0
        while stop < len(members) and size < chunk_size:
            size += len(members[stop])
            stop += 1
        block = [rows[m] for m in members[start:stop]]
        counts = np.array([len(m) for m in block], dtype=np.int64)
        local = np.split(np.arange(int(counts.sum())), np.cumsum(counts)[:-1])
        yield np.concatenate(block), local, keys[start:stop]
        start = stop


class PooledStore:
    """A read-only view of a store whose samples are its groups, averaged when read.

    Holds only the group index (one int per row); embeddings are read from the store for the
    groups asked for, so a fit under ``--pool-by group`` streams in O(D²) memory as without it.
    """

    def __init__(self, store: Any, chunk_size: int = 16384) -> None:
        del chunk_size  # reads follow the caller's blocks
        keys, members = group_rows(store_groups(store))
        self._store = store
        self.path = store.path
        self.modality = store.modality
        self.dim = store.dim
        self.ids = keys.astype(str).astype(object)
        self.labels = pool_labels(store.labels, members)
        counts = np.array([len(m) for m in members], dtype=np.int64)
        self._offsets = np.concatenate([[0], np.cumsum(counts)])
        self._members = np.concatenate(members) if members else np.zeros(0, dtype=np.int64)
        self._index = IdIndex(_query_keys(np.asarray(self.ids, dtype=str)))

    def __len__(self) -> int:
        return len(self.ids)

    def space(self) -> dict[str, Any]:
        return self._store.space()

    def index_of(self, ids: Sequence[str] | np.ndarray) -> np.ndarray:
        return self._index.rows_of(ids, self.path)

    def read(self, rows: np.ndarray | slice | None = None) -> np.ndarray:
        groups = np.arange(len(self.ids))
        groups = groups if rows is None else groups[rows]
        starts, counts = self._offsets[groups], np.diff(self._offsets)[groups]
        if len(groups) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        begin = np.cumsum(counts) - counts
        within = np.arange(int(counts.sum())) - np.repeat(begin, counts)
        member_rows = self._members[np.repeat(starts, counts) + within]
        unique, inverse = np.unique(member_rows, return_inverse=True)
        return _mean_of_runs(self._store.read(unique)[inverse], counts)
