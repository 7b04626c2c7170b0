"""Atomic file output (a result appears whole under its final name or not at all, also after a
power cut) and the plain id lists (one id per line) that anchors, splits and `--ids` options read."""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import re
import shutil
import socket
import tempfile
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
    It is moved with :func:`publish` (fsync of the file, rename, fsync of the folder), so a
    power cut cannot leave a name that points at unwritten blocks.
    Temporaries of ``path`` left by dead writers on this host (kill -9) are removed first.
    """
    final = Path(path)
    check_writable_dir(final)  # a clear line instead of ENOENT / EROFS on the temporary's name
    if clean_stale:  # off where a folder of many small files is removed as a whole anyway
        _remove_stale_temporaries(final)
    tmp = final.with_name(f".{final.name}.{_HOST}-{os.getpid()}.partial")
    try:
        yield tmp
        publish(tmp, final)
    finally:
        _remove(tmp)


def publish(tmp: str | os.PathLike, final: str | os.PathLike) -> None:
    """Move the finished ``tmp`` (a file, or a folder of files) to ``final``, durably.

    The one place where stitchkit renames a result into place. Its data are fsynced before
    the rename (else, after a power cut, the new name may point at blocks never written: an
    empty or zero-filled file), then its folder is fsynced so that the rename itself is on
    disk before a caller goes on, e.g. deletes the part files the result was built from.
    ``tmp`` and ``final`` must be in the same folder, so that ``os.replace`` is atomic.
    """
    tmp, final = Path(tmp), Path(final)
    if tmp.is_dir():  # a folder result (export): every file and subfolder, then the folder
        for sub, _, names in os.walk(tmp, topdown=False):
            for name in names:
                fsync_path(Path(sub) / name)
            fsync_path(Path(sub))
    else:
        fsync_path(tmp)
    os.replace(tmp, final)
    fsync_path(final.parent)


def fsync_path(path: str | os.PathLike) -> None:
    """fsync a file or a folder by path (a folder's fsync makes its entries' renames durable).

    File systems that cannot fsync a folder (EINVAL on some network and FUSE mounts) are
    skipped: there the rename is as durable as the file system makes it.
    """
    flags = os.O_RDONLY | (os.O_DIRECTORY if Path(path).is_dir() else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _remove_stale_temporaries(final: Path) -> None:
    """Delete temporaries of ``final`` left by writers on this host that no longer run."""
    prefix, suffix = f".{final.name}.", ".partial"
    for tmp in final.parent.glob(glob.escape(prefix) + "*" + suffix):
        host, _, pid = tmp.name[len(prefix) : -len(suffix)].rpartition("-")
        if host == _HOST and pid.isdigit() and not pid_running(int(pid)):
            with contextlib.suppress(OSError):
                _remove(tmp)


def temporary_dir(folder: str | os.PathLike | None, prefix: str) -> Path:
    """A new private folder ``PREFIX<host>-<pid>-<random>`` in ``folder`` (None: the system's).

    For scratch files beside an output (a metrics spill, an export being built): those that
    writers on this host left when they died (kill -9) are removed first, as for
    :func:`atomic_output`'s temporaries, so crashed runs do not pile up in the output folder.
    """
    if folder is not None:
        for old in Path(folder).glob(glob.escape(prefix) + "*"):
            host, _, rest = old.name[len(prefix):].rpartition("-")  # rest: the random part
            host, _, pid = host.rpartition("-")
            if host == _HOST and pid.isdigit() and old.is_dir() and not pid_running(int(pid)):
                shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{_HOST}-{os.getpid()}-", dir=folder))


def _remove(path: Path) -> None:
    """Delete a temporary: a file, or a folder a block built in its place (a model install)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


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


def absolute(path: str | os.PathLike) -> Path:
    """``path`` made absolute the one way stitchkit does it: joined to the working folder,
    symbolic links and ``..`` kept as given (only pathlib's ``.`` and doubled ``/`` dropped).

    A manifest or a store then names the paths the user gave (``/data/nih/…`` where ``/data``
    is a link, as data folders on clusters often are), and names the file the system opens: a
    ``..`` after a link goes up from the link's target, which ``os.path.abspath``'s folding
    would get wrong. Checks that a path stays inside a folder resolve both sides themselves.
    """
    return Path(path).absolute()


def check_writable_dir(path: str | os.PathLike) -> None:
    """Fail early, before hours of work, when the output folder cannot take a file."""
    folder = absolute(Path(path).parent)  # where the temporary beside ``path`` goes, links kept
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


def write_id_file(path: str | Path, ids: Sequence[str], header: Sequence[str] = ()) -> Path:
    """``ids`` one per line, after ``header`` lines written as '#' comments (which
    :func:`read_id_file` skips, so any reader of id lists still reads the ids alone)."""
    comments = "".join(f"# {line}\n" for line in header)
    with atomic_output(path) as tmp:
        tmp.write_text(comments + "".join(f"{i}\n" for i in ids), encoding="utf-8")
    return Path(path)


_FIELD = re.compile(r"#\s*([a-z][a-z0-9_]*):\s*(.*?)\s*$")


def id_file_fields(path: str | Path) -> dict[str, str]:
    """The ``# key: value`` comment lines at the head of an id file (e.g. ``# label_use: ...``),
    read up to the first id (a million-id file is not read for its header); other comments (a
    free-text line such as the command that made the file) are not fields."""
    fields: dict[str, str] = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if line and not line.startswith("#"):
                break
            found = _FIELD.match(line)
            if found:
                fields.setdefault(found.group(1), found.group(2))
    return fields


def cache_root() -> Path:
    """Where stitchkit keeps what it can make again (ONNX graphs, prompt embeddings, clean weight checks):
    ``$STITCHKIT_CACHE``, else ``$XDG_CACHE_HOME/stitchkit``, else ``~/.cache/stitchkit``."""
    root = os.environ.get("STITCHKIT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "stitchkit")
    return Path(root)
