"""Exception types that the command line maps to one clear line and an exit code.

Every message says what is wrong and how to fix it. ``UsageError`` is bad input from the
user (exit 2); ``StitchError`` is everything else that is expected to go wrong (exit 1).
"""

from __future__ import annotations

from collections.abc import Iterable


class StitchError(Exception):
    """A failure the user can act on; the message names the problem and the fix."""

    exit_code = 1


class UsageError(StitchError):
    """Bad arguments or input files: the command cannot start."""

    exit_code = 2


class StoreError(UsageError):
    """An HDF5 file that is not a usable embedding store (missing, corrupt, incomplete)."""


class FormatError(UsageError):
    """A file in a format version this stitchkit does not read (a newer one: upgrade stitchkit).

    Raised only by :mod:`stitchkit.formats` (``check_format``, ``artifact_format``).
    """


class ModelError(UsageError):
    """A model spec that cannot be resolved or whose weights cannot be found."""


class ProvenanceError(UsageError):
    """Two files that should describe the same space do not (model, weights or shape)."""


class LockedError(StitchError):
    """Another process is writing the same output."""


class InputFailure(Exception):
    """One input (image or text) could not be read; recorded in the store's failed table."""


def closest(word: str, choices: Iterable[str], *, cutoff: float = 0.6) -> str | None:
    """The choice most like ``word`` (difflib's ratio at least ``cutoff``), for a message's "did
    you mean ...?"; None when nothing is close. The one helper every such message uses."""
    import difflib

    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=cutoff)
    return found[0] if found else None
