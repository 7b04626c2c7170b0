"""Several stores of one space read as one: shards that were never merged.

``open_stores("lite0-*.h5")`` gives a plain :class:`EmbeddingStore` for one file and a
:class:`StoreUnion` for several, with the same read interface (ids, labels, index_of, read,
iter_chunks, space), so fitting and classifying never need `stitch merge` first.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ProvenanceError, StoreError, UsageError
from .store import EmbeddingStore, IdIndex, _keys_to_str


def expand_paths(spec: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """A path, a comma-separated list, or a quoted glob ('shards/lite0-*.h5') -> sorted paths."""
    items = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    paths: list[Path] = []
    for item in items:
        for part in str(item).split(","):
            if any(ch in part for ch in "*?["):
                found = sorted(glob.glob(part))
                if not found:
                    raise StoreError(f"no store matches {part!r}: check the pattern")
                paths.extend(Path(p) for p in found)
            elif part:
                paths.append(Path(part))
    if not paths:
        raise UsageError("no store given")
    return paths


def open_stores(spec: str | os.PathLike | Sequence[str | os.PathLike]) -> EmbeddingStore | StoreUnion:
    paths = expand_paths(spec)
    return EmbeddingStore(paths[0]) if len(paths) == 1 else StoreUnion(paths)


class StoreUnion:
    """Read-only concatenation of complete stores of one space (model, weights, width)."""

    def __init__(self, paths: Sequence[str | os.PathLike]) -> None:
        self.shards = [EmbeddingStore(p) for p in paths]
        first = self.shards[0]
        self.path = Path(f"{first.path} (+{len(self.shards) - 1} shards)")
        for shard in self.shards[1:]:
            if shard.space() != first.space():
                diff = [k for k, v in first.space().items() if shard.space()[k] != v]
                raise ProvenanceError(
                    f"{shard.path} differs from {first.path} in {', '.join(diff)}: "
                    "shards read together must come from one model"
                )
        self._offsets = np.cumsum([0] + [len(s) for s in self.shards])
        self._keys = np.concatenate([s.id_keys for s in self.shards])
        self._index = IdIndex(self._keys)  # sorted once: overlap check and every lookup
        again = self._index.repeated()
        if len(again):
            dup = _keys_to_str(self._keys[again[:1]])[0]
            raise UsageError(f"id {dup!r} is in more than one shard: shards must not overlap")
        self._ids: np.ndarray | None = None
        self._columns: dict[str, np.ndarray | None] = {}

    # -- what EmbeddingStore offers ---------------------------------------------------------
    def __len__(self) -> int:
        return int(self._offsets[-1])

    def __enter__(self) -> StoreUnion:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for shard in self.shards:
            shard.close()

    @property
    def dim(self) -> int:
        return self.shards[0].dim

    @property
    def attrs(self) -> dict[str, Any]:
        return self.shards[0].attrs

    @property
    def modality(self) -> str | None:
        return self.shards[0].modality

    @property
    def model_spec(self) -> str | None:
        return self.shards[0].model_spec

    @property
    def is_stitchkit(self) -> bool:
        return all(s.is_stitchkit for s in self.shards)

    @property
    def complete(self) -> bool:
        return True  # every shard was opened as complete

    @property
    def has_tokens(self) -> bool:
        return False  # token stores are merged first: their widths may differ per shard

    def space(self) -> dict[str, Any]:
        return self.shards[0].space()

    @property
    def ids(self) -> np.ndarray:
        if self._ids is None:
            self._ids = np.concatenate([s.ids for s in self.shards])
            self._ids.flags.writeable = False
        return self._ids

    def ids_at(self, rows: np.ndarray | slice) -> np.ndarray:
        return self.ids[rows] if self._ids is not None else _keys_to_str(self._keys[rows])

    @property
    def id_keys(self) -> np.ndarray:
        """Ids as fixed-width UTF-8 bytes, in row order (see EmbeddingStore.id_keys)."""
        return self._keys

    def id_index(self) -> IdIndex:
        return self._index

    def check_unique_ids(self) -> None:
        """Ids were checked across all shards when the union was opened."""

    def column(self, name: str) -> np.ndarray | None:
        if name not in self._columns:
            cols = [s.column(name) for s in self.shards]
            col = None if any(c is None for c in cols) else np.concatenate(cols)
            if col is not None:
                col.flags.writeable = False
            self._columns[name] = col
        return self._columns[name]

    @property
    def labels(self) -> np.ndarray | None:
        return self.column("labels")

    @property
    def texts(self) -> np.ndarray | None:
        return self.column("texts")

    @property
    def groups(self) -> np.ndarray | None:
        return self.column("groups")

    @property
    def failed(self) -> list[tuple[str, str]]:
        return [f for s in self.shards for f in s.failed]

    def index_of(self, ids: Sequence[str] | np.ndarray) -> np.ndarray:
        return self._index.rows_of(ids, self.path)

    def split_rows(self, rows: np.ndarray) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(shard number, positions within ``rows``, rows within that shard) per shard touched."""
        shard_of = np.searchsorted(self._offsets, rows, side="right") - 1
        for k in np.unique(shard_of):
            where = np.flatnonzero(shard_of == k)
            yield int(k), where, rows[where] - self._offsets[k]

    def read(self, rows: np.ndarray | slice | None = None) -> np.ndarray:
        if rows is None:
            rows = np.arange(len(self))
        elif isinstance(rows, slice):
            rows = np.arange(len(self))[rows]
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        for k, where, local in self.split_rows(rows):
            out[where] = self.shards[k].read(local)
        return out

    @property
    def token_shape(self) -> None:
        return None

    def read_tokens(self, rows: np.ndarray, dtype: Any = np.float32) -> tuple[np.ndarray, np.ndarray]:
        """As a store without tokens: each row's global vector as its one token."""
        return self.read(rows)[:, None, :].astype(dtype, copy=False), np.ones((len(rows), 1), dtype=bool)

    def iter_chunks(
        self, rows: np.ndarray | None = None, chunk_size: int = 16384
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        rows = np.arange(len(self)) if rows is None else np.asarray(rows)
        for start in range(0, len(rows), chunk_size):
            part = rows[start : start + chunk_size]
            yield part, self.read(part)

    def check_finite(self, chunk_size: int = 16384) -> None:
        for shard in self.shards:
            shard.check_finite(chunk_size)
