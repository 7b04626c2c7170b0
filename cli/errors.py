"""One table from exceptions to one-line messages and exit codes (usage 2, runtime 1)."""

from __future__ import annotations

import errno
import os
import sys

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
    if isinstance(exc, OSError) and exc.errno in _OS_ERRORS:
        code, text = _OS_ERRORS[exc.errno]
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        return code, text.format(where=where)
    if isinstance(exc, MemoryError):
        return 1, "out of memory: lower --batch-size or --chunk-size"
    return 1, f"unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)"


def run(command: click.Command) -> None:
    """Entry point: run the click group and turn failures into one line on stderr."""
    debug = "--debug" in sys.argv[1:] or os.environ.get("STITCHKIT_DEBUG") == "1"
    try:
        command.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("interrupted: run the same command again to continue where it stopped", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("interrupted: run the same command again to continue where it stopped", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # noqa: BLE001 - the one place that turns errors into messages
        if debug:
            raise
        code, message = describe(exc)
        click.echo(f"error: {message}", err=True)
        sys.exit(code)
