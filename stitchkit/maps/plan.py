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
from .metrics import (
    MAX_EVAL,
    MAX_PROBE_TRAIN,
    Probe,
    alignment_metrics,
    probe_metrics,
    warn_worse_than_mean,
)


# ---------------------------------------------------------------------------------------------
# anchor plans and evaluation
# ---------------------------------------------------------------------------------------------
@dataclass
class Plan:
    """Which ids fit the map and which are held out, with the labels where known."""

    pool: np.ndarray
    fit_pool: np.ndarray
    heldout: np.ndarray
    labels: LabelLookup | dict[str, str] = field(default_factory=dict)


class LabelLookup:
    """id -> label through the store's sorted id index: no dict over every row.

    Behaves like the ``{id: label}`` dict it replaces (``bool``, ``get``, ``[]``); ``of(ids)``
    answers a whole array at once ("" for ids without a label).
    """

    def __init__(self, store: Any, labels: np.ndarray) -> None:
        if hasattr(store, "id_index"):
            self._index = store.id_index()
        else:  # pooled groups: few rows, keys built here
            from ..store.store import IdIndex

            self._index = IdIndex(np.char.encode(np.asarray(store.ids, dtype=str), "utf-8"))
        self._labels = np.asarray(labels)

    def __bool__(self) -> bool:
        return len(self._labels) > 0

    def __len__(self) -> int:
        return len(self._labels)

    def of(self, ids: Sequence[str] | np.ndarray) -> np.ndarray:
        ids = np.asarray(ids)
        if len(ids) == 0:
            return np.array([], dtype=object)
        rows, found = self._index.lookup(ids)
        out = np.full(len(ids), "", dtype=object)
        out[found] = [str(v) for v in self._labels[rows[found]].tolist()]
        return out

    def get(self, key: str, default: str | None = None) -> str | None:
        value = self.of([key])[0]
        return value if value != "" or self._index.lookup([key])[1][0] else default

    def __getitem__(self, key: str) -> str:
        rows, found = self._index.lookup([key])
        if not found[0]:
            raise KeyError(key)
        return str(self._labels[rows[0]])


def _labels(source: Any, target: Any) -> LabelLookup | dict[str, str]:
    for store in (target, source):
        labels = store.labels
        if labels is not None:
            return LabelLookup(store, labels)
    return {}


def _labels_of(plan: Plan, ids: np.ndarray) -> np.ndarray:
    if isinstance(plan.labels, LabelLookup):
        return plan.labels.of(ids)
    return np.array([plan.labels.get(str(i), "") for i in ids], dtype=object)


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
            labels = _labels_of(plan, ids).astype(str)
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
        labels = _labels_of(plan, ids).astype(str)
        pool_labels = _labels_of(plan, plan.fit_pool)
        has = pool_labels != ""
        train_ids = np.asarray(plan.fit_pool)[has].astype(str)
        if len(train_ids) > MAX_PROBE_TRAIN:
            train_ids = np.sort(rng.choice(train_ids, MAX_PROBE_TRAIN, replace=False))
            train_labels = _labels_of(plan, train_ids).astype(str)
        else:
            train_labels = pool_labels[has].astype(str)
        if probe and len(np.unique(train_labels)) >= 2 and (labels != "").sum() >= 2:
            Yt = target.read(rows_of(target, train_ids))
            if l2:
                Yt = F.l2_normalize(Yt)
            the_probe = Probe(Yt, train_labels, seed=seed)
    return HeldOut(ids=ids, X=X, Y=Y, labels=labels, probe=the_probe)


def heldout_metrics(m: BaseMap, held: HeldOut | None) -> dict[str, Any]:
    if held is None:
        return {}
    mapped = m.transform(held.X)
    out: dict[str, Any] = alignment_metrics(held.X, mapped, held.Y)
    warn_worse_than_mean(out["relative_mse"], f"held-out ({out['n_heldout']} anchors)", m.method)
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




def fitted_anchors(store: Any, ids: np.ndarray, pool_by: str | None = None) -> Any:
    """The rows of the source ``store`` a map was fitted on (``ids``: its anchors, and the
    held-out ones where it was refitted on them), hashed with their groups
    (:mod:`stitchkit.fitted_on`); pooled, an anchor is a group and its rows are its views."""
    from ..fitted_on import FittedOn, Part

    groups = store.groups
    if pool_by:
        names = np.asarray(groups).astype(str)
        rows = np.nonzero(np.isin(names, np.asarray(ids).astype(str)))[0]
    else:
        rows = rows_of(store, ids)
    return FittedOn.of([Part.of(np.asarray(store.ids)[rows], None if groups is None else np.asarray(groups)[rows],
                                store.path, (getattr(store, "attrs", None) or {}).get("input"))])


def _space(store: Any) -> dict[str, Any]:
    space = store.space()
    space["modality"] = getattr(store, "modality", None)
    space["path"] = str(store.path)
    return space


def refit_folds(
    m: BaseMap, folds: list[F.SuffStats], held_folds: list[F.SuffStats], dim: int
) -> list[F.SuffStats]:
    """Statistics of fit and held-out anchors together, in as many folds as ``m`` wants for them.

    Both were split by the same hash of (seed, id) (:func:`.anchors.fold_of`), so fold k of
    each is fold k of their union.
    """
    union = [f.merge(h) for f, h in zip(folds, held_folds, strict=True)]
    wanted = m.n_folds_for(sum(f.n for f in union), dim)
    if wanted == len(union):
        return union
    if wanted == 1:
        return [F.merge_all(union)]
    raise AssertionError(f"a refit wants {wanted} folds, the fit had {len(union)}")  # n only grows
