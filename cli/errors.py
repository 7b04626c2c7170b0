"""One table from exceptions to one-line messages and exit codes (usage 2, runtime 1)."""

from __future__ import annotations

import errno
import os
import re
import sys
from pathlib import Path

import click

from stitchkit.errors import InputFailure, StitchError

_OS_ERRORS = {
    errno.ENOSPC: (1, "no space left on the device while writing{where}: free space or write elsewhere"),
    errno.EDQUOT: (1, "disk quota exceeded while writing{where}: free space or write elsewhere"),
    errno.EFBIG: (1, "file too large for this filesystem or limit{where}: write elsewhere"),
    errno.EACCES: (2, "permission denied{where}: choose a path you can write to"),
    errno.EROFS: (2, "read-only filesystem{where}: choose another output path"),
    errno.ENOENT: (2, "no such file or folder{where}: check the path"),
    errno.EISDIR: (2, "expected a file but found a folder{where}"),
}


def describe(exc: BaseException) -> tuple[int, str]:
    """Exit code and one-line message for an exception raised by a command."""
    if isinstance(exc, StitchError):
        return exc.exit_code, str(exc)
    if isinstance(exc, InputFailure):
        return 1, str(exc)
    if isinstance(exc, OSError) and exc.errno in (errno.ENOENT, errno.EACCES, errno.EROFS) \
            and exc.filename and _unwritable_parent(str(exc.filename)):
        # Creating a file or folder in a read-only place: some file systems say ENOENT.
        parent = Path(str(exc.filename)).parent
        return 2, f"cannot create {exc.filename}: {parent} is not writable; choose another output path"
    if isinstance(exc, OSError) and exc.errno in _OS_ERRORS:
        code, text = _OS_ERRORS[exc.errno]
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        return code, text.format(where=where)
    # Rust extensions (safetensors, tokenizers) raise their own types; the OS error is in the text.
    found = re.search(r"\(os error (\d+)\)", str(exc))
    if found and int(found.group(1)) in _OS_ERRORS:
        code, text = _OS_ERRORS[int(found.group(1))]
        return code, text.format(where="")
    if isinstance(exc, MemoryError):
        return 1, "out of memory: lower --batch-size or --chunk-size"
    return 1, f"unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)"


def _unwritable_parent(filename: str) -> bool:
    path = Path(filename)
    return not path.exists() and path.parent.is_dir() and not os.access(path.parent, os.W_OK)


def click_message(exc: click.ClickException) -> str:
    """click's usage errors in one line (click prints usage, a hint and the error on three)."""
    message = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    if isinstance(exc, click.UsageError) and ctx is not None:
        message += f" (see `{ctx.command_path} --help`)"
    return message


def _from_h5py_dealloc(tb: object) -> bool:
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.endswith("_objects.pyx"):  # type: ignore[attr-defined]
            return True
        tb = tb.tb_next  # type: ignore[attr-defined]
    return False


def _quiet_h5py_hooks() -> None:
    """h5py reports a failed write (disk full) of an object being freed as a printed traceback
    (through sys.excepthook, then sys.unraisablehook); the failure itself reaches the table
    above and is reported in one line, so those prints are dropped unless --debug."""
    excepthook, unraisablehook = sys.excepthook, sys.unraisablehook

    def on_exception(kind: type, value: BaseException, tb: object) -> None:
        if not _from_h5py_dealloc(tb):
            excepthook(kind, value, tb)

    def on_unraisable(unraisable: object) -> None:
        if not _from_h5py_dealloc(getattr(unraisable, "exc_traceback", None)) and \
                "h5py" not in repr(getattr(unraisable, "object", "")):
            unraisablehook(unraisable)

    sys.excepthook, sys.unraisablehook = on_exception, on_unraisable


def run(command: click.Command) -> None:
    """Entry point: run the click group and turn failures into one line on stderr."""
    debug = "--debug" in sys.argv[1:] or os.environ.get("STITCHKIT_DEBUG") == "1"
    if not debug:
        _quiet_h5py_hooks()
    try:
        command.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("interrupted: run the same command again to continue where it stopped", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("interrupted: run the same command again to continue where it stopped", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        click.echo(f"error: {click_message(exc)}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # noqa: BLE001 - the one place that turns errors into messages
        if debug:
            raise
        code, message = describe(exc)
        click.echo(f"error: {message}", err=True)
        sys.exit(code)
