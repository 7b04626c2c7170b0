"""Fitting maps between two stores, applying them, and sweeping anchor counts.

The stores are read in chunks; only sufficient statistics (O(D²)) and the held-out rows used
for metrics (at most ``MAX_EVAL``) are held in memory.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import UsageError
from ..store import EmbeddingStore, StoreUnion, check_same_space, open_stores, require_finite
from ..store.pooling import PooledStore
from . import functional as F
from . import tokens as T
from .anchors import anchor_pool, fold_of, rows_of, select, split_holdout
from .estimators import BaseMap, load_map, make_map
from .metrics import MAX_EVAL, MAX_PROBE_TRAIN, Probe, alignment_metrics, probe_metrics

StoreLike = str | os.PathLike | EmbeddingStore | StoreUnion | Sequence[str | os.PathLike]
ProgressFn = Callable[[int, int], None]


@contextmanager
def _opened(store: StoreLike) -> Iterator[EmbeddingStore | StoreUnion]:
    """An open store; several paths (a list, 'a.h5,b.h5' or a quoted glob) are read as one."""
    if isinstance(store, EmbeddingStore | StoreUnion):
        yield store
        return
    s = open_stores(store)
    try:
        yield s
    finally:
        s.close()


# ---------------------------------------------------------------------------------------------
# reading anchors
# ---------------------------------------------------------------------------------------------
def _read_rows(store: Any, rows: np.ndarray) -> np.ndarray:
    """Rows in the given order; a contiguous-enough sorted run is read as one slice (faster)."""
    if isinstance(store, EmbeddingStore) and len(rows) > 1:
        lo, hi = int(rows.min()), int(rows.max()) + 1
        if hi - lo <= 2 * len(rows) and np.all(np.diff(rows) > 0):
            block = store.read(slice(lo, hi))
            return block if hi - lo == len(rows) else block[rows - lo]
    return store.read(rows)


def accumulate(
    source: Any,
    target: Any,
    ids: np.ndarray,
    *,
    n_folds: int = 1,
    seed: int = 0,
    l2: bool = False,
    chunk_size: int = 16384,
    exact: bool = False,
    progress: ProgressFn | None = None,
) -> list[F.SuffStats]:
    """Per-fold sufficient statistics of the anchor pairs ``ids``, read chunk by chunk."""
    src_rows = rows_of(source, ids)
    tgt_rows = rows_of(target, ids)
    order = np.argsort(src_rows, kind="stable")
    folds = [F.SuffStats.zeros(source.dim, target.dim, exact=exact) for _ in range(n_folds)]
    which = fold_of(ids, n_folds, seed) if n_folds > 1 else np.zeros(len(ids), dtype=np.int64)
    done = 0
    if progress is not None:
        progress(0, len(ids))
    for start in range(0, len(order), chunk_size):
        part = order[start : start + chunk_size]
        X = _read_rows(source, src_rows[part])
        Y = _read_rows(target, tgt_rows[part])
        require_finite(X, ids[part], source.path, "anchor embeddings")
        require_finite(Y, ids[part], target.path, "anchor embeddings")
        if l2:
            X, Y = F.l2_normalize(X), F.l2_normalize(Y)
        if n_folds == 1:
            folds[0].update(X, Y)
        else:
            f = which[part]
            for k in range(n_folds):
                sel = f == k
                if sel.any():
                    folds[k].update(X[sel], Y[sel])
        done += len(part)
        if progress is not None:
            progress(done, len(ids))
    return folds


class StatsEngine(Protocol):
    """Where a fit's sufficient statistics are computed: the one thing an engine provides.

    ``fit_map(..., engine=...)`` takes any object with this method; it must return what
    :func:`accumulate` returns for the same arguments. Engines (``stitchkit.engines``) import
    the library, never the reverse.
    """

    def accumulate(
        self, source: Any, target: Any, ids: np.ndarray, *, n_folds: int, seed: int, l2: bool,
        chunk_size: int, exact: bool, progress: ProgressFn | None,
    ) -> list[F.SuffStats]: ...


class LocalEngine:
    """Statistics in this process, chunk by chunk (the default)."""

    def accumulate(
        self, source: Any, target: Any, ids: np.ndarray, *, n_folds: int, seed: int, l2: bool,
        chunk_size: int, exact: bool, progress: ProgressFn | None,
    ) -> list[F.SuffStats]:
        return accumulate(source, target, ids, n_folds=n_folds, seed=seed, l2=l2,
                          chunk_size=chunk_size, exact=exact, progress=progress)


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


_REFINE_CHECKED = ("cosine_mean", "top1", "relative_mse", "probe_auc_ratio")


def _refine_map(
    m: BaseMap, folds: list[F.SuffStats], src: Any, tgt: Any, plan: Plan, ids: np.ndarray,
    held: HeldOut | None, *, unpaired: int, iterations: int, l2: bool, seed: int,
) -> BaseMap:
    """``m`` refined with MNN pseudo-anchors from unpaired rows; warns if held-out got worse."""
    from .refine import refine

    exclude = np.concatenate([np.asarray(ids).astype(str), np.asarray(plan.heldout).astype(str)])
    Xu = unpaired_rows(src, exclude, unpaired, seed + 11)
    Yu = unpaired_rows(tgt, exclude, unpaired, seed + 13)
    refined, history = refine(m, folds, Xu, Yu, iterations=iterations, l2=l2, seed=seed)
    info: dict[str, Any] = {"unpaired_source": int(len(Xu)), "unpaired_target": int(len(Yu)),
                            "pseudo_pairs_per_round": history, "iterations": iterations}
    if held is not None:
        before, after = evaluate(m, held), evaluate(refined, held)
        info["anchors_only"] = {k: before[k] for k in _REFINE_CHECKED if k in before}
        worse = [
            f"{k} {before[k]:.4f} → {after[k]:.4f}" for k in _REFINE_CHECKED
            if k in before and k in after and np.isfinite(before[k]) and np.isfinite(after[k])
            and ((after[k] > before[k] + 1e-4) if k == "relative_mse" else (after[k] < before[k] - 1e-4))
        ]
        info["worse_than_anchors_only"] = worse
        if worse:
            warnings.warn(
                f"unpaired refinement made the held-out anchors worse than the anchors-only "
                f"map ({', '.join(worse)}); the map written is the refined one: drop --unpaired "
                "to keep the anchors-only map",
                stacklevel=3,
            )
    else:
        warnings.warn("unpaired refinement not checked: no held-out anchors (raise --holdout)",
                      stacklevel=3)
    refined._refinement = info
    return refined


def _space(store: Any) -> dict[str, Any]:
    space = store.space()
    space["modality"] = getattr(store, "modality", None)
    space["path"] = str(store.path)
    return space


# ---------------------------------------------------------------------------------------------
# the public functions
# ---------------------------------------------------------------------------------------------
def fit_map(
    source: StoreLike,
    target: StoreLike,
    *,
    method: str = "ridge",
    alpha: float | str | None = None,
    scale: bool | None = None,
    center: bool = True,
    standardize: bool = True,
    l2: bool = False,
    restore: bool = True,
    anchors: str | os.PathLike | Sequence[str] | None = None,
    n_anchors: int | None = None,
    strategy: str = "random",
    holdout: float = 0.2,
    seed: int = 0,
    cv: int | None = None,
    pool_by: str | None = None,
    chunk_size: int = 16384,
    exact: bool = False,
    metrics: bool = True,
    progress: ProgressFn | None = None,
    engine: StatsEngine | str = "local",
    unpaired: int = 0,
    refine_iterations: int = 3,
) -> BaseMap:
    """Fit a map from ``source``'s space to ``target``'s over their shared anchors.

    ``source`` / ``target``: store paths or open :class:`EmbeddingStore` objects. Anchors are
    the ids both share (or ``anchors``: a file or list of ids); ``holdout`` of them are set
    aside for the metrics, then ``n_anchors`` are chosen from the rest with ``strategy``.
    ``pool_by="group"`` averages the views of each group (study) first. Several shard stores
    on either side are read as one; ``engine`` computes the statistics (default here, in
    chunks; ``stitchkit.engines.ray_stats.RayStats(address)`` one Ray task per source shard).
    ``unpaired=N`` refines the map with up to N samples per store that are neither fit nor
    held-out anchors, used without their pairing (:mod:`.refine`): mutual nearest neighbours
    become pseudo-anchors and the map is refitted, ``refine_iterations`` times at most.
    """
    if isinstance(engine, str):
        if engine != "local":
            raise UsageError(
                f"engine {engine!r}: pass an engine object, e.g. "
                "stitchkit.engines.ray_stats.RayStats(address) for Ray"
            )
        engine = LocalEngine()
    params: dict[str, Any] = dict(
        center=center, standardize=standardize, l2=l2, restore=restore, alpha=alpha, scale=scale,
        cv=cv, random_state=seed if method in ("affine", "linear", "ridge") else None,
    )
    m = make_map(method, **params)
    m._validate_params()
    if pool_by not in (None, "group"):
        raise UsageError(f"--pool-by takes 'group', got {pool_by!r}")
    with _opened(source) as src_store, _opened(target) as tgt_store:
        src: Any = PooledStore(src_store, chunk_size) if pool_by else src_store
        tgt: Any = PooledStore(tgt_store, chunk_size) if pool_by else tgt_store
        plan = plan_anchors(src, tgt, anchors=anchors, holdout=holdout, seed=seed)
        ids = choose_anchors(src, plan, n_anchors, strategy=strategy, seed=seed)
        if len(ids) < 2:
            raise UsageError(
                f"{len(ids)} anchor(s) left after the holdout: a map needs at least 2 "
                "(and least squares more than the dimension)"
            )
        folds = engine.accumulate(
            src, tgt, ids, n_folds=m.n_folds, seed=seed, l2=l2, chunk_size=chunk_size,
            exact=exact, progress=progress,
        )
        m.fit_stats(folds)
        held = prepare_heldout(src, tgt, plan, seed=seed, l2=l2) if metrics or unpaired else None
        if unpaired:
            m = _refine_map(m, folds, src, tgt, plan, ids, held, unpaired=unpaired,
                            iterations=refine_iterations, l2=l2, seed=seed)
        m.source_space_ = _space(src)
        m.target_space_ = _space(tgt)
        m.anchors_ = {
            "n_fit": int(len(ids)),
            "n_pool": int(len(plan.pool)),
            "n_heldout": int(len(plan.heldout)),
            "strategy": strategy if n_anchors is not None else "all",
            "seed": seed,
            "holdout": holdout,
            "from": str(anchors) if isinstance(anchors, str | os.PathLike) else (
                "list" if anchors is not None else "shared ids"),
            "pool_by": pool_by,
        }
        if unpaired:
            m.anchors_["refinement"] = m.__dict__.pop("_refinement")
        if metrics:
            m.metrics_ = evaluate(m, held)
    return m


def check_stitchability(
    source: StoreLike,
    target: StoreLike,
    *,
    method: str = "ridge",
    alpha: float | str | None = None,
    scale: bool | None = None,
    center: bool = True,
    standardize: bool = True,
    l2: bool = False,
    restore: bool = True,
    anchors: str | os.PathLike | Sequence[str] | None = None,
    n_anchors: int | None = None,
    strategy: str = "random",
    holdout: float = 0.2,
    seed: int = 0,
    cv: int | None = None,
    pool_by: str | None = None,
    chunk_size: int = 16384,
    k: int = 10,
    max_rows: int = 4000,
) -> dict[str, Any]:
    """What ``fit_map`` with the same arguments would face, measured on its fit anchors only.

    Linear CKA, mutual k-NN overlap and a cross-validated estimate of the held-out quality
    (see :mod:`.stitchability`); nothing is written and the held-out anchors are not read.
    """
    from .stitchability import stitchability

    params: dict[str, Any] = dict(
        center=center, standardize=standardize, l2=l2, restore=restore, alpha=alpha, scale=scale,
        cv=cv, random_state=seed if method in ("affine", "linear", "ridge") else None,
    )
    make_map(method, **params)._validate_params()
    if pool_by not in (None, "group"):
        raise UsageError(f"--pool-by takes 'group', got {pool_by!r}")
    with _opened(source) as src_store, _opened(target) as tgt_store:
        src: Any = PooledStore(src_store, chunk_size) if pool_by else src_store
        tgt: Any = PooledStore(tgt_store, chunk_size) if pool_by else tgt_store
        plan = plan_anchors(src, tgt, anchors=anchors, holdout=holdout, seed=seed)
        ids = choose_anchors(src, plan, n_anchors, strategy=strategy, seed=seed)
        n_fit = len(ids)
        if n_fit > max_rows:
            ids = np.sort(np.random.default_rng(seed).choice(ids, max_rows, replace=False))
        X = src.read(rows_of(src, ids))
        Y = tgt.read(rows_of(tgt, ids))
        require_finite(X, ids, src.path, "anchor embeddings")
        require_finite(Y, ids, tgt.path, "anchor embeddings")
    report = stitchability(X, Y, lambda: make_map(method, **params), k=k, seed=seed, max_rows=max_rows)
    report["n_anchors"] = int(n_fit)
    report["n_heldout"] = int(len(plan.heldout))
    report["method"] = method
    return report


def apply_map(
    map_or_path: BaseMap | str | os.PathLike,
    store_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    force: bool = False,
    chunk_size: int = 16384,
    progress: ProgressFn | None = None,
    tokens: bool = True,
) -> dict[str, Any]:
    """Write ``store_path`` mapped into the map's target space as a new store at ``out_path``.

    The output carries the target space's model_spec / weights_sha256 (it lives there now),
    plus ``map`` and ``source`` attributes naming where it came from. Tokens, where the store
    has them (and ``tokens``), are mapped per token too (see :mod:`stitchkit.maps.tokens`).
    """
    from ..fileio import check_writable_dir
    from ..store.store import StoreWriter, base_attrs

    m = map_or_path if isinstance(map_or_path, BaseMap) else load_map(map_or_path)
    map_name = str(map_or_path) if not isinstance(map_or_path, BaseMap) else getattr(m, "path_", "in-memory map")
    if Path(out_path).resolve() == Path(store_path).resolve():
        raise UsageError(f"-o {out_path} is the input store: write the stitched store elsewhere")
    check_writable_dir(out_path)
    with _opened(store_path) as store:
        expected = {k: m.source_space_.get(k) for k in ("model_spec", "weights_sha256", "dim")}
        expected["dim"] = m.n_features_in_
        check_same_space(expected, store.space(), expected_what=f"map {map_name} (source side)",
                         got_what=str(store.path), force=force)
        columns = [c for c in ("labels", "texts", "groups") if getattr(store, c) is not None]
        col_data = {c: getattr(store, c) for c in columns}
        tgt = m.target_space_
        attrs = base_attrs(
            modality=store.modality,
            model_spec=tgt.get("model_spec"),
            weights_sha256=tgt.get("weights_sha256"),
            map=map_name,
            source=str(store.path),
            source_model_spec=store.model_spec,
            input=store.attrs.get("input"),
        )
        n = len(store)
        tok = T.plan(m, store, map_name, chunk_size) if tokens else None
        if tok is not None:
            attrs["tokens_mapping"], chunk_size = tok["note"], tok["chunk_size"]
        with StoreWriter(out_path, dim=m.n_features_out_, attrs=attrs, columns=columns,
                         expected_rows=n, token_shape=tok and tok["token_shape"]) as writer:
            for rows, block in store.iter_chunks(chunk_size=chunk_size):
                if not np.isfinite(block).all():
                    require_finite(block, store.ids[rows], store.path)
                writer.append(
                    list(store.ids[rows]), m.transform(block),
                    columns={c: col_data[c][rows] for c in columns},
                    **(T.mapped_rows(m, store, rows) if tok is not None else {}),
                )
                if progress is not None:
                    progress(int(rows[-1]) + 1, n)
            writer.add_failed(store.failed)
    return {
        "output": str(out_path),
        "samples": n,
        "dim_in": m.n_features_in_,
        "dim_out": m.n_features_out_,
        "map": map_name,
        "source": str(store_path),
        "target_model_spec": tgt.get("model_spec"),
        **({"tokens": tok["token_shape"], "tokens_note": tok["note"]} if tok is not None else {}),
    }


# ---------------------------------------------------------------------------------------------
# sweep
# ---------------------------------------------------------------------------------------------
SWEEP_METRICS = (
    "cosine_mean", "cosine_median", "relative_mse", "top1", "top5", "mrr",
    "probe_accuracy_ratio", "probe_auc_ratio", "probe_auc_stitched", "alpha_relative",
)


def sweep(
    source: StoreLike,
    target: StoreLike,
    *,
    n_anchors: Sequence[int],
    methods: Sequence[str] = ("orthogonal", "affine", "ridge"),
    seeds: Sequence[int] = (0, 1, 2),
    strategy: str = "random",
    holdout: float = 0.2,
    anchors: str | os.PathLike | Sequence[str] | None = None,
    center: bool = True,
    standardize: bool = True,
    l2: bool = False,
    exact: bool = False,
    chunk_size: int = 16384,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """One row per (seed, anchor count, method) with the held-out metrics.

    For each seed the holdout and probe are fixed; for each count the statistics are read once
    (with the folds alpha 'auto' needs) and every method is solved from them.
    """
    rows: list[dict[str, Any]] = []
    for method in methods:
        make_map(method)
    with _opened(source) as src, _opened(target) as tgt:
        for seed in seeds:
            plan = plan_anchors(src, tgt, anchors=anchors, holdout=holdout, seed=seed)
            held = prepare_heldout(src, tgt, plan, seed=seed, l2=l2)
            if held is None:
                raise UsageError("--holdout leaves fewer than 2 held-out anchors: raise it")
            for n in sorted(n_anchors):
                if n > len(plan.fit_pool):
                    raise UsageError(
                        f"--n-anchors {n} but only {len(plan.fit_pool)} anchors remain after the "
                        "holdout: lower it"
                    )
                ids = choose_anchors(src, plan, n, strategy=strategy, seed=seed)
                folds = accumulate(src, tgt, ids, n_folds=3, seed=seed, l2=l2,
                                   chunk_size=chunk_size, exact=exact)
                for method in methods:
                    row: dict[str, Any] = {"method": method, "n_anchors": int(n), "seed": int(seed)}
                    kw: dict[str, Any] = {"center": center, "standardize": standardize, "l2": l2}
                    if method in ("affine", "linear", "ridge"):
                        kw["random_state"] = seed
                    m = make_map(method, **kw)
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always")
                        try:
                            m.fit_stats(folds if m.n_folds > 1 else F.merge_all(folds))
                            row.update(evaluate(m, held))
                            if hasattr(m, "alpha_relative_"):
                                row["alpha_relative"] = m.alpha_relative_
                        except UsageError as exc:
                            row["error"] = str(exc).split(";")[0]
                    if caught:
                        row["note"] = str(caught[0].message).split(";")[0]
                    rows.append(row)
                    if on_row is not None:
                        on_row(row)
    return rows


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and std over seeds for each (method, anchor count)."""
    keys = sorted({(r["method"], r["n_anchors"]) for r in rows}, key=lambda k: (k[0], k[1]))
    out = []
    for method, n in keys:
        group = [r for r in rows if r["method"] == method and r["n_anchors"] == n]
        entry: dict[str, Any] = {"method": method, "n_anchors": n, "n_seeds": len(group)}
        ok = [r for r in group if "error" not in r]
        entry["n_failed"] = len(group) - len(ok)
        for metric in SWEEP_METRICS:
            vals = np.array([r[metric] for r in ok if metric in r], dtype=float)
            if len(vals):
                entry[f"{metric}_mean"] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
                entry[f"{metric}_std"] = float(np.nanstd(vals)) if np.isfinite(vals).any() else float("nan")
        errors = {r["error"] for r in group if "error" in r}
        if errors:
            entry["error"] = "; ".join(sorted(errors))
        out.append(entry)
    return out


def write_table(summary: list[dict[str, Any]], path: str | os.PathLike) -> Path:
    """CSV (or JSON when the name ends in .json) of the summary."""
    import csv
    import io
    import json

    from ..fileio import atomic_output

    path = Path(path)
    with atomic_output(path) as tmp:
        if path.suffix.lower() == ".json":
            tmp.write_text(json.dumps(summary, indent=2), encoding="utf-8")
        else:
            cols: list[str] = []
            for entry in summary:
                cols.extend(k for k in entry if k not in cols)
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=cols)
            writer.writeheader()
            for entry in summary:
                writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in entry.items()})
            tmp.write_text(buf.getvalue(), encoding="utf-8")
    return path
