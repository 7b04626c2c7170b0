"""One side (image or text) of a set of samples, read from a store into memory.

Training sets and prompt sets are small enough to hold; queries for classification are
streamed instead (see :mod:`stitchkit.zeroshot.scoring`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import StoreError, UsageError
from ..store import EmbeddingStore
from ..zeroshot.pooling import (
    check_pool_by,
    group_rows,
    pool_embeddings,
    pool_labels,
    pool_tokens,
    store_groups,
)


@dataclass
class Side:
    """Globals (N, D), optional tokens (N, T, D) float16 with mask (N, T), ids, labels, texts."""

    ids: np.ndarray
    glob: np.ndarray
    tokens: np.ndarray | None = None
    mask: np.ndarray | None = None
    labels: np.ndarray | None = None
    texts: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, rows: np.ndarray) -> Side:
        def sub(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[rows]

        return Side(self.ids[rows], self.glob[rows], sub(self.tokens), sub(self.mask),
                    sub(self.labels), sub(self.texts))


def read_side(
    store: EmbeddingStore,
    rows: np.ndarray | None = None,
    *,
    tokens: bool = False,
    pool_by: str | None = None,
) -> Side:
    """Read ``rows`` (all by default) of ``store``; pool views of one group when asked."""
    pool_by = check_pool_by(pool_by)
    if rows is None:
        rows = np.arange(len(store))
    rows = np.asarray(rows, dtype=np.int64)
    store.check_unique_ids()  # pairs are joined by id: a repeated id pairs the wrong rows
    ids = store.ids[rows]
    glob = store.read(rows)
    bad = ~np.isfinite(glob).all(axis=1)
    if bad.any():
        raise StoreError(
            f"{store.path}: {int(bad.sum())} embeddings hold NaN or Inf (first: id {ids[bad][0]!r}): "
            "re-embed those inputs or drop them"
        )
    tok = mask = None
    if tokens and store.has_tokens:
        tok, mask = store.read_tokens(rows)
        tok = tok.astype(np.float16)  # halves memory; the head computes in float32
    labels = store.labels[rows] if store.labels is not None else None
    texts = store.texts[rows] if store.texts is not None else None
    if pool_by is None:
        return Side(ids, glob, tok, mask, labels, texts)
    groups = store_groups(store)
    keys, members = group_rows(groups[rows])
    glob = pool_embeddings(glob, members)
    if tok is not None and mask is not None:
        tok, mask = pool_tokens(tok, mask, members)
    pooled_texts = None
    if texts is not None:
        pooled_texts = np.asarray([" ".join(dict.fromkeys(texts[m])) for m in members], dtype=object)
    return Side(np.asarray(keys, dtype=object), glob, tok, mask, pool_labels(labels, members),
                pooled_texts)


def join_pairs(image: Side, text: Side) -> tuple[Side, Side]:
    """Rows of both sides whose ids match, in the image side's order."""
    index = {k: i for i, k in enumerate(text.ids)}
    keep = np.array([i for i, k in enumerate(image.ids) if k in index], dtype=np.int64)
    if len(keep) == 0:
        raise UsageError(
            "the image and text stores share no ids (e.g. image id "
            f"{image.ids[0] if len(image) else '-'!r}, text id {text.ids[0] if len(text) else '-'!r}): "
            "pairs are joined by id, so embed both from the same manifest"
        )
    return image.take(keep), text.take(np.array([index[k] for k in image.ids[keep]]))
