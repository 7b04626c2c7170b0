"""Token rows read straight from the file's pages, for readers that convert them anyway.

A store keeps each row's tokens in a chunk of its own, uncompressed (see
:class:`~stitchkit.store.store.StoreWriter`), so a row's float16 tokens are one run of bytes in
the file, and consecutive rows are mostly consecutive runs. Where that holds for every row,
:class:`TokenPages` maps the file read-only and hands out views of those bytes: the one pass
that converts them to float32 (the head's scoring) then reads the page cache directly, with no
HDF5 read and no float16 copy in between. Measured on 161 Lite2 rows (33 MB of float16), from
the page cache, read and converted to float32 by torch on 2 threads: 2.6-3.8 ms of wall time
through the pages, 13-16 ms through h5py (docs/speed.md, "Head scoring with tokens").

Anything else (filters, chunks of several rows, another byte order, a user block, rows never
written, an h5py without ``chunk_iter``) gives no pages: callers read through h5py as before.
"""

from __future__ import annotations

import mmap
import os
import sys
from pathlib import Path

import h5py
import numpy as np

_PAGE = mmap.PAGESIZE


class TokenPages:
    """Byte offsets of a token dataset's one-row chunks, and a read-only map of the file."""

    def __init__(self, path: Path, offsets: np.ndarray, row_shape: tuple[int, int]) -> None:
        self.path, self.offsets, self.row_shape = path, offsets, row_shape
        self.row_bytes = int(np.prod(row_shape)) * 2
        with open(path, "rb") as fh:
            self._map = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)

    @classmethod
    def of(cls, h5: h5py.File, data: h5py.Dataset) -> TokenPages | None:
        """Pages of ``data`` (an (N, T, D) float16 dataset of ``h5``), or None where its rows
        are not plain runs of bytes in the file."""
        n, t, d = data.shape
        if (data.chunks != (1, t, d) or data.dtype != np.dtype("<f2") or n == 0
                or data.id.get_create_plist().get_nfilters() != 0
                or h5.id.get_create_plist().get_userblock() != 0
                or not hasattr(data.id, "chunk_iter")):
            return None
        offsets = np.full(n, -1, dtype=np.int64)
        row_bytes, plain = t * d * 2, [True]

        def visit(info: object) -> None:
            if info.size != row_bytes or info.filter_mask != 0:  # type: ignore[attr-defined]
                plain[0] = False
            offsets[info.chunk_offset[0]] = info.byte_offset  # type: ignore[attr-defined]

        data.id.chunk_iter(visit)
        if not plain[0] or (offsets < 0).any():
            return None
        return cls(Path(h5.filename), offsets, (t, d))

    def runs(self, rows: np.ndarray) -> list[tuple[int, int, int]]:
        """``(a, b, byte offset)``: positions ``a:b`` of ``rows`` whose tokens are one run of
        bytes starting there."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0:
            return []
        at = self.offsets[rows]
        breaks = np.flatnonzero(np.diff(at) != self.row_bytes) + 1
        starts, ends = np.r_[0, breaks], np.r_[breaks, len(rows)]
        return [(int(a), int(b), int(at[a])) for a, b in zip(starts, ends, strict=True)]

    def views(self, rows: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """``(a, tokens)`` pieces: float16 views (read-only) of the file's bytes holding the
        tokens of ``rows[a:a + len(tokens)]``, in the order of ``rows``."""
        t, d = self.row_shape
        return [(a, np.frombuffer(self._map, np.float16, count=(b - a) * t * d, offset=off).reshape(b - a, t, d))
                for a, b, off in self.runs(rows)]

    def _advise(self, rows: np.ndarray, advice: int) -> None:
        for a, b, off in self.runs(rows):
            start = off - off % _PAGE
            self._map.madvise(advice, start, off + (b - a) * self.row_bytes - start)

    def prefetch(self, rows: np.ndarray) -> None:
        """Ask the kernel to read the pages of ``rows`` now, without waiting for them."""
        self._advise(rows, mmap.MADV_WILLNEED)

    def release(self, rows: np.ndarray) -> None:
        """Unmap the pages of ``rows`` from this process (they stay in the page cache): a pass
        over a large store keeps the process's resident memory flat."""
        self._advise(rows, mmap.MADV_DONTNEED)

    def close(self) -> None:
        try:
            self._map.close()
        except BufferError:  # a view is still alive: the map goes when the last one does
            pass


def token_pages(h5: h5py.File, data: h5py.Dataset) -> TokenPages | None:
    """:meth:`TokenPages.of`, or None on any platform without ``mmap.madvise`` or whose floats are
    not little-endian (the views are the file's bytes as they are)."""
    if not hasattr(mmap.mmap, "madvise") or os.name != "posix" or sys.byteorder != "little":
        return None
    return TokenPages.of(h5, data)
