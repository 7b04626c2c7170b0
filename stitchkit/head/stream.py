"""Training batches read from the stores while the head computes, in the stores' own order.

**Order.** Per epoch, from ``(seed, epoch)`` alone: the training pairs, in the image store's
row order, are cut into *blocks* of ``block`` consecutive rows; the blocks are shuffled; runs
of consecutive blocks make *windows* of ``buffer`` rows, and the rows of each window are
shuffled. Batches are consecutive ``batch_size`` rows of that order; the last one takes what is
left (one row left over joins the batch before it: a contrastive batch needs two). Every row
comes once per epoch (pairs from several sources: :func:`balanced_order`), and the same seed gives the same batches whatever
reads them, so a resumed run sees the batches an uninterrupted one saw. Where the training set
is no larger than the buffer this is an ordinary shuffle.

**Reading.** A window is read as whole blocks, each one slice of the store (the tokens are
chunked one row per chunk, so a block is one HDF5 read of consecutive chunks instead of one
read per row). One background thread (named ``stitch-loader``) reads the window a batch needs,
gathers the batch (tokens as stored, float16; in page-locked memory when bound for a GPU) and
keeps up to ``depth`` batches ready, so reading overlaps the forward and backward passes. The
tokens become float32 in the training thread, by torch on the device (on the CPU with torch's
own threads: a float16 → float32 pass in the loader thread took three times the CPU of the
read, 21 against 6.5 ms per batch of 64 Lite2 rows, and on two cores a third busy thread stalls
torch's two). What is held: the windows in use (one, two
where a batch straddles them) and the batches ahead; nothing grows with the number of pairs.
"""

from __future__ import annotations

import contextlib
import ctypes
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .data import Side, is_lazy


@dataclass(frozen=True)
class Shuffle:
    """How an epoch's order is drawn: blocks of ``block`` consecutive rows, shuffled, then rows
    shuffled within windows of ``buffer`` rows (a multiple of ``block``)."""

    block: int = 16
    buffer: int = 1024


def epoch_order(n: int, shuffle: Shuffle, seed: int, epoch: int) -> np.ndarray:
    """The epoch's order of the training positions ``0 .. n-1`` (see the module docstring)."""
    rng = np.random.default_rng([seed, epoch])
    if n <= shuffle.buffer:  # one window: a plain shuffle (the draws stitchkit always made)
        return rng.permutation(n).astype(np.int64)
    starts = rng.permutation(np.arange(0, n, shuffle.block))
    order = (starts[:, None] + np.arange(shuffle.block)).ravel()
    order = order[order < n]  # the last block may be short
    for a in range(0, n, shuffle.buffer):
        order[a:a + shuffle.buffer] = rng.permutation(order[a:a + shuffle.buffer])
    return order.astype(np.int64)


def balanced_order(sources: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """An epoch over pairs from several sources (``sources[i]``: the source of position ``i``)
    in which each source gives as many rows as the largest: a smaller one comes round again in a
    fresh order, so a batch holds the sources in about equal shares whatever their sizes."""
    rng = np.random.default_rng([seed, epoch, 1])
    names, counts = np.unique(sources, return_counts=True)
    parts = []
    for name in names:
        own = np.nonzero(sources == name)[0]
        rounds = -(-counts.max() // len(own))
        parts.append(np.concatenate([rng.permutation(own) for _ in range(rounds)])[:counts.max()])
    return rng.permutation(np.concatenate(parts)).astype(np.int64)


def batch_bounds(n: int, size: int) -> list[tuple[int, int]]:
    """(start, stop) of each batch of an epoch of ``n`` rows: ``size`` rows each, the last one
    what is left, a single row left over joined to the batch before it."""
    bounds = [(a, min(a + size, n)) for a in range(0, n, size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds or [(0, 0)]


@dataclass(frozen=True)
class BatchSpec:
    """What a batch holds and where it goes: tokens of which side, the device, ``depth``."""

    batch_size: int
    image_tokens: bool
    text_tokens: bool
    device: torch.device
    buffer: int
    depth: int = 4


@dataclass
class Batch:
    """One training batch: its positions in the training set and both sides' tensors (CPU;
    pinned when the batch is bound for a GPU)."""

    rows: np.ndarray
    image: tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]
    text: tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]


class _Window:
    """The rows of one window of one side, read in the store's row order into buffers that
    the next window reuses; ``where[i]`` is the row holding the window's ``i``-th position."""

    def __init__(self) -> None:
        self._buffers: dict[str, np.ndarray] = {}

    def load(self, side: Side, positions: np.ndarray, tokens: bool) -> _Window:
        lazy = side.glob if is_lazy(side.glob) else side.tokens
        order = np.argsort(lazy.rows[positions], kind="stable") if is_lazy(lazy) \
            else np.arange(len(positions))
        local = positions[order]
        self.where = np.empty(len(positions), dtype=np.int64)
        self.where[order] = np.arange(len(positions))
        self.glob = self._read("glob", side.glob, local)
        use = tokens and side.tokens is not None
        self.tokens = self._read("tokens", side.tokens, local) if use else None
        self.mask = side.mask[local] if use else None
        return self

    def _read(self, name: str, source: Any, local: np.ndarray) -> np.ndarray:
        buf = self._buffers.get(name)
        if buf is None or len(buf) < len(local):  # a fresh buffer pays its page faults once
            buf = self._buffers[name] = np.empty((len(local), *source.shape[1:]), dtype=source.dtype)
        if is_lazy(source):
            return source.read_into(local, buf)
        buf[:len(local)] = source[local]
        return buf[:len(local)]


def _gather(windows: list[tuple[_Window, np.ndarray]]
            ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(globals, tokens as stored, mask) of a batch from the windows it spans (offsets within
    each): one copy of each, trimmed to the batch's longest mask."""
    rows = [(w, w.where[o]) for w, o in windows]
    glob = _joined([w.glob[r] for w, r in rows])
    if rows[0][0].tokens is None:
        return glob, None, None
    mask = _joined([w.mask[r] for w, r in rows])
    # Trim padding shared by the whole batch: text batches are often much shorter than T.
    t = int(mask.any(axis=0).nonzero()[0].max()) + 1 if mask.any() else 1
    return glob, _joined([w.tokens[r, :t] for w, r in rows]), np.ascontiguousarray(mask[:, :t])


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def read_batch(side: Side, rows: np.ndarray, tokens: bool
               ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(globals, tokens as stored, mask) of ``rows`` of ``side``, read in the store's order,
    in this thread."""
    return _gather([(_Window().load(side, rows, tokens), np.arange(len(rows)))])


def tensors(arrays: tuple[np.ndarray, np.ndarray | None, np.ndarray | None], pin: bool = False
            ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Arrays as CPU tensors (sharing their memory), page-locked when ``pin`` (bound for a GPU)."""
    out = tuple(None if a is None else torch.from_numpy(a) for a in arrays)
    if pin:
        out = tuple(None if t is None else t.pin_memory() for t in out)
    return out  # type: ignore[return-value]


def batches(img: Side, txt: Side, order: np.ndarray, spec: BatchSpec, start: int = 0
            ) -> Iterator[Batch]:
    """The epoch's batches from step ``start`` on, read window by window (in this thread)."""
    size, w = spec.batch_size, spec.buffer
    cuda = spec.device.type == "cuda"
    held: dict[int, tuple[_Window, _Window]] = {}
    spare: list[tuple[_Window, _Window]] = []  # windows done with: their buffers are reused
    for a, b in batch_bounds(len(order), size)[start:]:
        pos = np.arange(a, b)
        needed = np.unique(pos // w).tolist()
        for k in [k for k in held if k < needed[0]]:
            spare.append(held.pop(k))  # every row of an earlier window has been handed out
        spans = []
        for k in needed:
            if k not in held:
                at = order[k * w:(k + 1) * w]
                i, t = spare.pop() if spare else (_Window(), _Window())
                held[k] = (i.load(img, at, spec.image_tokens), t.load(txt, at, spec.text_tokens))
            spans.append((k, pos[pos // w == k] - k * w))
        image = _gather([(held[k][0], o) for k, o in spans])
        text = _gather([(held[k][1], o) for k, o in spans])
        yield Batch(order[pos], tensors(image, cuda), tensors(text, cuda))


_END = object()


class Prefetch:
    """Iterates ``source`` in a daemon thread named ``stitch-loader``, up to ``depth`` items
    ahead, in order; an error in the thread is raised where the item would have come.

    >>> with Prefetch(batches(img, txt, order, spec), spec.depth) as loader:  # doctest: +SKIP
    ...     for batch in loader: ...
    """

    def __init__(self, source: Iterator[Any], depth: int) -> None:
        self._source = source
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stitch-loader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        _name_os_thread(b"stitch-loader")
        try:
            for item in self._source:
                if not self._put(item):
                    return
            self._put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            self._put(_Failed(exc))

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[Any]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item

    def close(self) -> None:
        """Stop the thread (it may be blocked on a full queue), wait for it, and let go of the
        source (a generator holding its windows: they are freed now, not at the next epoch)."""
        self._stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()
        self._thread.join()
        close = getattr(self._source, "close", None)
        if close is not None:
            close()
        self._source = iter(())

    def __enter__(self) -> Prefetch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class _Failed:
    error: BaseException


def _name_os_thread(name: bytes) -> None:
    """Give the calling thread a name that ``top -H`` and /proc show (Linux; else nothing)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).prctl(15, ctypes.c_char_p(name[:15]), 0, 0, 0)  # PR_SET_NAME
