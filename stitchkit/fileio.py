"""Atomic file output: a result appears whole under its final name or not at all."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds.

    The temporary file lives in the same folder so that the final ``os.replace`` is atomic,
    and an existing file at ``path`` stays untouched when writing fails (disk full, Ctrl-C).
    """
    final = Path(path)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.partial")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def check_writable_dir(path: str | os.PathLike) -> None:
    """Fail early, before hours of work, when the output folder cannot take a file."""
    from .errors import UsageError

    folder = Path(path).resolve().parent
    if not folder.is_dir():
        raise UsageError(f"output folder {folder} does not exist: create it or choose another -o")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"output folder {folder} is not writable: choose another -o")
