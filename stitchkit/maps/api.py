"""Fitting maps between two stores, checking stitchability and applying maps.

The stores are read in chunks; only sufficient statistics (O(D²)) and the held-out rows used
for metrics (at most ``MAX_EVAL``) are held in memory.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import clone

from ..errors import UsageError
from ..store import check_same_space, require_finite
from ..store.pooling import PooledStore
from . import functional as F
from . import tokens as T
from .anchors import rows_of
from .estimators import BaseMap, load_map
from .options import AnchorPlan, ApplyOptions, ReadOptions, seeded_estimator
from .plan import (
    HeldOut,
    Plan,
    _space,
    choose_anchors,
    fitted_anchors,
    heldout_metrics,
    plan_anchors,
    prepare_heldout,
    refit_folds,
    unpaired_rows,
)
from .stream import StatsSpec, StoreLike, _opened


def _samples(store: Any, pool_by: str | None) -> Any:
    """The store itself, or its groups (studies) as samples under ``pool_by="group"``."""
    return PooledStore(store) if pool_by else store


# ---------------------------------------------------------------------------------------------
# the public functions
# ---------------------------------------------------------------------------------------------
def fit_map(
    source: StoreLike,
    target: StoreLike,
    estimator: BaseMap | str = "ridge",
    plan: AnchorPlan | None = None,
    read: ReadOptions | None = None,
) -> BaseMap:
    """Fit a map from ``source``'s space to ``target``'s over their shared anchors.

    ``source`` / ``target``: store paths or open :class:`EmbeddingStore` objects; several shard
    stores on either side are read as one. ``estimator``: a map (``RidgeMap(alpha=1.0)``) or a
    method name with its defaults; it is copied, never fitted in place. ``plan``
    (:class:`AnchorPlan`): which anchors fit the map, which are held out for its metrics, whether
    the map is refitted on both and refined with unpaired samples. ``read``
    (:class:`ReadOptions`): chunk size, precision, progress and the engine computing the
    statistics. ``anchors_`` of the result states what it was fitted on, ``metrics_`` its
    held-out quality.
    """
    plan = (plan or AnchorPlan()).validate()
    read = (read or ReadOptions()).validate()
    m = seeded_estimator(estimator, plan.seed)
    l2, seed = bool(m.l2), plan.seed
    stats = StatsSpec(seed=seed, l2=l2, chunk_size=read.chunk_size, exact=read.exact)
    with _opened(source) as src_store, _opened(target) as tgt_store:
        src, tgt = _samples(src_store, plan.pool_by), _samples(tgt_store, plan.pool_by)
        split = plan_anchors(src, tgt, anchors=plan.anchors, holdout=plan.holdout, seed=seed)
        ids = choose_anchors(src, split, plan.n_anchors, strategy=plan.strategy, seed=seed)
        if len(ids) < 2:
            raise UsageError(
                f"{len(ids)} anchor(s) left after the holdout: a map needs at least 2 "
                "(and least squares more than the dimension)"
            )
        n_folds = m.n_folds_for(len(ids), src.dim)
        folds = read.engine.accumulate(src, tgt, ids, replace(stats, n_folds=n_folds), progress=read.progress)
        m.fit_stats(folds)
        held = prepare_heldout(src, tgt, split, seed=seed, l2=l2) if plan.metrics or plan.unpaired else None
        if plan.unpaired:
            m = _refine_map(m, folds, src, tgt, split, ids, held, plan)
        measured = heldout_metrics(m, held) if plan.metrics else {}
        n_refit = 0
        if plan.refit and len(split.heldout):
            held_folds = read.engine.accumulate(src, tgt, split.heldout, replace(stats, n_folds=len(folds)),
                                                progress=None)
            all_folds = refit_folds(m, folds, held_folds, src.dim)
            refitted = clone(m).fit_stats(all_folds)
            if plan.unpaired:
                refitted = _refine_map(refitted, all_folds, src, tgt, split, ids, None, plan, check=False)
                refitted._refinement = {**m._refinement, "refit_pseudo_pairs_per_round":
                                        refitted._refinement["pseudo_pairs_per_round"]}
            m, n_refit = refitted, int(len(ids) + len(split.heldout))
        m.source_space_ = _space(src)
        m.target_space_ = _space(tgt)
        m.anchors_ = plan.record(len(ids), len(split.pool), len(split.heldout), n_refit,
                                 stores={"source": src_store, "target": tgt_store})
        if plan.unpaired:
            m.anchors_["refinement"] = m.__dict__.pop("_refinement")
        m.fitted_on_ = fitted_anchors(src_store, np.concatenate([ids, split.heldout]) if n_refit else ids,
                                      plan.pool_by)
        m.metrics_ = measured
    return m


#: Neighbours of the mutual k-NN overlap a dry run reports.
MUTUAL_KNN_K = 10


def check_stitchability(
    source: StoreLike,
    target: StoreLike,
    estimator: BaseMap | str = "ridge",
    plan: AnchorPlan | None = None,
    k: int = MUTUAL_KNN_K,
    max_rows: int = 4000,
) -> dict[str, Any]:
    """What ``fit_map`` with the same estimator and plan would face, measured on its fit anchors
    only (at most ``max_rows`` of them).

    Linear CKA, mutual ``k``-NN overlap and a cross-validated estimate of the held-out quality
    (see :mod:`.stitchability`); nothing is written and the held-out anchors are not read.
    """
    from .stitchability import AnchorSample, recommend, stitchability

    plan = (plan or AnchorPlan()).validate()
    m = seeded_estimator(estimator, plan.seed)
    with _opened(source) as src_store, _opened(target) as tgt_store:
        src, tgt = _samples(src_store, plan.pool_by), _samples(tgt_store, plan.pool_by)
        split = plan_anchors(src, tgt, anchors=plan.anchors, holdout=plan.holdout, seed=plan.seed)
        ids = choose_anchors(src, split, plan.n_anchors, strategy=plan.strategy, seed=plan.seed)
        n_fit = len(ids)
        if n_fit > max_rows:
            ids = np.sort(np.random.default_rng(plan.seed).choice(ids, max_rows, replace=False))
        pool = np.asarray(split.fit_pool)
        if len(pool) > max_rows:
            pool = np.sort(np.random.default_rng(plan.seed).choice(pool, max_rows, replace=False))
        pairs = {}
        for name, which in (("chosen", ids), ("pool", pool)):
            X = src.read(rows_of(src, which))
            Y = tgt.read(rows_of(tgt, which))
            require_finite(X, which, src.path, "anchor embeddings")
            require_finite(Y, which, tgt.path, "anchor embeddings")
            pairs[name] = AnchorSample(X, Y, which, n_fit if name == "chosen" else len(split.fit_pool))
    report = stitchability(pairs["chosen"], lambda: clone(m), k=k, seed=plan.seed, max_rows=max_rows)
    report["recommendation"] = recommend(pairs["chosen"], pairs["pool"], lambda: clone(m), seed=plan.seed)
    report["n_anchors"] = int(n_fit)
    report["n_heldout"] = int(len(split.heldout))
    report["method"] = m.method
    return report


def apply_map(map_or_path: BaseMap | str | os.PathLike, store_path: str | os.PathLike,
              out_path: str | os.PathLike, options: ApplyOptions | None = None, **settings: Any
              ) -> dict[str, Any]:
    """Write ``store_path`` mapped into the map's target space as a new store at ``out_path``.

    ``settings``: :class:`ApplyOptions` fields (``chunk_size``, ``tokens``, ``force_space``,
    ``device``, ``progress``) applied over ``options``.
    The output carries the target space's model_spec / weights_sha256 (it lives there now),
    plus ``map`` and ``source`` attributes naming where it came from, and ``map_device``
    where the products ran (``device``: auto, cpu, cuda[:N]; on the CPU the map's own numpy
    path). Tokens, where the store has them (and ``tokens``), are mapped per token too (see
    :mod:`stitchkit.maps.tokens`).
    """
    from ..devices import device_name, on_device
    from ..fileio import check_writable_dir
    from ..store.store import StoreWriter, base_attrs

    options = replace(options or ApplyOptions(), **settings)
    force, chunk_size, tokens, progress = options.force_space, options.chunk_size, options.tokens, options.progress
    dev = device_name(options.device)  # a GPU that is not there: one line, before anything is read
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
            map_device=dev,
        )
        m = on_device(m, dev)
        n = len(store)
        tok = T.plan(m, store, map_name, chunk_size) if tokens else None
        if tok is not None:
            attrs["tokens_mapping"], chunk_size = tok["note"], tok["chunk_size"]
            # tokens pooled at embed time (--token-grid) stay on that grid
            attrs.update({k: store.attrs[k] for k in ("token_grid", "model_token_grid") if k in store.attrs})
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
        "device": dev,
        **({"tokens": tok["token_shape"], "tokens_note": tok["note"]} if tok is not None else {}),
    }


# Held-out metrics that refinement must not make worse without saying so.
_REFINE_CHECKED = ("cosine_mean", "top1", "relative_mse", "probe_auc_ratio")


def _refine_map(
    m: BaseMap, folds: list[F.SuffStats], src: Any, tgt: Any, split: Plan, ids: np.ndarray,
    held: HeldOut | None, plan: AnchorPlan, check: bool = True,
) -> BaseMap:
    """``m`` refined with MNN pseudo-anchors from unpaired rows; warns if held-out got worse
    (``check=False``: a refit on the held-out anchors too, which leaves none to check on)."""
    from .refine import refine

    exclude = np.concatenate([np.asarray(ids).astype(str), np.asarray(split.heldout).astype(str)])
    Xu = unpaired_rows(src, exclude, plan.unpaired, plan.seed + 11)
    Yu = unpaired_rows(tgt, exclude, plan.unpaired, plan.seed + 13)
    refined, history = refine(m, folds, Xu, Yu, iterations=plan.refine_iterations, l2=bool(m.l2), seed=plan.seed)
    info: dict[str, Any] = {"unpaired_source": int(len(Xu)), "unpaired_target": int(len(Yu)),
                            "pseudo_pairs_per_round": history, "iterations": plan.refine_iterations}
    if held is not None:
        before, after = heldout_metrics(m, held), heldout_metrics(refined, held)
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
    elif check:
        warnings.warn("unpaired refinement not checked: no held-out anchors (raise --holdout)",
                      stacklevel=3)
    refined._refinement = info
    return refined
