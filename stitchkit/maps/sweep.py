"""Held-out quality against the anchor count, over methods and seeds: run, summarise, write.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError
from ..settings import Range, check_settings, setting
from . import functional as F
from .estimators import METHODS, make_map
from .options import AnchorPlan, ReadOptions, seeded_estimator
from .plan import choose_anchors, heldout_metrics, plan_anchors, prepare_heldout
from .stream import StatsSpec, StoreLike, _opened, accumulate

# ---------------------------------------------------------------------------------------------
# sweep
# ---------------------------------------------------------------------------------------------
SWEEP_METRICS = (
    "cosine_mean", "cosine_median", "relative_mse", "top1", "top5", "mrr",
    "probe_accuracy_ratio", "probe_auc_ratio", "probe_auc_stitched", "alpha_relative",
)


@dataclass(frozen=True)
class SweepGrid:
    """What a sweep varies: anchor counts, methods and seeds; ``params`` (e.g. ``center``,
    ``standardize``, ``l2``) are given to every method."""

    n_anchors: Sequence[int] = setting((50, 100, 250, 500, 1000), "Comma-separated anchor counts.",
                                       within=Range(1))
    methods: Sequence[str] = setting(("orthogonal", "affine", "ridge"), "Comma-separated methods.",
                                     choices=METHODS)
    seeds: Sequence[int] = setting((0, 1, 2), "Comma-separated seeds (each: its own holdout split and "
                                   "anchor draw).")
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_settings(self)


def sweep(
    source: StoreLike,
    target: StoreLike,
    grid: SweepGrid,
    plan: AnchorPlan | None = None,
    read: ReadOptions | None = None,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """One row per (seed, anchor count, method) of ``grid`` with the held-out metrics.

    ``plan`` gives the anchors, strategy and holdout (its ``n_anchors`` and ``seed`` come from
    the grid). For each seed the holdout and probe are fixed; for each count the statistics are
    read once and every method is solved from them.
    """
    plan = (plan or AnchorPlan()).validate()
    read = (read or ReadOptions()).validate()
    for method in grid.methods:
        make_map(method, **grid.params)._validate_params()
    l2 = bool(grid.params.get("l2", False))
    rows: list[dict[str, Any]] = []
    # Folds only where a method chooses by K-fold; ridge's default (GCV) needs one pass.
    with _opened(source) as src, _opened(target) as tgt:
        for seed in grid.seeds:
            split = plan_anchors(src, tgt, anchors=plan.anchors, holdout=plan.holdout, seed=seed)
            held = prepare_heldout(src, tgt, split, seed=seed, l2=l2)
            if held is None:
                raise UsageError("holdout (--holdout) leaves fewer than 2 held-out anchors: raise it")
            for n in sorted(grid.n_anchors):
                if n > len(split.fit_pool):
                    raise UsageError(
                        f"--n-anchors {n} but only {len(split.fit_pool)} anchors remain after the "
                        "holdout: lower it"
                    )
                ids = choose_anchors(src, split, n, strategy=plan.strategy, seed=seed)
                n_folds = max(make_map(method).n_folds_for(len(ids), src.dim) for method in grid.methods)
                folds = accumulate(src, tgt, ids, StatsSpec(n_folds=n_folds, seed=seed, l2=l2,
                                                            chunk_size=read.chunk_size, exact=read.exact))
                for method in grid.methods:
                    row: dict[str, Any] = {"method": method, "n_anchors": int(n), "seed": int(seed)}
                    m = seeded_estimator(make_map(method, **grid.params), seed)
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always")
                        try:
                            m.fit_stats(folds if m.n_folds_for(len(ids), src.dim) > 1 else F.merge_all(folds))
                            row.update(heldout_metrics(m, held))
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
