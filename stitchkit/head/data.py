"""One side (image or text) of a set of samples: globals in memory, tokens read on demand.

Globals (N × D) of training sets and prompt sets are small enough to hold. Image tokens are
not: 5,216 Kermany images × 81 Lite2 tokens × 1,280 in float16 are 1.1 GB. They stay in the
HDF5 store (float16 on disk, one chunk per row) and :class:`LazyTokens` reads only the rows
of a batch. Queries for classification are streamed instead (see
:mod:`stitchkit.zeroshot.scoring`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UsageError
from ..store import EmbeddingStore, require_finite
from ..store.pooling import check_pool_by, group_rows, pool_views, store_groups


class LazyTokens:
    """Tokens of some rows of a store, read from the HDF5 file when indexed (float16).

    Behaves like the (N, T, D) array it stands for where the head needs it: ``len``,
    ``shape``, and indexing by an integer array or a slice, which reads just those rows.
    """

    def __init__(self, store: EmbeddingStore, rows: np.ndarray) -> None:
        self.store = store
        self.rows = np.asarray(rows, dtype=np.int64)
        t, d = store.token_shape
        self.shape = (len(self.rows), int(t), int(d))
        self.dtype = np.dtype(np.float16)
        self.ndim = 3

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: np.ndarray | slice) -> np.ndarray:
        rows = np.atleast_1d(self.rows[index])
        if rows.ndim != 1:
            raise IndexError("LazyTokens takes an array of rows or a slice")
        return self.store.read(rows, tokens=True, dtype=np.float16)

    def take(self, index: np.ndarray) -> LazyTokens:
        return LazyTokens(self.store, self.rows[index])


Tokens = np.ndarray | LazyTokens


@dataclass
class Side:
    """Globals (N, D), optional tokens (N, T, D) float16 (in memory or :class:`LazyTokens`)
    with mask (N, T), ids, labels, texts and groups (patients) where the store has them."""

    ids: np.ndarray
    glob: np.ndarray
    tokens: Tokens | None = None
    mask: np.ndarray | None = None
    labels: np.ndarray | None = None
    texts: np.ndarray | None = None
    groups: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, rows: np.ndarray) -> Side:
        def sub(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[rows]

        tokens = self.tokens.take(rows) if isinstance(self.tokens, LazyTokens) else sub(self.tokens)
        return Side(self.ids[rows], self.glob[rows], tokens, sub(self.mask),
                    sub(self.labels), sub(self.texts), sub(self.groups))


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
    require_finite(glob, ids, store.path)
    tok: Tokens | None = None
    mask = None
    if tokens and store.has_tokens:
        check_token_width(store)
        if pool_by is None:
            tok = LazyTokens(store, rows)
            mask = store.token_mask(rows)
        else:  # pooling concatenates the views' tokens: done in memory (studies are few)
            tok, mask = store.read_tokens(rows, np.float16)  # half the memory; the head computes in float32
    labels = store.labels[rows] if store.labels is not None else None
    texts = store.texts[rows] if store.texts is not None else None
    if pool_by is None:
        groups = store.groups[rows] if store.groups is not None else None
        return Side(ids, glob, tok, mask, labels, texts, groups)
    groups = store_groups(store)
    keys, members = group_rows(groups[rows])
    glob, tok, mask, labels = pool_views(members, glob, tok, mask, labels)
    pooled_texts = None
    if texts is not None:
        pooled_texts = np.asarray([" ".join(dict.fromkeys(texts[m])) for m in members], dtype=object)
    return Side(np.asarray(keys, dtype=object), glob, tok, mask, labels, pooled_texts)


def check_token_width(store: EmbeddingStore) -> None:
    """The head projects tokens with the global's projection: their widths must agree."""
    width = store.token_shape[1]
    if width != store.dim:
        raise UsageError(
            f"{store.path} holds tokens {width} wide but globals {store.dim} wide (tokens taken "
            "before the model's final projection): the head projects both with one layer; "
            "train with --no-image-tokens / --no-text-tokens, or embed tokens at the global width"
        )


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
