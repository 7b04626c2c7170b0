"""Which anchors a fit uses and which it holds out, and the held-out quality of a fitted map.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import UsageError
from ..store import require_finite
from . import functional as F
from .anchors import anchor_pool, rows_of, select, split_holdout
from .estimators import BaseMap
from .metrics import MAX_EVAL, MAX_PROBE_TRAIN, Probe, alignment_metrics, probe_metrics


# ---------------------------------------------------------------------------------------------
# anchor plans and evaluation
# ---------------------------------------------------------------------------------------------
@dataclass
class Plan:
    """Which ids fit the map and which are held out, with the labels where known."""

    pool: np.ndarray
    fit_pool: np.ndarray
    heldout: np.ndarray
    labels: dict[str, str] = field(default_factory=dict)


def _labels(source: Any, target: Any) -> dict[str, str]:
    for store in (target, source):
        labels = store.labels
        if labels is not None:
            return {str(i): str(v) for i, v in zip(store.ids, labels, strict=True)}
    return {}


def plan_anchors(
    source: Any,
    target: Any,
    *,
    anchors: str | os.PathLike | Sequence[str] | None = None,
    holdout: float = 0.2,
    seed: int = 0,
) -> Plan:
    pool = anchor_pool(source, target, anchors)
    fit_pool, held = split_holdout(pool, holdout, seed)
    return Plan(pool=pool, fit_pool=fit_pool, heldout=held, labels=_labels(source, target))


def choose_anchors(
    source: Any, plan: Plan, n_anchors: int | None, *, strategy: str, seed: int
) -> np.ndarray:
    ids = plan.fit_pool
    labels = embeddings = None
    if n_anchors is not None and n_anchors < len(ids):
        if strategy == "stratified":
            if not plan.labels:
                raise UsageError("strategy 'stratified' needs labels and neither store has them")
            labels = np.array([plan.labels.get(str(i), "") for i in ids])
        elif strategy in ("farthest", "kmeans"):
            from .anchors import MAX_CANDIDATES

            if len(ids) > MAX_CANDIDATES:
                ids = np.sort(np.random.default_rng(seed).choice(ids, MAX_CANDIDATES, replace=False))
            embeddings = source.read(rows_of(source, ids))
    return select(ids, n_anchors, strategy=strategy, seed=seed, labels=labels, embeddings=embeddings)


@dataclass
class HeldOut:
    ids: np.ndarray
    X: np.ndarray
    Y: np.ndarray
    labels: np.ndarray | None
    probe: Probe | None


def prepare_heldout(
    source: Any, target: Any, plan: Plan, *, seed: int, l2: bool, probe: bool = True
) -> HeldOut | None:
    """Held-out rows (at most MAX_EVAL) and a probe trained on native targets of the fit pool."""
    ids = plan.heldout
    if len(ids) < 2:
        return None
    rng = np.random.default_rng(seed + 1)
    if len(ids) > MAX_EVAL:
        ids = np.sort(rng.choice(ids, MAX_EVAL, replace=False))
    X = source.read(rows_of(source, ids))
    Y = target.read(rows_of(target, ids))
    require_finite(X, ids, source.path, "anchor embeddings")
    require_finite(Y, ids, target.path, "anchor embeddings")
    if l2:
        Y = F.l2_normalize(Y)
    labels = None
    the_probe = None
    if plan.labels:
        labels = np.array([plan.labels.get(str(i), "") for i in ids])
        train_ids = np.array([i for i in plan.fit_pool if plan.labels.get(str(i), "")], dtype=str)
        if len(train_ids) > MAX_PROBE_TRAIN:
            train_ids = np.sort(rng.choice(train_ids, MAX_PROBE_TRAIN, replace=False))
        train_labels = np.array([plan.labels[str(i)] for i in train_ids])
        if probe and len(np.unique(train_labels)) >= 2 and (labels != "").sum() >= 2:
            Yt = target.read(rows_of(target, train_ids))
            if l2:
                Yt = F.l2_normalize(Yt)
            the_probe = Probe(Yt, train_labels, seed=seed)
    return HeldOut(ids=ids, X=X, Y=Y, labels=labels, probe=the_probe)


def evaluate(m: BaseMap, held: HeldOut | None) -> dict[str, Any]:
    if held is None:
        return {}
    mapped = m.transform(held.X)
    out: dict[str, Any] = alignment_metrics(held.X, mapped, held.Y)
    if held.probe is not None and held.labels is not None:
        out.update(probe_metrics(held.probe, mapped, held.Y, held.labels))
    return out


def unpaired_rows(store: Any, exclude: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Up to ``n`` finite rows of ``store`` whose ids are not in ``exclude`` (random, sorted).

    Used without their ids: refinement never pairs them by id, so samples that only one store
    holds count as much as shared ones.
    """
    ids = np.asarray(store.ids).astype(str)
    rows = np.flatnonzero(~np.isin(ids, np.asarray(exclude).astype(str)))
    if len(rows) > n:
        rows = np.sort(np.random.default_rng(seed).choice(rows, n, replace=False))
    block = store.read(rows) if len(rows) else np.zeros((0, store.dim), np.float32)
    return block[np.isfinite(block).all(axis=1)]




def _space(store: Any) -> dict[str, Any]:
    space = store.space()
    space["modality"] = getattr(store, "modality", None)
    space["path"] = str(store.path)
    return space
