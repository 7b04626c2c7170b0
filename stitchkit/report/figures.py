"""Figures of a stitching experiment: each function draws one PNG and returns its path."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..fileio import atomic_output  # noqa: E402


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return path


def read_scores(path: Path, positive: str, is_positive) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
    """(y_true, score of ``positive``) from a `stitch classify` CSV with a label column."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    y = np.array([is_positive(r["label"]) for r in rows], dtype=bool)
    s = np.array([float(r[positive]) for r in rows])
    return y, s


def roc_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, *, title: str) -> Path:
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, ax = plt.subplots(figsize=(5.6, 5.2))
    for name, (y, s) in curves.items():
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, lw=1.6, label=f"{name} (AUC {roc_auc_score(y, s):.3f})")
    ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=1, label="chance")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def score_heatmap(ids: Sequence[str], labels: Sequence[str], scores: np.ndarray, classes: Sequence[str],
                  path: Path, *, title: str) -> Path:
    """Images (rows, grouped by true label) against class prompts (columns)."""
    order = np.argsort(np.asarray(labels), kind="stable")
    fig, ax = plt.subplots(figsize=(2.2 + 1.1 * len(classes), 6))
    im = ax.imshow(scores[order], aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks(range(len(classes)), classes)
    lab = np.asarray(labels)[order]
    bounds = [0, *np.flatnonzero(lab[1:] != lab[:-1]) + 1, len(lab)]
    ax.set_yticks([(a + b) / 2 for a, b in zip(bounds[:-1], bounds[1:], strict=True)],
                  [lab[a] for a in bounds[:-1]])
    for b in bounds[1:-1]:
        ax.axhline(b - 0.5, c="white", lw=1.5)
    ax.set_ylabel(f"{len(ids)} test images, by true label")
    ax.set_xlabel("prompt class")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="probability")
    return _save(fig, path)


def cosine_histograms(cosines: dict[str, np.ndarray], path: Path, *, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(min(c.min() for c in cosines.values()), 1, 50)
    for name, c in cosines.items():
        ax.hist(c, bins=bins, alpha=0.55, label=f"{name} (median {np.median(c):.3f})")
    ax.set_xlabel("cosine(mapped source, true target)")
    ax.set_ylabel("held-out images")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, path)


def pca_scatter(native: np.ndarray, mapped: np.ndarray, labels: Sequence[str], path: Path, *,
                title: str, names: tuple[str, str]) -> Path:
    """Both sets projected on the principal axes of the native target embeddings."""
    from sklearn.decomposition import PCA

    pca = PCA(n_components=2).fit(native)
    a, b = pca.transform(native), pca.transform(mapped)
    labels = np.asarray(labels)
    fig, ax = plt.subplots(figsize=(6, 5))
    colours = dict(zip(sorted(set(labels)), ("tab:blue", "tab:red", "tab:green", "tab:purple"), strict=False))
    for lab, colour in colours.items():
        m = labels == lab
        ax.scatter(a[m, 0], a[m, 1], s=9, c=colour, marker="o", alpha=0.5, label=f"{names[0]}: {lab}")
        ax.scatter(b[m, 0], b[m, 1], s=12, c=colour, marker="x", alpha=0.6, label=f"{names[1]}: {lab}")
    ax.set_xlabel(f"PC1 ({100 * pca.explained_variance_ratio_[0]:.0f} % of target variance)")
    ax.set_ylabel(f"PC2 ({100 * pca.explained_variance_ratio_[1]:.0f} %)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, markerscale=1.5)
    return _save(fig, path)
