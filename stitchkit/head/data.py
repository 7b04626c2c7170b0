"""One side (image or text) of a set of samples: globals and tokens read on demand.

Neither the globals nor the tokens of a training set are held: 5,216 Kermany images × 81 Lite2
tokens × 1,280 in float16 are 1.1 GB, and at 100,000 pairs the float32 globals alone are
512 MB. Both stay in the HDF5 store and :class:`LazyRows` reads only the rows asked for
(the training loop reads them window by window in a background thread:
:mod:`stitchkit.head.stream`). What is held per row is small: the id, the token mask, the
label. Queries for classification are streamed instead (see :mod:`stitchkit.zeroshot.scoring`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from ..errors import UsageError
from ..store import EmbeddingStore, require_finite
from ..store.format import IMAGE_COLUMN
from ..store.pooling import check_pool_by, group_rows, pool_views, store_groups

CHECK_ROWS = 16384  # rows of globals read at a time by the finite check


class LazyRows:
    """Some rows of a store's globals (float32) or tokens (float16), read when indexed.

    Behaves like the (N, D) or (N, T, D) array it stands for where the head needs it: ``len``,
    ``shape``, ``dtype`` and indexing by an integer array or a slice, which reads just those
    rows (consecutive rows as one read: :func:`stitchkit.store.rows.read_rows`).
    """

    def __init__(self, store: EmbeddingStore, rows: np.ndarray, *, tokens: bool = False) -> None:
        self.store = store
        self.rows = np.asarray(rows, dtype=np.int64)
        self.tokens = tokens
        width = tuple(int(x) for x in store.token_shape) if tokens else (int(store.dim),)
        self.shape = (len(self.rows), *width)
        self.dtype = np.dtype(np.float16 if tokens else np.float32)
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: np.ndarray | slice) -> np.ndarray:
        rows = np.atleast_1d(self.rows[index])
        if rows.ndim != 1:
            raise IndexError(f"{type(self).__name__} takes an array of rows or a slice")
        return self.store.read(rows, tokens=self.tokens, dtype=self.dtype)

    def read_into(self, index: np.ndarray, out: np.ndarray) -> np.ndarray:
        """The rows ``index`` into the first rows of ``out`` (a buffer reused from read to read);
        rows increasing in the store are read as runs straight into it."""
        return self.store.read(self.rows[index], tokens=self.tokens, dtype=self.dtype, out=out)

    def take(self, index: np.ndarray) -> LazyRows:
        out = copy.copy(self)
        out.rows = self.rows[index]
        out.shape = (len(out.rows), *self.shape[1:])
        return out


class LazyTokens(LazyRows):
    """The tokens (float16) of some rows of a store: :class:`LazyRows` with ``tokens=True``."""

    def __init__(self, store: EmbeddingStore, rows: np.ndarray) -> None:
        super().__init__(store, rows, tokens=True)


Tokens = np.ndarray | LazyRows  # or ConcatRows (pairs from several stores)


@dataclass
class Side:
    """Globals (N, D) float32, optional tokens (N, T, D) float16 (each in memory or a
    :class:`LazyRows`) with mask (N, T), ids, labels, texts and groups (patients) where the
    store has them."""

    ids: np.ndarray
    glob: Tokens
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

        def rows_of(a: Tokens | None) -> Tokens | None:
            return a.take(rows) if is_lazy(a) else sub(a)

        return Side(self.ids[rows], rows_of(self.glob), rows_of(self.tokens), sub(self.mask),
                    sub(self.labels), sub(self.texts), sub(self.groups))

    def read_glob(self, rows: np.ndarray | slice) -> np.ndarray:
        """Globals of ``rows`` as a float32 array (read from the store where they are lazy)."""
        return np.asarray(self.glob[rows], dtype=np.float32)


def is_lazy(rows: object) -> bool:
    """Rows read from their stores when indexed (:class:`LazyRows`, :class:`ConcatRows`)."""
    return hasattr(rows, "read_into")


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
    check_finite_rows(store, rows, ids)
    glob: Tokens = LazyRows(store, rows) if pool_by is None else store.read(rows)
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


def check_finite_rows(store: EmbeddingStore, rows: np.ndarray, ids: np.ndarray) -> None:
    """Refuse NaN or Inf in the globals of ``rows``, read a block at a time (not all held)."""
    for a in range(0, len(rows), CHECK_ROWS):
        block = store.read(rows[a:a + CHECK_ROWS])
        if not np.isfinite(block.sum(axis=1)).all():  # the full check names the first bad id
            require_finite(block, ids[a:a + CHECK_ROWS], store.path)


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
    img, txt, sentences = join_sentences(image, text, text.ids)
    return img, txt.take(sentences.first())


def pairing_keys(store: EmbeddingStore, text: Side) -> np.ndarray:
    """What joins a text row to its image: the ``image`` column of a sentence store (a row per
    sentence, several per image), else the row's id."""
    if store.attrs.get("pairs_by") == IMAGE_COLUMN:
        return np.asarray(store.column(IMAGE_COLUMN))[_store_rows(text)]
    return text.ids


def _store_rows(side: Side) -> np.ndarray:
    return side.glob.rows if isinstance(side.glob, LazyRows) else np.arange(len(side))


@dataclass
class Sentences:
    """Which text rows belong to each image: image ``i`` owns ``rows[start[i]:start[i + 1]]``."""

    start: np.ndarray
    rows: np.ndarray

    def of(self, i: int) -> np.ndarray:
        return self.rows[self.start[i]:self.start[i + 1]]

    def first(self) -> np.ndarray:
        return self.rows[self.start[:-1]]

    def counts(self) -> np.ndarray:
        return np.diff(self.start)

    def take(self, images: np.ndarray) -> Sentences:
        parts = [self.of(int(i)) for i in images]
        start = np.concatenate([[0], np.cumsum([len(x) for x in parts])]).astype(np.int64)
        return Sentences(start, np.concatenate(parts).astype(np.int64) if parts else start[:0])

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        """One text row per image, drawn uniformly among its sentences."""
        pick = (rng.random(len(self.start) - 1) * self.counts()).astype(np.int64)
        return self.rows[self.start[:-1] + pick]


def join_sentences(image: Side, text: Side, keys: np.ndarray) -> tuple[Side, Side, Sentences]:
    """Images with at least one text (``keys[j]`` names text row ``j``'s image), in the image
    side's order, and each one's text rows: one per id, or one per sentence of a sentence store."""
    by_image: dict[str, list[int]] = {}
    for j, k in enumerate(keys):
        by_image.setdefault(str(k), []).append(j)
    keep = np.array([i for i, k in enumerate(image.ids) if str(k) in by_image], dtype=np.int64)
    if len(keep) == 0:
        raise UsageError(
            "the image and text stores share no ids (e.g. image id "
            f"{image.ids[0] if len(image) else '-'!r}, text id {keys[0] if len(keys) else '-'!r}): "
            "pairs are joined by id, so embed both from the same manifest"
        )
    members = [by_image[str(k)] for k in image.ids[keep]]
    start = np.concatenate([[0], np.cumsum([len(m) for m in members])]).astype(np.int64)
    return image.take(keep), text, Sentences(start, np.concatenate(members).astype(np.int64))


class ConcatRows:
    """Rows of several :class:`LazyRows` (one per source store) as one array-like: what
    :class:`LazyRows` offers the training loop, for pairs from several stores. Tokens of
    sources with fewer tokens per row are padded with zeros (their mask says so)."""

    def __init__(self, parts: list[LazyRows | np.ndarray], source: np.ndarray, local: np.ndarray) -> None:
        self.parts, self.source, self.local = parts, np.asarray(source), np.asarray(local)
        width = tuple(max(p.shape[k] for p in parts) for k in range(1, parts[0].ndim))
        self.shape = (len(self.local), *width)
        self.dtype = parts[0].dtype
        self.ndim = len(self.shape)
        # An order key that keeps each store's rows together and in the store's order.
        store_rows = np.empty(len(self.local), dtype=np.int64)
        for s, part in enumerate(parts):
            here = self.source == s
            store_rows[here] = (part.rows if isinstance(part, LazyRows) else np.arange(len(part)))[self.local[here]]
        self.rows = (self.source.astype(np.int64) << 40) | store_rows

    @classmethod
    def of(cls, parts: list[LazyRows | np.ndarray]) -> ConcatRows:
        source = np.concatenate([np.full(len(p), s) for s, p in enumerate(parts)])
        local = np.concatenate([np.arange(len(p)) for p in parts])
        return cls(parts, source, local)

    def __len__(self) -> int:
        return len(self.local)

    def __getitem__(self, index: np.ndarray | slice) -> np.ndarray:
        index = np.arange(len(self))[index] if isinstance(index, slice) else np.atleast_1d(index)
        return self.read_into(index, np.empty((len(index), *self.shape[1:]), dtype=self.dtype))

    def read_into(self, index: np.ndarray, out: np.ndarray) -> np.ndarray:
        out = out[:len(index)]
        for s, part in enumerate(self.parts):
            at = np.nonzero(self.source[index] == s)[0]
            if len(at):
                got = part[self.local[index[at]]]
                out[at] = 0
                out[(at, *(slice(0, n) for n in got.shape[1:]))] = got
        return out

    def take(self, index: np.ndarray) -> ConcatRows:
        return ConcatRows(self.parts, self.source[index], self.local[index])


def concat_sides(sides: list[Side]) -> Side:
    """Several sources' sides as one (globals and tokens read lazily from each store). Groups
    (patients) and ids are prefixed with the source's number: two sets never share a patient."""
    if len(sides) == 1:
        return sides[0]

    def joined(name: str) -> np.ndarray | None:
        values = [getattr(s, name) for s in sides]
        return None if any(v is None for v in values) else np.concatenate(values)

    with_tokens = [s.tokens is not None for s in sides]
    if any(with_tokens) and not all(with_tokens):
        raise UsageError("some sources have tokens and others not: embed every source with --tokens, "
                         "or train on globals only (--no-image-tokens / --no-text-tokens)")
    tokens = mask = None
    if all(with_tokens):
        tokens = ConcatRows.of([s.tokens for s in sides])
        mask = np.zeros(tokens.shape[:2], dtype=bool)
        at = 0
        for s in sides:
            mask[at:at + len(s), :s.mask.shape[1]] = s.mask
            at += len(s)
    prefixed = lambda n, values: np.array([f"{n}:{v}" for v in values], dtype=object)  # noqa: E731
    groups = np.concatenate([prefixed(n, s.groups if s.groups is not None else s.ids)
                             for n, s in enumerate(sides)])
    return Side(np.concatenate([prefixed(n, s.ids) for n, s in enumerate(sides)]),
                ConcatRows.of([s.glob for s in sides]), tokens, mask, joined("labels"), joined("texts"), groups)
