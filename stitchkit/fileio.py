"""Atomic file output (a result appears whole under its final name or not at all) and the
plain id lists (one id per line) that anchors, splits and `--ids` options read."""

from __future__ import annotations

import contextlib
import glob
import os
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path

from .errors import UsageError

# Temporaries are named after the host and pid that write them, so that a later writer can
# tell a temporary of a dead process (kill -9, OOM, power cut) from one still being written,
# also when several hosts share the folder (a cluster file system).
_HOST = socket.gethostname().replace(os.sep, "_") or "localhost"


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, *, clean_stale: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds.

    The temporary file lives in the same folder so that the final ``os.replace`` is atomic,
    and an existing file at ``path`` stays untouched when writing fails (disk full, Ctrl-C).
    Temporaries of ``path`` left by dead writers on this host (kill -9) are removed first.
    """
    final = Path(path)
    check_writable_dir(final)  # a clear line instead of ENOENT / EROFS on the temporary's name
    if clean_stale:  # off where a folder of many small files is removed as a whole anyway
        _remove_stale_temporaries(final)
    tmp = final.with_name(f".{final.name}.{_HOST}-{os.getpid()}.partial")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _remove_stale_temporaries(final: Path) -> None:
    """Delete temporaries of ``final`` left by writers on this host that no longer run."""
    prefix, suffix = f".{final.name}.", ".partial"
    for tmp in final.parent.glob(glob.escape(prefix) + "*" + suffix):
        host, _, pid = tmp.name[len(prefix) : -len(suffix)].rpartition("-")
        if host == _HOST and pid.isdigit() and not pid_running(int(pid)):
            with contextlib.suppress(OSError):
                tmp.unlink()


def pid_running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists but belongs to someone else
        return True
    return True


def check_writable_dir(path: str | os.PathLike) -> None:
    """Fail early, before hours of work, when the output folder cannot take a file."""
    folder = Path(path).resolve().parent
    if not folder.is_dir():
        raise UsageError(f"output folder {folder} does not exist: create it or choose another -o")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"output folder {folder} is not writable: choose another -o")


def read_id_file(path: str | Path) -> list[str]:
    """One id per line; blank lines and lines starting with '#' are skipped."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such id file; give a text file with one id per line")
    ids = [
        line.strip()
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not ids:
        raise UsageError(f"{path} lists no ids: give one id per line")
    return list(dict.fromkeys(ids))


def write_id_file(path: str | Path, ids: Sequence[str]) -> Path:
    with atomic_output(path) as tmp:
        tmp.write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
    return Path(path)
