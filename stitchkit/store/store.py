"""Reading and writing embedding stores (layout in :mod:`stitchkit.store.format`)."""

from __future__ import annotations

import ctypes
import errno
import functools
import json
import os
import resource
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import h5py
import numpy as np

from ..errors import StoreError
from ..fileio import atomic_output
from ..provenance import code_provenance
from . import format as fmt
from .checks import require_finite
from .pages import TokenPages, token_pages
from .rows import read_rows

STR = h5py.string_dtype("utf-8")


_READ_ROWS = 65536  # strings are read and decoded in blocks: bounded transient memory


def _decode(values: np.ndarray) -> np.ndarray:
    """HDF5 strings come back as bytes or str depending on who wrote them; always give str."""
    if values.dtype.kind in ("S", "O"):
        keys = _as_bytes(values)
        if keys is not None:
            return _keys_to_str(keys)
        return np.array(
            [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values],
            dtype=object,
        )
    return values.astype(str).astype(object)


def _as_bytes(values: np.ndarray) -> np.ndarray | None:
    """Fixed-width UTF-8 bytes ('S') of an array of bytes or str; None if it cannot be one."""
    if values.dtype.kind == "S":
        return values
    if values.dtype.kind == "U":
        try:
            return values.astype("S")  # ASCII only: numpy's cast refuses anything else
        except UnicodeEncodeError:
            return np.array([v.encode("utf-8") for v in values.tolist()], dtype="S")
    if len(values) and isinstance(values[0], bytes):
        try:
            return values.astype("S")
        except (TypeError, ValueError):  # mixed bytes and str
            return None
    try:
        return _as_bytes(values.astype(str))
    except (TypeError, ValueError):
        return None


def _keys_to_str(keys: np.ndarray) -> np.ndarray:
    """'S' UTF-8 bytes -> object array of str. ASCII (nearly every id and label) decodes in C."""
    if keys.size == 0:
        return np.array([], dtype=object)
    if int(keys.view(np.uint8).max(initial=0)) < 128:
        return keys.astype("U").astype(object)
    return np.array([v.decode("utf-8", "replace") for v in keys.tolist()], dtype=object)


def _read_keys(dataset: h5py.Dataset) -> np.ndarray:
    """A string dataset as fixed-width UTF-8 bytes, read block by block."""
    n = int(dataset.shape[0])
    parts = []
    for a in range(0, n, _READ_ROWS):
        raw = dataset[a:a + _READ_ROWS]
        keys = _as_bytes(raw)
        parts.append(keys if keys is not None else np.array(
            [v if isinstance(v, bytes) else str(v).encode("utf-8") for v in raw], dtype="S"))
    return np.concatenate(parts) if parts else np.array([], dtype="S1")


def _read_strings(dataset: h5py.Dataset) -> np.ndarray:
    """A string dataset of distinct values (ids) as an object array of str, block by block."""
    n = int(dataset.shape[0])
    out = np.empty(n, dtype=object)
    for a in range(0, n, _READ_ROWS):
        raw = dataset[a:a + _READ_ROWS]
        keys = _as_bytes(raw)
        out[a:a + len(raw)] = _decode(raw) if keys is None else _keys_to_str(keys)
    return out


def _read_codes(dataset: h5py.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """A string dataset whose values repeat (labels, groups) as (distinct values, codes).

    ``values[codes]`` is the column. Read block by block; each distinct value is decoded once,
    so a million labels cost 4 bytes each (int32 codes) and a handful of str objects.
    """
    n = int(dataset.shape[0])
    codes = np.empty(n, dtype=np.int32)
    seen: dict[str, int] = {}  # distinct value -> code
    for a in range(0, n, _READ_ROWS):
        raw = dataset[a:a + _READ_ROWS]
        keys = _as_bytes(raw)
        if keys is None:
            uniq, inverse = np.unique(_decode(raw), return_inverse=True)  # mixed bytes and str
            texts = uniq.tolist()
        else:
            uniq, inverse = np.unique(keys, return_inverse=True)
            texts = _keys_to_str(uniq).tolist()  # only the block's distinct values are decoded
        local = np.fromiter((seen.setdefault(t, len(seen)) for t in texts), dtype=np.int32,
                            count=len(texts))
        codes[a:a + len(raw)] = local[inverse.reshape(-1)]
    values = np.empty(len(seen), dtype=object)
    values[:] = list(seen)
    return values, codes


def _query_keys(ids: Sequence[str] | np.ndarray) -> np.ndarray:
    """Ids a caller asks for, as 'S' UTF-8 bytes to compare with the store's keys."""
    values = np.asarray(ids)
    if values.size == 0:
        return np.array([], dtype="S1")
    if values.dtype.kind not in ("S", "U"):
        values = values.astype(str)
    keys = _as_bytes(values)
    if keys is None:  # pragma: no cover - str arrays always convert
        raise StoreError("ids must be strings")
    return keys


class IdIndex:
    """Sorted fixed-width UTF-8 ids and their rows: id -> row by binary search, no dict.

    About (id length + 8) bytes per row, where a dict of Python strings takes about 200.
    """

    def __init__(self, keys: np.ndarray) -> None:
        self.order = np.argsort(keys, kind="stable")
        self.sorted = keys[self.order]

    def repeated(self) -> np.ndarray:
        """Rows whose id an earlier row already holds (in row order)."""
        same = np.flatnonzero(self.sorted[1:] == self.sorted[:-1])
        return np.sort(self.order[same + 1])

    def lookup(self, ids: Sequence[str] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows, found) for ``ids``; rows of missing ids are arbitrary."""
        query = _query_keys(ids)
        if len(self.sorted) == 0 or len(query) == 0:
            return np.zeros(len(query), dtype=np.int64), np.zeros(len(query), dtype=bool)
        at = np.minimum(np.searchsorted(self.sorted, query), len(self.sorted) - 1)
        found = self.sorted[at] == query
        return self.order[at].astype(np.int64), found

    def rows_of(self, ids: Sequence[str] | np.ndarray, where: object) -> np.ndarray:
        rows, found = self.lookup(ids)
        if not found.all():
            missing = _keys_to_str(_query_keys(ids)[~found][:3]).tolist()
            raise StoreError(
                f"{where}: {int((~found).sum())} ids not found (e.g. {missing}): check the id list"
            )
        return rows


def _attr(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_attr(path: str | os.PathLike, key: str) -> Any:
    """One root attribute of the HDF5 file at ``path`` (bytes decoded, numpy scalars as Python
    values; None where absent), without opening it as a store: no check of its datasets,
    version or completeness. OSError where it cannot be read as HDF5."""
    with h5py.File(path, "r") as h5:
        return _attr(h5.attrs.get(key))


class HDF5Header(NamedTuple):
    """What an HDF5 file's root says it is, read without opening it as a store."""

    format: Any  # the ``format`` attribute: a store's, a score file's; None in a plain HDF5 file
    format_version: Any  # as written: formats.check_format reads it
    has_embeddings: bool  # an ``embeddings`` dataset: a store, perhaps another tool's


def read_hdf5_header(path: str | os.PathLike) -> HDF5Header:
    """The :class:`HDF5Header` of the HDF5 file at ``path`` (attributes as :func:`read_attr`
    gives them), for telling stores from other HDF5 files. OSError where it is not HDF5."""
    with h5py.File(path, "r") as h5:
        return HDF5Header(_attr(h5.attrs.get("format")), _attr(h5.attrs.get("format_version")),
                      fmt.EMBEDDINGS in h5)


class EmbeddingStore:
    """Read access to an embedding store; embeddings stay on disk until asked for.

    >>> store = EmbeddingStore("lite0.h5")          # doctest: +SKIP
    >>> X = store.read(store.index_of(["a", "b"]))  # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike, *, allow_incomplete: bool = False) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise StoreError(f"{self.path}: no such file; check the path or run `stitch embed` first")
        if self.path.is_dir():
            raise StoreError(f"{self.path} is a folder, not an HDF5 store: give the .h5 file")
        if not h5py.is_hdf5(self.path):
            raise StoreError(
                f"{self.path} is not an HDF5 file (truncated or another format): "
                "re-create it with `stitch embed`"
            )
        try:
            self._h5 = h5py.File(self.path, "r")
        except OSError as exc:
            raise StoreError(f"{self.path} cannot be read as HDF5 ({exc}): re-create it") from exc
        self._validate(allow_incomplete)
        self._datasets: dict[str, h5py.Dataset] = {}
        self._ids: np.ndarray | None = None
        self._keys: np.ndarray | None = None
        self._index: IdIndex | None = None
        self._columns: dict[str, np.ndarray | None] = {}
        self._codes: dict[str, tuple[np.ndarray, np.ndarray] | None] = {}
        self._pages: TokenPages | None | bool = False  # False: not looked for yet

    def _validate(self, allow_incomplete: bool) -> None:
        h5 = self._h5
        for name in (fmt.EMBEDDINGS, fmt.IDS):
            if name not in h5:
                raise StoreError(
                    f"{self.path} has no '{name}' dataset: a store needs 'embeddings' (N, D) and 'ids' (N,)"
                )
        emb, ids = h5[fmt.EMBEDDINGS], h5[fmt.IDS]
        if emb.ndim != 2 or ids.ndim != 1 or emb.shape[0] != ids.shape[0]:
            raise StoreError(
                f"{self.path}: 'embeddings' {emb.shape} and 'ids' {ids.shape} do not form "
                "an (N, D) / (N,) pair"
            )
        fmt.check_format(self.path, fmt.STORE, _attr(h5.attrs.get("format_version")))
        if not allow_incomplete and not bool(h5.attrs.get("complete", True)):
            raise StoreError(
                f"{self.path} is marked incomplete: finish it by re-running the command that wrote it"
            )

    # -- context manager -------------------------------------------------------------------
    def close(self) -> None:
        if self._pages:
            self._pages.close()
        self._h5.close()

    def __enter__(self) -> EmbeddingStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return int(self._h5[fmt.EMBEDDINGS].shape[0])

    def __repr__(self) -> str:
        return f"EmbeddingStore({str(self.path)!r}, n={len(self)}, dim={self.dim})"

    # -- metadata --------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return int(self._h5[fmt.EMBEDDINGS].shape[1])

    @property
    def attrs(self) -> dict[str, Any]:
        return {k: _attr(v) for k, v in self._h5.attrs.items()}

    @property
    def is_stitchkit(self) -> bool:
        """False for plain HDF5 files from other tools: provenance checks then only warn."""
        return _attr(self._h5.attrs.get("format")) == fmt.FORMAT_NAME

    @property
    def complete(self) -> bool:
        return bool(self._h5.attrs.get("complete", True))

    @property
    def modality(self) -> str | None:
        return _attr(self._h5.attrs.get("modality"))

    @property
    def model_spec(self) -> str | None:
        return _attr(self._h5.attrs.get("model_spec"))

    def space(self) -> dict[str, Any]:
        """What identifies the space of these embeddings (model, weights, width)."""
        space = {k: self.attrs.get(k) for k in fmt.SPACE_ATTRS}
        space["dim"] = self.dim
        return space

    # -- columns ---------------------------------------------------------------------------
    @property
    def ids(self) -> np.ndarray:
        """Sample ids (object array of str), read and decoded once."""
        if self._ids is None:
            self._ids = _keys_to_str(self.id_keys) if self._keys is not None else \
                _read_strings(self._h5[fmt.IDS])
            self._ids.flags.writeable = False  # shared by every caller: never changed in place
        return self._ids

    def ids_at(self, rows: np.ndarray | slice) -> np.ndarray:
        """The ids of ``rows`` (object array of str), decoded from the compact keys: a loop
        over blocks needs no decoded copy of every id (about 60 bytes per row as str)."""
        if self._ids is not None:
            return self._ids[rows]
        return _keys_to_str(self.id_keys[rows])

    @property
    def id_keys(self) -> np.ndarray:
        """Ids as fixed-width UTF-8 bytes ('S'), in row order: compact keys to sort and join on."""
        if self._keys is None:
            self._keys = _read_keys(self._h5[fmt.IDS])
        return self._keys

    def id_index(self) -> IdIndex:
        """The ids sorted once (per store object) for lookups; checks they are unique."""
        if self._index is None:
            index = IdIndex(self.id_keys)
            self._refuse_repeated(index)  # a repeated id would pair the wrong rows: say which
            self._index = index
        return self._index

    def column(self, name: str) -> np.ndarray | None:
        """A string column (object array of str), read once per store object; None if absent.
        Each distinct value is one shared str object."""
        if name not in self._columns:
            coded = self.column_codes(name)
            col = None if coded is None else coded[0][coded[1]]
            if col is not None:
                col.flags.writeable = False  # cached and shared: copy before changing
            self._columns[name] = col
        return self._columns[name]

    def column_codes(self, name: str) -> tuple[np.ndarray, np.ndarray] | None:
        """A string column as (distinct values: object array of str, codes: int32 per row),
        ``values[codes]`` being the column; read once per store object; None if absent.
        For loops over row blocks that need no object per row (4 bytes a row)."""
        if name not in self._codes:
            coded = _read_codes(self._h5[name]) if name in self._h5 else None
            if coded is not None:
                coded[0].flags.writeable = coded[1].flags.writeable = False  # cached and shared
            self._codes[name] = coded
        return self._codes[name]

    @property
    def labels(self) -> np.ndarray | None:
        return self.column(fmt.LABELS)

    @property
    def texts(self) -> np.ndarray | None:
        return self.column(fmt.TEXTS)

    @property
    def groups(self) -> np.ndarray | None:
        return self.column(fmt.GROUPS)

    @property
    def has_tokens(self) -> bool:
        return fmt.TOKENS in self._h5

    @property
    def token_shape(self) -> tuple[int, int] | None:
        """(T, Dt) of the stored tokens, or None."""
        return tuple(self._h5[fmt.TOKENS].shape[1:]) if self.has_tokens else None

    @property
    def columns(self) -> list[str]:
        """The optional string columns present (labels, texts, groups)."""
        return [c for c in fmt.STRING_COLUMNS if c in self._h5]

    @property
    def string_columns(self) -> list[str]:
        """Every per-row string dataset beyond ids, by name: the named columns (labels, texts,
        groups) and any extra one (``view_position``, ``patient_id``)."""
        n = self._h5[fmt.IDS].shape[0]
        return [name for name, obj in self._h5.items()
                if name != fmt.IDS and isinstance(obj, h5py.Dataset) and obj.ndim == 1
                and obj.shape[0] == n and h5py.check_string_dtype(obj.dtype) is not None]

    @property
    def failed(self) -> list[tuple[str, str]]:
        if fmt.FAILED not in self._h5:
            return []
        group = self._h5[fmt.FAILED]
        return list(zip(_decode(group["ids"][()]), _decode(group["reasons"][()]), strict=True))

    @property
    def embeddings(self) -> h5py.Dataset:
        """The on-disk dataset; slice it (``store.embeddings[a:b]``) to read."""
        return self._h5[fmt.EMBEDDINGS]

    def index_of(self, ids: Sequence[str] | np.ndarray) -> np.ndarray:
        """Row positions of ``ids``; unknown ids are a usage error naming a few of them."""
        return self.id_index().rows_of(ids, self.path)

    def read(self, rows: np.ndarray | slice | None = None, *, tokens: bool = False,
             dtype: Any = np.float32, out: np.ndarray | None = None) -> np.ndarray:
        """Embeddings (or tokens) of ``rows`` in the order given, as ``dtype`` (into the first
        rows of ``out`` where given: a buffer reused across many large reads)."""
        return read_rows(self._dataset(fmt.TOKENS if tokens else fmt.EMBEDDINGS), rows, dtype, out)

    def _dataset(self, name: str) -> h5py.Dataset:
        """One h5py object per dataset, kept: h5py caches its selection machinery per object, and
        a fresh object per read made 128 one-row token reads 1.3x slower."""
        if name not in self._datasets:
            self._datasets[name] = self._h5[name]
        return self._datasets[name]

    def token_pages(self) -> TokenPages | None:
        """The tokens' rows as views of the file's pages (:mod:`~stitchkit.store.pages`), for a
        reader that converts them in one pass; None where the layout does not allow it."""
        if self._pages is False:
            self._pages = token_pages(self._h5, self._dataset(fmt.TOKENS)) if self.has_tokens else None
        return self._pages

    def read_tokens(self, rows: np.ndarray, dtype: Any = np.float32) -> tuple[np.ndarray, np.ndarray]:
        """Tokens (len(rows), T, D) as ``dtype`` (float16 is as stored) and their mask, rows in
        any order; a store without tokens gives its global vector as one token."""
        rows = np.asarray(rows, dtype=np.int64)
        if not self.has_tokens:
            return self.read(rows)[:, None, :].astype(dtype, copy=False), np.ones((len(rows), 1), dtype=bool)
        return self.read(rows, tokens=True, dtype=dtype), self.token_mask(rows)

    def token_mask(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Which tokens of ``rows`` (all by default) are real: (len(rows), T) booleans, read for
        those rows only (stores without a mask have every token real)."""
        if fmt.TOKENS_MASK in self._h5:
            return read_rows(self._dataset(fmt.TOKENS_MASK), rows, bool)
        n = len(self) if rows is None else len(rows)
        return np.ones((n, self.token_shape[0]), dtype=bool)

    def iter_chunks(
        self, rows: np.ndarray | None = None, chunk_size: int = 16384
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(rows, embeddings)`` blocks so that memory stays bounded by ``chunk_size``."""
        n = len(self)
        if rows is None:
            for start in range(0, n, chunk_size):
                stop = min(start + chunk_size, n)
                yield np.arange(start, stop), self.read(slice(start, stop))
            return
        for start in range(0, len(rows), chunk_size):
            part = rows[start : start + chunk_size]
            yield part, self.read(part)

    def check_unique_ids(self) -> None:
        """Refuse a store whose ids repeat (the format says unique; other tools may not)."""
        self.id_index()  # sorts the ids once, checks them, and keeps the sort for lookups

    def _refuse_repeated(self, index: IdIndex) -> None:
        again = index.repeated()
        if len(again):
            repeated = list(dict.fromkeys(_keys_to_str(self.id_keys[again]).tolist()))
            raise StoreError(
                f"{self.path}: {len(repeated)} ids repeat (e.g. {repeated[:3]}): ids must "
                "be unique; re-create the store or drop the repeated rows"
            )

    def check_finite(self, chunk_size: int = 16384) -> None:
        for rows, block in self.iter_chunks(chunk_size=chunk_size):
            require_finite(block, self.ids_at(rows), self.path)


def base_attrs(**attrs: Any) -> dict[str, Any]:
    """The attributes every store stitchkit writes carries, plus ``attrs``."""
    out: dict[str, Any] = {
        "format": fmt.FORMAT_NAME,
        "format_version": fmt.FORMAT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": json.dumps(library_versions()),
        "code": json.dumps(code_provenance()),
    }
    out.update({k: v for k, v in attrs.items() if v is not None})
    return out


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in ("stitchkit", "torch", "timm", "transformers", "open_clip_torch", "h5py", "numpy"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            pass
    return versions


class StoreWriter:
    """Stream rows into a new store; it appears at ``path`` complete, or not at all.

    Rows are appended in order (``append``) or, with ``size`` given up front, written at any
    positions (``put``), which lets a resumed job assemble batches computed out of order.

    >>> with StoreWriter("out.h5", dim=384, attrs=base_attrs(modality="text")) as w:  # doctest: +SKIP
    ...     w.append(ids, embeddings)
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        dim: int,
        attrs: dict[str, Any],
        columns: Sequence[str] = (),
        token_shape: tuple[int, int] | None = None,
        size: int = 0,
        expected_rows: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.dim = dim
        self.n = size
        self._attrs = attrs
        self._columns = tuple(columns)
        self._token_shape = token_shape
        self._atomic = atomic_output(self.path)
        self._failed: list[tuple[str, str]] = []
        self._expected_rows = expected_rows if expected_rows is not None else size
        self._emb_chunk = max(1, min(4096, (1 << 20) // (4 * dim)))  # rows per ~1 MiB chunk

    def __enter__(self) -> StoreWriter:
        tmp = self._atomic.__enter__()
        try:
            _check_space(tmp, self._estimate_bytes(self._expected_rows), self.path)
        except BaseException as exc:
            self._atomic.__exit__(type(exc), exc, exc.__traceback__)
            raise
        self._h5 = h5py.File(tmp, "w")
        h5 = self._h5
        h5.create_dataset(
            fmt.EMBEDDINGS, (self.n, self.dim), maxshape=(None, self.dim), dtype="f4",
            chunks=(self._emb_chunk, self.dim),
        )
        h5.create_dataset(fmt.IDS, (self.n,), maxshape=(None,), dtype=STR, chunks=(4096,))
        for name in self._columns:
            h5.create_dataset(name, (self.n,), maxshape=(None,), dtype=STR, chunks=(4096,))
        if self._token_shape is not None:
            t, d = self._token_shape
            h5.create_dataset(fmt.TOKENS, (self.n, t, d), maxshape=(None, t, d), dtype="f2",
                              chunks=(1, t, d))
            h5.create_dataset(fmt.TOKENS_MASK, (self.n, t), maxshape=(None, t), dtype=bool,
                              chunks=(1024, t))
        for key, value in self._attrs.items():
            h5.attrs[key] = value
        h5.attrs["complete"] = False
        h5.attrs["dim"] = self.dim
        return self

    def _estimate_bytes(self, rows: int) -> int:
        """About the size of the finished file: HDF5 allocates whole chunks (see __enter__)."""
        def whole(n: int, chunk: int) -> int:
            return -(-n // chunk) * chunk if n else 0

        size = whole(rows, self._emb_chunk) * 4 * self.dim
        size += (1 + len(self._columns)) * (whole(rows, 4096) * 16 + rows * 32)  # refs + heap
        if self._token_shape is not None:
            t, d = self._token_shape
            size += rows * t * 2 * d + whole(rows, 1024) * t
        return int(size * 1.02) + (32 << 10)

    def append(
        self,
        ids: Sequence[str],
        embeddings: np.ndarray,
        *,
        columns: dict[str, Sequence[str]] | None = None,
        tokens: np.ndarray | None = None,
        tokens_mask: np.ndarray | None = None,
    ) -> None:
        """Add rows at the end."""
        a, b = self.n, self.n + len(ids)
        for name in self._h5:
            if isinstance(self._h5[name], h5py.Dataset):
                self._h5[name].resize(b, axis=0)
        self.n = b
        self.put(np.arange(a, b), ids, embeddings, columns=columns, tokens=tokens, tokens_mask=tokens_mask)

    def put(
        self,
        rows: np.ndarray,
        ids: Sequence[str],
        embeddings: np.ndarray,
        *,
        columns: dict[str, Sequence[str]] | None = None,
        tokens: np.ndarray | None = None,
        tokens_mask: np.ndarray | None = None,
    ) -> None:
        """Write rows at positions ``rows`` (< the store's size), in any order."""
        n = len(ids)
        if embeddings.shape != (n, self.dim):
            raise ValueError(f"embeddings {embeddings.shape} do not match ({n}, {self.dim})")
        rows = np.asarray(rows, dtype=np.int64)
        order = np.argsort(rows, kind="stable")  # h5py writes need increasing positions
        at: np.ndarray | slice = rows[order]
        in_order = bool(np.all(order == np.arange(n)))
        if in_order and n and rows[-1] - rows[0] == n - 1:
            at = slice(int(rows[0]), int(rows[0]) + n)  # consecutive rows (a batch): one slice, no point selection

        def ordered(values: np.ndarray) -> np.ndarray:
            return values if in_order else values[order]

        h5 = self._h5
        h5[fmt.EMBEDDINGS][at] = ordered(np.asarray(embeddings, dtype=np.float32))
        h5[fmt.IDS][at] = ordered(np.asarray(ids, dtype=object))
        for name in self._columns:
            h5[name][at] = ordered(np.asarray((columns or {})[name], dtype=object))
        if self._token_shape is not None:
            if tokens is None or tokens_mask is None:
                raise ValueError("this store holds tokens: pass tokens and tokens_mask")
            t, d = self._token_shape  # token width may differ from dim (ViT before projection)
            if tokens.shape == (n, t, d) and tokens.dtype == np.float16 and tokens_mask.shape == (n, t):
                padded, mask = tokens, np.asarray(tokens_mask, dtype=bool)  # already the store's shape
            else:
                padded = np.zeros((n, t, d), dtype=np.float16)
                mask = np.zeros((n, t), dtype=bool)
                padded[:, : tokens.shape[1]] = tokens
                mask[:, : tokens_mask.shape[1]] = tokens_mask
            h5[fmt.TOKENS][at] = ordered(padded)
            h5[fmt.TOKENS_MASK][at] = ordered(mask)

    def add_failed(self, failed: Sequence[tuple[str, str]]) -> None:
        self._failed.extend(failed)

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> None:
        try:
            if exc_type is None:
                if self._failed:
                    group = self._h5.create_group(fmt.FAILED)
                    group.create_dataset("ids", data=np.array([f[0] for f in self._failed], dtype=object), dtype=STR)
                    group.create_dataset("reasons", data=np.array([f[1] for f in self._failed], dtype=object), dtype=STR)
                self._h5.attrs["n_failed"] = len(self._failed)
                self._h5.attrs["complete"] = True
            tmp = Path(self._h5.filename)
            self._h5.close()  # HDF5 writes cached chunks here: a full disk often fails only now
            if exc_type is None:
                self._check_written(tmp)
        except BaseException as failure:
            # The temporary is broken: never move it into place over an earlier result.
            self._atomic.__exit__(type(failure), failure, failure.__traceback__)
            raise
        self._atomic.__exit__(exc_type, exc, tb)

    def _check_written(self, tmp: Path) -> None:
        """Re-open the closed temporary: HDF5 reports some failed writes only as warnings."""
        try:
            with h5py.File(tmp, "r") as h5:
                ok = bool(h5.attrs.get("complete")) and h5[fmt.EMBEDDINGS].shape == (self.n, self.dim)
        except (OSError, KeyError) as exc:
            raise StoreError(f"writing {self.path} failed ({exc}): free space or write elsewhere") from exc
        if not ok:
            raise StoreError(f"writing {self.path} failed (the file is incomplete): free space or write elsewhere")


def _check_space(path: Path, size: int, name: Path) -> None:
    """Fail with a plain OSError (ENOSPC, EFBIG) when ``path`` cannot grow to ``size`` bytes.

    HDF5 reports a write that fails for lack of space only when the file is flushed or
    closed, and then may crash the process (SIGSEGV / SIGBUS in h5py's close, seen with
    HDF5 2.0): so the space is asked for once up front with fallocate(2) and released again
    before HDF5 opens the file. A check, not a reservation: another writer may still take the
    space. File systems without fallocate are not checked (glibc's posix_fallocate would
    emulate it by writing every block, too slow for large stores).
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if soft != resource.RLIM_INFINITY and size > soft:
        raise OSError(errno.EFBIG, os.strerror(errno.EFBIG), str(name))
    fallocate = getattr(_libc(), "fallocate", None)
    if fallocate is None:  # pragma: no cover - not Linux
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        if fallocate(fd, 0, ctypes.c_int64(0), ctypes.c_int64(size)) != 0:
            err = ctypes.get_errno()
            if err in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
                raise OSError(err, os.strerror(err), str(name))
            # EOPNOTSUPP and friends: the file system cannot tell in advance; HDF5 will.
    finally:
        os.ftruncate(fd, 0)
        os.close(fd)


@functools.cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    if hasattr(libc, "fallocate"):
        libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    return libc


def write_store(
    path: str | os.PathLike,
    ids: Sequence[str],
    embeddings: np.ndarray,
    *,
    attrs: dict[str, Any] | None = None,
    columns: dict[str, Sequence[str]] | None = None,
    failed: Sequence[tuple[str, str]] = (),
) -> Path:
    """Write an in-memory array as a complete store (atomically)."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    columns = {k: v for k, v in (columns or {}).items() if v is not None}
    with StoreWriter(
        path, dim=embeddings.shape[1], attrs=base_attrs(**(attrs or {})), columns=list(columns)
    ) as writer:
        writer.append(list(ids), embeddings, columns=columns)
        writer.add_failed(failed)
    return Path(path)
