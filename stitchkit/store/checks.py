"""Checks on what a store holds, shared by every command that reads embeddings."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import StoreError


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
