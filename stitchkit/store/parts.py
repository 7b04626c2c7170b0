"""An embedding run's finished batches: the store's layout in pieces, one small HDF5 file per
batch in ``OUT.parts/`` (``part-000042.h5``), which :mod:`stitchkit.embed` writes as batches
finish and assembles into the store, in input order, at the end::

    /positions         (n,) int64          the batch's inputs that were embedded (input positions)
    /embeddings        (n, D) float32      absent when none was
    /tokens            (n, T, D) float16   optional (``--tokens``)
    /tokens_mask       (n, T) bool         which tokens are real
    /failed_positions  (F,) int64          the batch's inputs that could not be embedded ...
    /failed_reasons    (F,) UTF-8 string   ... and why
    /mappings          UTF-8 string        optional: how each image's pixels were mapped

With ``--token-grid`` the tokens are already pooled, and the attributes ``token_grid`` and
``model_token_grid`` (``"4x4"``, ``"7x7"``) say onto which grid from which; assembling refuses
parts that disagree.

Each part states its kind and version in its attributes (``format``, ``format_version``:
:data:`stitchkit.formats.PARTS`), so a run resumed by another stitchkit refuses parts it cannot
read instead of assembling them wrongly.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from ..fileio import atomic_output
from ..formats import PARTS, check_format
from .store import STR


@dataclass
class PartRows:
    """The rows a part holds, in its ``positions`` order."""

    embeddings: np.ndarray  # (n, D)
    tokens: np.ndarray | None = None  # (n, T, D)
    tokens_mask: np.ndarray | None = None  # (n, T)
    token_grid: str | None = None  # "4x4": the grid the tokens were pooled onto (None: the model's)
    model_token_grid: str | None = None  # "7x7": the model's grid they were pooled from


@dataclass
class PartIndex:
    """What a part says without its rows: enough to place them and size the store."""

    positions: np.ndarray  # (n,) int64
    failed: list[tuple[int, str]] = field(default_factory=list)  # (input position, reason)
    mappings: list[str] = field(default_factory=list)
    token_shape: tuple[int, int] | None = None  # (T, D) of its tokens; None without
    token_grid: str | None = None  # as PartRows says
    model_token_grid: str | None = None


def write_part(path: Path, positions: Sequence[int], rows: PartRows | None,
               failed: Sequence[tuple[int, str]], mappings: Sequence[str] | None = None) -> None:
    """Write one finished batch to ``path``, atomically: it appears whole or not at all."""
    # Built in memory, then written as plain bytes: HDF5 closing a file whose writes failed
    # (disk full) can crash the process (SIGSEGV in h5py's close); a plain write raises OSError.
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        h5.attrs["format"], h5.attrs["format_version"] = PARTS.encoding_type, PARTS.version
        h5["positions"] = np.asarray(positions, dtype=np.int64)
        if rows is not None:
            h5["embeddings"] = rows.embeddings.astype(np.float32, copy=False)
            if rows.tokens is not None:
                h5["tokens"] = rows.tokens.astype(np.float16, copy=False)
                h5["tokens_mask"] = rows.tokens_mask.astype(bool)
                for key in ("token_grid", "model_token_grid"):
                    if getattr(rows, key) is not None:
                        h5.attrs[key] = getattr(rows, key)
        h5["failed_positions"] = np.asarray([p for p, _ in failed], dtype=np.int64)
        h5.create_dataset("failed_reasons", data=np.array([r for _, r in failed], dtype=object), dtype=STR)
        if mappings:
            h5.create_dataset("mappings", data=np.array(mappings, dtype=object), dtype=STR)
    # No scan for stale temporaries per part (a folder of thousands): OUT.parts goes as a whole.
    with atomic_output(path, clean_stale=False) as tmp:
        tmp.write_bytes(buffer.getbuffer())


def _attr(value: object) -> str | None:
    return value.decode() if isinstance(value, bytes) else None if value is None else str(value)


def _strings(values: np.ndarray) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else v for v in values]


def read_part_index(path: Path) -> PartIndex:
    """A part's positions, failures, pixel mappings and token shape; its rows stay on disk.
    A part from a newer stitchkit is refused in one line (one written before parts carried a
    version is version 1)."""
    with h5py.File(path, "r") as h5:
        check_format(path, PARTS, h5.attrs.get("format_version"))
        return PartIndex(
            positions=h5["positions"][()],
            failed=list(zip(h5["failed_positions"][()].tolist(), _strings(h5["failed_reasons"][()]),
                            strict=True)),
            mappings=_strings(h5["mappings"][()]) if "mappings" in h5 else [],
            token_shape=tuple(h5["tokens"].shape[1:]) if "tokens" in h5 else None,
            token_grid=_attr(h5.attrs.get("token_grid")),
            model_token_grid=_attr(h5.attrs.get("model_token_grid")),
        )


def read_part_rows(path: Path, *, tokens: bool = False) -> PartRows:
    """A part's embeddings, and its tokens and their mask where ``tokens``."""
    with h5py.File(path, "r") as h5:
        return PartRows(h5["embeddings"][()],
                        h5["tokens"][()] if tokens else None,
                        h5["tokens_mask"][()] if tokens else None)
