"""`stitch explain`'s figure: an image with one heatmap per class over its patch grid.

Drawn on a bare :class:`matplotlib.figure.Figure` with the Agg canvas, so it never selects or
changes the process's matplotlib backend.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..fileio import atomic_output


def draw_heatmaps(image: np.ndarray, grids: Mapping[str, np.ndarray], path: str | Path, *, title: str,
                  what: str, value_range: tuple[float, float] | None = None) -> Path:
    """Write ``path`` (PNG): ``image`` (H, W) or (H, W, 3) as the encoder saw it, then one panel
    per entry of ``grids`` (panel title → a (side, side) grid of values over that image),
    drawn over the image in grey, cell by cell, on one colour scale (``value_range``, else the
    values' own range); ``what`` names the values on the colour bar."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    image = np.asarray(image)
    height, width = image.shape[:2]
    grey = image if image.ndim == 2 else image.mean(axis=2)
    values = [np.asarray(g, dtype=np.float64) for g in grids.values()]
    lo, hi = value_range if value_range is not None else (min(float(v.min()) for v in values),
                                                           max(float(v.max()) for v in values))
    if hi <= lo:
        hi = lo + 1e-12
    panels = len(values) + 1
    fig = Figure(figsize=(2.8 * panels + 0.6, 3.3), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, panels, squeeze=False)[0]
    axes[0].imshow(grey, cmap="gray", extent=(0, width, height, 0))
    axes[0].set_title("image", fontsize=9)
    shown = None
    for ax, (name, grid) in zip(axes[1:], zip(grids, values, strict=True), strict=True):
        ax.imshow(grey, cmap="gray", extent=(0, width, height, 0))
        # The grid's cells as they are (no smoothing): each covers its patch of the image.
        shown = ax.imshow(grid, cmap="inferno", alpha=0.55, vmin=lo, vmax=hi, interpolation="nearest",
                          extent=(0, width, height, 0))
        ax.set_title(name, fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if shown is not None:
        bar = fig.colorbar(shown, ax=list(axes), fraction=0.025, pad=0.01)
        bar.set_label(what, fontsize=8)
    fig.suptitle(title, fontsize=9)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
