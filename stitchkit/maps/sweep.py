"""Held-out quality against the anchor count, over methods and seeds: run, summarise, write.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError
from . import functional as F
from .estimators import make_map
from .plan import choose_anchors, evaluate, plan_anchors, prepare_heldout
from .stream import StoreLike, _opened, accumulate

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
    and every method is solved from them.
    """
    rows: list[dict[str, Any]] = []
    # Folds only where a method chooses by K-fold; ridge's default (GCV) needs one pass.
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
                n_folds = max(make_map(method).n_folds_for(len(ids), src.dim) for method in methods)
                folds = accumulate(src, tgt, ids, n_folds=n_folds, seed=seed, l2=l2,
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
                            m.fit_stats(folds if m.n_folds_for(len(ids), src.dim) > 1 else F.merge_all(folds))
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
