"""The query rows of a classification, block by block: read, checked finite, mapped, pooled.

:func:`read_blocks` yields what the scorer and the score file need per block (a
:class:`QueryBlock`); :class:`QueryLabels` gives each block's labels and their codes into the
prompts' :class:`~stitchkit.zeroshot.metrics.LabelTable`, which the metrics' columns use.

Tokens that go straight to a head (no map, no pooling) are handed over as stored, float16, and
the scoring thread converts them (:class:`Float32Tokens`) into one float32 buffer it reuses, so
the head gets exactly the float32 tokens it always got (float16 → float32 is exact). Where the
store's layout allows it they are views of the file's pages (:class:`PagedTokens`, read by that
one conversion, the next block's pages asked for while this one is scored); otherwise they are
read by h5py one block ahead in a thread (:func:`read_ahead`). Measured in docs/speed.md ("Head
scoring with tokens").
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..store import format as fmt
from ..store import require_finite
from ..store.pages import TokenPages
from ..store.pooling import group_blocks, group_rows, pool_views
from .classify_plan import ClassifyPlan
from .metrics import LabelTable
from .prompts import PromptSet


class QueryLabels:
    """The labels of the query rows, as the score file shows them and as label codes.

    Labels are int32 codes where the store has them so (4 bytes a row, no str per row); the
    pooled route pools strings per group, and a union of stores has only strings: those are
    coded per block instead.
    """

    def __init__(self, store: Any, rows: np.ndarray, prompts: PromptSet, pooled: bool) -> None:
        self.table = LabelTable([c.matches for c in prompts.classes])
        coded = store.column_codes(fmt.LABELS) if not pooled and hasattr(store, "column_codes") else None
        self._coded = coded is not None
        self._rows = rows
        if coded is not None:
            self._values, self._codes = coded
            self._remap = self.table.remap(self._values)
            self._present = np.bincount(self._codes[rows], minlength=len(self._values)) > 0
            self.any = bool((self._present & (self._values != "")).any())
        else:
            self._all = store.labels
            self.any = self._all is not None and any(str(x) for x in self._all[rows])

    def distinct(self) -> np.ndarray:
        """The distinct labels among the query rows."""
        if self._coded:
            return self._values[self._present]
        return np.unique(self._all[self._rows].astype(str))

    def at(self, block: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(labels, codes) of the store rows ``block``; codes None where they are coded later
        (from strings), both None when the query rows have no label."""
        if not self.any:
            return None, None
        if self._coded:
            codes = self._codes[block]
            return self._values[codes], self._remap[codes]
        return self._all[block], None


@dataclass
class PagedTokens:
    """A block's float16 tokens left in the store file's pages until :class:`Float32Tokens`
    converts them (then their pages are released)."""

    pages: TokenPages
    rows: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.rows), *self.pages.row_shape)


@dataclass
class QueryBlock:
    """One block of queries as the scorer sees them (mapped, pooled) and the file names them."""

    ids: np.ndarray  # sample ids, or group keys when pooled
    labels: np.ndarray | None
    codes: np.ndarray | None  # label codes into QueryLabels.table; None without labels
    glob: np.ndarray  # (n, D) global vectors in the scorer's image space
    tokens: np.ndarray | PagedTokens | None  # (n, T, D) when the head scores image tokens
    mask: np.ndarray | None
    groups: np.ndarray | None = None  # each sample's group (patient, study): what the bootstrap draws


def n_outputs(plan: ClassifyPlan, rows: np.ndarray) -> int:
    """How many scored samples ``rows`` give: one per row, or one per group when pooled."""
    if plan.pool_by is None:
        return len(rows)
    groups = plan.store.groups
    return len(group_rows(groups[rows])[0]) if groups is not None else 0


def read_blocks(plan: ClassifyPlan, rows: np.ndarray, labels: QueryLabels) -> Iterator[QueryBlock]:
    """The query ``rows`` in blocks of ``plan.chunk_size``: finite, mapped, then pooled."""
    store, mapper = plan.store, plan.mapper
    with_tokens = plan.scorer.uses_image_tokens
    token_dtype = np.float16 if tokens_as_stored(plan) else np.float32
    pages = token_pages(plan)
    planned = group_blocks(store, rows, plan.pool_by, plan.chunk_size)
    following = next(planned, None)
    while following is not None:
        (block, members, group_keys), following = following, next(planned, None)
        glob = store.read(block)
        tok = mask = None
        if pages is not None:
            tok, mask = PagedTokens(pages, block), store.token_mask(block)
            if following is not None:
                pages.prefetch(following[0])
        elif with_tokens:
            tok, mask = store.read_tokens(block, dtype=token_dtype)
        # A row sum is NaN or Inf where any entry is: one read of the block and (n,) values,
        # where an element-wise check writes (n, D); the message comes from the full check.
        if not np.isfinite(glob.sum(axis=1)).all():
            require_finite(glob, store.ids_at(block), store.path)
        if mapper is not None:
            glob = mapper.transform(glob).astype(np.float32, copy=False)
            if tok is not None:
                from ..maps import tokens as T

                tok = T.map_tokens(mapper, tok, mask)
        block_ids = store.ids_at(block)  # not store.ids: no decoded copy of all N ids
        block_labels, block_codes = labels.at(block)
        found = getattr(store, "groups", None)
        block_groups = None if found is None else found[block]
        if members is not None:
            block_ids = block_groups = group_keys  # pooled: each sample is a group
            glob, tok, mask, block_labels = pool_views(members, glob, tok, mask, block_labels)
        if labels.any and block_codes is None:
            block_codes = labels.table.codes(block_labels)
        yield QueryBlock(block_ids, block_labels, block_codes, glob, tok, mask, block_groups)


def tokens_as_stored(plan: ClassifyPlan) -> bool:
    """Whether :func:`read_blocks` hands the tokens over as stored (float16): they go straight
    to a head (no map, no pooling, which compute on float32) from a store that has tokens."""
    return (plan.scorer.uses_image_tokens and plan.scorer.head is not None and plan.mapper is None
            and plan.pool_by is None and bool(getattr(plan.store, "has_tokens", False)))


def token_pages(plan: ClassifyPlan) -> TokenPages | None:
    """The store's token pages where the tokens go to a head as stored, else None."""
    if not tokens_as_stored(plan) or not hasattr(plan.store, "token_pages"):
        return None
    return plan.store.token_pages()


def reads_ahead(plan: ClassifyPlan) -> bool:
    """Whether :func:`read_blocks` is worth running a block ahead in a thread: h5py reads of
    tokens as stored overlap the head's forward; views of the file's pages cost nothing to hand
    over (their pages are asked for a block ahead instead)."""
    return tokens_as_stored(plan) and token_pages(plan) is None


@contextmanager
def read_ahead(blocks: Iterator[QueryBlock], ahead: bool) -> Iterator[Iterator[QueryBlock]]:
    """``blocks``, read one block ahead in a ``stitch-loader`` thread where ``ahead`` (the
    HDF5 read of the next block's tokens overlaps the head's forward on this one), else as
    they come. An error while reading is raised here, at the block it concerns."""
    if not ahead:
        yield blocks
        return
    from ..head.stream import Prefetch

    with Prefetch(blocks, 1) as loader:
        yield iter(loader)


class Float32Tokens:
    """A block's tokens as float32, for the scorer: float16 tokens (as :func:`read_blocks` reads
    them for a head) are converted into one buffer reused from block to block; float32 tokens
    and None pass as they are. A result is valid until the next call.

    torch converts (about 4x numpy's ``astype`` on two threads), and the buffer is reused because
    a fresh (161, 81, 1280) float32 array pays about 66 MB of page faults on every block.
    """

    def __init__(self) -> None:
        self._buffer: Any = None  # a torch tensor (torch is loaded: a head scores these tokens)

    def __call__(self, tokens: np.ndarray | PagedTokens | None) -> np.ndarray | None:
        if isinstance(tokens, PagedTokens):
            return self._from_pages(tokens)
        if tokens is None or tokens.dtype != np.float16:
            return tokens
        import torch

        out = self._out(tokens.shape)
        out.copy_(torch.from_numpy(np.ascontiguousarray(tokens)))
        return out.numpy()

    def _out(self, shape: tuple[int, ...]) -> Any:
        import torch

        buf = self._buffer
        if buf is None or buf.shape[1:] != shape[1:] or buf.shape[0] < shape[0]:
            buf = self._buffer = torch.empty(shape, dtype=torch.float32)
        return buf[: shape[0]]

    def _from_pages(self, tokens: PagedTokens) -> np.ndarray:
        import torch

        out = self._out(tokens.shape)
        with warnings.catch_warnings():  # the views are read-only, and only read here
            warnings.simplefilter("ignore", UserWarning)
            for a, piece in tokens.pages.views(tokens.rows):
                out[a : a + len(piece)].copy_(torch.from_numpy(piece))
        tokens.pages.release(tokens.rows)
        return out.numpy()
