"""The anchor-count curves of a sweep (``stitch sweep --plot``), drawn with matplotlib.

Plotting lives here, not in the maps library, so that importing stitchkit.maps never loads
matplotlib or changes a notebook's backend.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np


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
        for method in methods:
            pts = [e for e in summary if e["method"] == method and f"{metric}_mean" in e]
            if not pts:
                continue
            x = [e["n_anchors"] for e in pts]
            y = [e[f"{metric}_mean"] for e in pts]
            s = [e.get(f"{metric}_std", 0.0) for e in pts]
            ax.errorbar(x, y, yerr=s, marker="o", ms=3, capsize=2, label=method)
        ax.set_xscale("log")
        ax.set_xticks(counts, [str(c) for c in counts])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("anchors")
        ax.set_title(metric.replace("_", " "))
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    return path
