"""The query rows of a classification, block by block: read, checked finite, mapped, pooled.

:func:`read_blocks` yields what the scorer and the score file need per block (a
:class:`QueryBlock`); :class:`QueryLabels` gives each block's labels and their codes into the
prompts' :class:`~stitchkit.zeroshot.metrics.LabelTable`, which the metrics' columns use.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..store import format as fmt
from ..store import require_finite
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
class QueryBlock:
    """One block of queries as the scorer sees them (mapped, pooled) and the file names them."""

    ids: np.ndarray  # sample ids, or group keys when pooled
    labels: np.ndarray | None
    codes: np.ndarray | None  # label codes into QueryLabels.table; None without labels
    glob: np.ndarray  # (n, D) global vectors in the scorer's image space
    tokens: np.ndarray | None  # (n, T, D) when the head scores image tokens
    mask: np.ndarray | None


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
    for block, members, group_keys in group_blocks(store, rows, plan.pool_by, plan.chunk_size):
        glob = store.read(block)
        tok = mask = None
        if with_tokens:
            tok, mask = store.read_tokens(block)
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
        if members is not None:
            block_ids = group_keys
            glob, tok, mask, block_labels = pool_views(members, glob, tok, mask, block_labels)
        if labels.any and block_codes is None:
            block_codes = labels.table.codes(block_labels)
        yield QueryBlock(block_ids, block_labels, block_codes, glob, tok, mask)
