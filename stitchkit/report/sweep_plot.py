"""The anchor-count curves of a sweep (``stitch sweep --plot``), drawn with matplotlib.

Plotting lives here, not in the maps library, so that importing stitchkit.maps never loads
matplotlib or changes a notebook's backend.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

TITLES = {"cosine_mean": "cosine (mean)", "top1": "top-1 retrieval", "mrr": "MRR",
          "relative_mse": "relative MSE (median row), lower is better", "probe_auc_ratio": "probe AUC ratio",
          "probe_accuracy_ratio": "probe accuracy ratio"}


def plot_sweep(summary: list[dict[str, Any]], path: str | os.PathLike, *, title: str = "") -> Path:
    """A PNG with one panel per held-out metric against the anchor count (mean ± std)."""
    # A bare Figure (no pyplot): drawing a file never switches the caller's backend.
    from matplotlib.figure import Figure

    from ..fileio import atomic_output

    panels = [m for m in ("cosine_mean", "top1", "mrr", "relative_mse", "probe_auc_ratio",
                          "probe_accuracy_ratio")
              if any(f"{m}_mean" in e and np.isfinite(e[f"{m}_mean"]) for e in summary)]
    from matplotlib.ticker import NullFormatter

    cols = min(3, len(panels))
    nrows = -(-len(panels) // cols)
    fig = Figure(figsize=(4.2 * cols, 3.4 * nrows))
    axes = fig.subplots(nrows, cols, squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    methods = sorted({e["method"] for e in summary})
    counts = sorted({e["n_anchors"] for e in summary})
    for ax, metric in zip(axes.flat, panels, strict=False):
        # relative MSE spans decades (one bad seed can be 40x the rest): a log axis where it can be
        log = metric == "relative_mse" and all(e[f"{metric}_mean"] > 0 for e in summary if f"{metric}_mean" in e)
        for method in methods:
            pts = [e for e in summary if e["method"] == method and f"{metric}_mean" in e]
            if not pts:
                continue
            x = [e["n_anchors"] for e in pts]
            y = np.array([e[f"{metric}_mean"] for e in pts])
            s = np.array([e.get(f"{metric}_std", 0.0) for e in pts])
            ax.errorbar(x, y, yerr=[np.minimum(s, 0.9 * y) if log else s, s], marker="o", ms=3, capsize=2,
                        label=method)
        ax.set_xscale("log")
        if log:
            ax.set_yscale("log")
        ax.set_xticks(counts, [str(c) for c in counts])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("anchors")
        ax.set_title(TITLES.get(metric, metric.replace("_", " ")) + (" (log scale)" if log else ""), fontsize=10)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    return path
