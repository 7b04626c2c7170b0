"""Fitting maps between two stores, checking stitchability and applying maps.

The stores are read in chunks; only sufficient statistics (O(D²)) and the held-out rows used
for metrics (at most ``MAX_EVAL``) are held in memory.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
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
from .estimators import BaseMap, load_map, make_map
from .plan import (
    HeldOut,
    Plan,
    _space,
    choose_anchors,
    evaluate,
    plan_anchors,
    prepare_heldout,
    refit_folds,
    unpaired_rows,
)
from .stream import LocalEngine, ProgressFn, StatsEngine, StoreLike, _opened


def _checked_params(method: str, pool_by: str | None, seed: int, **preprocessing: Any) -> dict[str, Any]:
    """The map's parameters, validated before any store is read (fit and dry run alike)."""
    params = dict(preprocessing, random_state=seed if method in ("affine", "linear", "ridge") else None)
    make_map(method, **params)._validate_params()
    if pool_by not in (None, "group"):
        raise UsageError(f"--pool-by takes 'group', got {pool_by!r}")
    return params


def _samples(store: Any, pool_by: str | None) -> Any:
    """The store itself, or its groups (studies) as samples under ``pool_by="group"``."""
    return PooledStore(store) if pool_by else store


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
    rescale: bool | None = None,
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
    refit: bool = True,
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
    ``refit`` (scikit-learn's ``refit``): the metrics are those of the map fitted without the
    held-out anchors; the map returned is then fitted again on the fit and held-out anchors
    together (alpha chosen again by the same rule), so that no anchor the user paid for is
    left out of the map. ``anchors_`` states both counts.
    """
    if isinstance(engine, str):
        if engine != "local":
            raise UsageError(
                f"engine {engine!r}: pass an engine object, e.g. "
                "stitchkit.engines.ray_stats.RayStats(address) for Ray"
            )
        engine = LocalEngine()
    params = _checked_params(method, pool_by, seed, center=center, standardize=standardize, l2=l2,
                             restore=restore, alpha=alpha, scale=scale, cv=cv, rescale=rescale)
    m = make_map(method, **params)
    with _opened(source) as src_store, _opened(target) as tgt_store:
        src, tgt = _samples(src_store, pool_by), _samples(tgt_store, pool_by)
        plan = plan_anchors(src, tgt, anchors=anchors, holdout=holdout, seed=seed)
        ids = choose_anchors(src, plan, n_anchors, strategy=strategy, seed=seed)
        if len(ids) < 2:
            raise UsageError(
                f"{len(ids)} anchor(s) left after the holdout: a map needs at least 2 "
                "(and least squares more than the dimension)"
            )
        read = dict(seed=seed, l2=l2, chunk_size=chunk_size, exact=exact)
        folds = engine.accumulate(src, tgt, ids, n_folds=m.n_folds_for(len(ids), src.dim),
                                  progress=progress, **read)
        m.fit_stats(folds)
        held = prepare_heldout(src, tgt, plan, seed=seed, l2=l2) if metrics or unpaired else None
        if unpaired:
            m = _refine_map(m, folds, src, tgt, plan, ids, held, unpaired=unpaired,
                            iterations=refine_iterations, l2=l2, seed=seed)
        measured = evaluate(m, held) if metrics else {}
        n_refit = 0
        if refit and len(plan.heldout):
            held_folds = engine.accumulate(src, tgt, plan.heldout, n_folds=len(folds), progress=None, **read)
            all_folds = refit_folds(m, folds, held_folds, src.dim)
            refitted = clone(m).fit_stats(all_folds)
            if unpaired:
                refitted = _refine_map(refitted, all_folds, src, tgt, plan, ids, None, unpaired=unpaired,
                                       iterations=refine_iterations, l2=l2, seed=seed, check=False)
                refitted._refinement = {**m._refinement, "refit_pseudo_pairs_per_round":
                                        refitted._refinement["pseudo_pairs_per_round"]}
            m, n_refit = refitted, int(len(ids) + len(plan.heldout))
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
            # The metrics are the held-out anchors' under the map fitted on n_fit; the map
            # written is refitted on n_refit (fit + held out) when this is non-zero.
            "n_refit": n_refit,
        }
        if unpaired:
            m.anchors_["refinement"] = m.__dict__.pop("_refinement")
        m.metrics_ = measured
    return m



def check_stitchability(
    source: StoreLike,
    target: StoreLike,
    *,
    method: str = "ridge",
    alpha: float | str | None = None,
    scale: bool | None = None,
    rescale: bool | None = None,
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

    params = _checked_params(method, pool_by, seed, center=center, standardize=standardize, l2=l2,
                             restore=restore, alpha=alpha, scale=scale, cv=cv, rescale=rescale)
    with _opened(source) as src_store, _opened(target) as tgt_store:
        src, tgt = _samples(src_store, pool_by), _samples(tgt_store, pool_by)
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


# Held-out metrics that refinement must not make worse without saying so.
_REFINE_CHECKED = ("cosine_mean", "top1", "relative_mse", "probe_auc_ratio")


def _refine_map(
    m: BaseMap, folds: list[F.SuffStats], src: Any, tgt: Any, plan: Plan, ids: np.ndarray,
    held: HeldOut | None, *, unpaired: int, iterations: int, l2: bool, seed: int, check: bool = True,
) -> BaseMap:
    """``m`` refined with MNN pseudo-anchors from unpaired rows; warns if held-out got worse
    (``check=False``: a refit on the held-out anchors too, which leaves none to check on)."""
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
    elif check:
        warnings.warn("unpaired refinement not checked: no held-out anchors (raise --holdout)",
                      stacklevel=3)
    refined._refinement = info
    return refined
