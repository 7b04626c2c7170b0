"""The loss curve of a head training run, drawn from the history `train_head` returns.

Drawn on a bare :class:`matplotlib.figure.Figure` with the Agg canvas, so it never selects
or changes the process's matplotlib backend (a notebook or a GUI keeps its own).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..fileio import atomic_output


def plot_loss(history: Sequence[dict[str, float]], path: str | Path, *, title: str | None = None
              ) -> Path | None:
    """Write train (and validation) loss per epoch to ``path`` (PNG); None for no history."""
    if not history:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(5, 3.2), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(epochs, [h["train_loss"] for h in history], label="train", marker=".")
    if "val_loss" in history[0]:
        ax.plot(epochs, [h["val_loss"] for h in history], label="validation", marker=".")
    ax.set_xlabel("epoch")
    ax.set_ylabel("symmetric InfoNCE loss")
    ax.set_title(title or f"head training: {path.name.removesuffix('.loss.png')}")
    ax.legend()
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
