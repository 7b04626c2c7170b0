"""Several views, one study (ALTA): pool the rows of one group into one sample.

Embeddings of a group are averaged; tokens of its views are concatenated (padded to the
longest group) so that cross-attention can look at every view; labels are the union of the
views' labels (``|``-joined, sorted), which is the study-level truth for multi-label findings.
"""

from __future__ import annotations

import numpy as np

from ..errors import UsageError

POOL_CHOICES = ("none", "group")


def check_pool_by(pool_by: str | None) -> str | None:
    if pool_by in (None, "none", ""):
        return None
    if pool_by != "group":
        raise UsageError(f"--pool-by must be one of {', '.join(POOL_CHOICES)}, got {pool_by!r}")
    return pool_by


def store_groups(store) -> np.ndarray:  # noqa: ANN001 - any store with .groups and .path
    """The store's groups column, or one clear line saying there is nothing to pool."""
    groups = store.groups
    if groups is None:
        raise UsageError(
            f"{store.path} has no groups column, so --pool-by group has nothing to pool: "
            "embed with a manifest that has a group (study id) column, or drop --pool-by"
        )
    return groups


def group_rows(groups: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Group keys in order of first appearance, and the row positions of each group."""
    groups = np.asarray(groups, dtype=object)
    keys, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    members = np.argsort(inverse, kind="stable")
    bounds = np.cumsum(np.bincount(inverse, minlength=len(keys)))[:-1]
    split = np.split(members, bounds)
    return keys[order], [split[i] for i in order]


def pool_embeddings(x: np.ndarray, members: list[np.ndarray]) -> np.ndarray:
    out = np.empty((len(members), x.shape[1]), dtype=np.float32)
    for i, rows in enumerate(members):
        out[i] = x[rows].mean(axis=0)
    return out


def pool_tokens(
    tokens: np.ndarray, mask: np.ndarray, members: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate the real tokens of each group's views; pad to the longest group."""
    per = [tokens[rows][mask[rows]] for rows in members]
    t = max(1, max((len(p) for p in per), default=1))
    out = np.zeros((len(members), t, tokens.shape[2]), dtype=tokens.dtype)
    out_mask = np.zeros((len(members), t), dtype=bool)
    for i, p in enumerate(per):
        out[i, : len(p)] = p
        out_mask[i, : len(p)] = True
    return out, out_mask


def pool_labels(labels: np.ndarray | None, members: list[np.ndarray]) -> np.ndarray | None:
    if labels is None:
        return None
    out = []
    for rows in members:
        parts = {p for lab in labels[rows] for p in str(lab).split("|") if p}
        out.append("|".join(sorted(parts)))
    return np.asarray(out, dtype=object)
