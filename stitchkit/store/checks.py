"""Checks on what a store holds, shared by every command that reads embeddings."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ProvenanceError, StoreError


def require_finite(values: np.ndarray, ids: Sequence[str] | np.ndarray, path: object,
                   what: str = "embeddings") -> None:
    """Refuse rows holding NaN or Inf (they would silently poison what is computed from them),
    naming the first offending id. ``values`` is (N, ...) with ``ids`` its N row ids."""
    bad = ~np.isfinite(values.reshape(len(values), -1)).all(axis=1)
    if bad.any():
        first = np.asarray(ids, dtype=object)[bad][0]
        raise StoreError(
            f"{path}: {int(bad.sum())} {what} hold NaN or Inf (first: id {str(first)!r}): "
            "re-embed those inputs or drop them"
        )


def describe_space(space: dict[str, Any]) -> str:
    spec = space.get("model_spec") or "unknown model"
    return f"{spec} ({space.get('dim')}-d)"


_WIDTHS_DIFFER = "widths differ"
_UNKNOWN = "provenance unknown"


def space_difference(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    """What tells two spaces apart (None: the same space). A space is what defines it
    (:func:`stitchkit.encoders.specs.space_identity`): with a weights hash on both sides, the
    hash plus the options that change the output, so the same weights under another path or
    name, a short name and its spelled-out spec, or the same options in another order are one
    space. Without a hash on both sides, the specs (name and options, order ignored) are
    compared; without either, the provenance is unknown."""
    from ..encoders.specs import identity_difference, space_identity

    if a.get("dim") is not None and b.get("dim") is not None and int(a["dim"]) != int(b["dim"]):
        return _WIDTHS_DIFFER
    keys = [k for k in ("model_spec", "weights_sha256") if a.get(k) and b.get(k)]
    if not keys:
        return _UNKNOWN
    hashed = "weights_sha256" in keys
    if "model_spec" in keys:
        return identity_difference(*[space_identity(s["model_spec"], s["weights_sha256"] if hashed else None)
                                     for s in (a, b)])
    return None if a["weights_sha256"] == b["weights_sha256"] else "weights_sha256 differs"


def same_space(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """True when both spaces are known and one; unknown provenance is not the same."""
    return space_difference(a, b) is None


def check_same_space(
    expected: dict[str, Any], got: dict[str, Any], *, expected_what: str, got_what: str,
    force: bool = False,
) -> None:
    """Refuse two spaces that differ (model or weights: unless forced; width: always), and warn
    when either side's provenance is unknown, since then nothing could be checked
    (:func:`space_difference` says what makes two spaces one)."""
    differs = space_difference(expected, got)
    if differs == _WIDTHS_DIFFER:
        raise ProvenanceError(
            f"{got_what} is {describe_space(got)} but {expected_what} is {describe_space(expected)}: "
            "the widths differ, so they cannot be combined"
        )
    if differs == _UNKNOWN:
        warnings.warn(f"{got_what}: provenance unknown, cannot check it matches {expected_what}",
                      stacklevel=2)
        return
    if differs and not force:
        raise ProvenanceError(
            f"{got_what} is {describe_space(got)} but {expected_what} is "
            f"{describe_space(expected)} ({differs}): use matching files, or force the mismatch (--force-space)"
        )
