"""Figures of a stitching run: each function draws one PNG and returns its path.

Every figure is a bare :class:`matplotlib.figure.Figure` on the Agg canvas (no pyplot), so
drawing a report never selects or changes the caller's matplotlib backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..fileio import atomic_output

COLOURS = ("tab:blue", "tab:red", "tab:green", "tab:purple", "tab:orange", "tab:brown", "tab:pink",
           "tab:grey", "tab:olive", "tab:cyan")


def short_name(name: str, width: int = 40) -> str:
    """A model or file name short enough for a figure (the page's text keeps it whole): a spec
    ``backend:arch?weights=/a/b/file.pth&...`` becomes ``backend:arch (file.pth)``, a path its
    file name, anything else longer than ``width`` keeps its two ends."""
    text = str(name)
    if len(text) <= width:
        return text
    head, _, query = text.partition("?")
    if query:
        from urllib.parse import parse_qsl

        weights = dict(parse_qsl(query)).get("weights")
        text = f"{head} ({Path(weights).name})" if weights else f"{head}?…"
    elif "/" in text:
        text = Path(text).name
    if len(text) <= width:
        return text
    keep = (width - 1) // 2
    return f"{text[:keep]}…{text[-(width - 1 - keep):]}"


def shorten_specs(text: str) -> str:
    """``text`` with every model spec in it (``backend:name?key=value&...``) shortened."""
    import re

    return re.sub(r"[\w.+-]+:[^\s?]+\?\S+", lambda m: short_name(m.group(0), 64), str(text))


def wrapped(title: str, width: int = 80) -> str:
    """A title broken into lines of at most ``width`` characters, never cut."""
    import textwrap

    title = shorten_specs(title)  # the page's text keeps the specs whole
    return "\n".join(textwrap.wrap(title, width, break_long_words=True, break_on_hyphens=False)) or title


def _figure(width: float, height: float):  # noqa: ANN202 - matplotlib types are imported lazily
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> Path:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "tight layout not applied": bbox_inches below still fits
        fig.tight_layout()
    with atomic_output(path) as tmp:
        # "tight" grows the canvas to hold legends placed outside the axes and long labels.
        fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight")
    return Path(path)


#: At most this many curves share one ROC panel: more and the lines cannot be told apart.
ROC_PANEL_MOST = 8


@dataclass(eq=False)
class RocCurve:
    """One line of a ROC panel: ``y`` the true labels (bool), ``score`` what ranks the samples;
    a ``control`` is drawn dashed in the colour of the curve before it (the route it controls)."""

    label: str
    y: np.ndarray
    score: np.ndarray
    control: bool = False


@dataclass(eq=False)
class RocPanel:
    title: str
    curves: list[RocCurve]


def _legend_label(text: str, width: int) -> str:
    """A legend entry wrapped to ``width`` characters, never cut; later lines indented."""
    import textwrap

    lines = textwrap.wrap(text, width, break_long_words=True, break_on_hyphens=False) or [text]
    return "\n".join([lines[0], *("    " + line for line in lines[1:])])


def roc_panels(panels: Sequence[RocPanel], path: Path, *, title: str, columns: int = 2) -> tuple[Path, list[int]]:
    """ROC curves in small panels, ``columns`` a row, each with its legend (AUC, then the
    route's name, wrapped, never cut) below its axes.

    A panel may hold at most :data:`ROC_PANEL_MOST` curves (ValueError otherwise). Returns the
    path and the number of curves drawn in each panel (a curve whose labels are all of one
    class has no ROC and is left out).
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    for p in panels:
        if len(p.curves) > ROC_PANEL_MOST:
            raise ValueError(f"ROC panel {p.title!r}: {len(p.curves)} curves; at most {ROC_PANEL_MOST} fit one panel")
    cols = max(1, min(columns, len(panels)))
    nrows = -(-len(panels) // cols)
    # Inches: each panel is a title, square-ish axes, the x label, then its legend.
    panel_w, ax_w, ax_h, left, head, foot, line = 4.4, 3.2, 2.6, 0.62, 0.5, 0.45, 0.155
    wrap = 54
    entries = []
    for p in panels:
        drawn = []
        for c in p.curves:
            y = np.asarray(c.y, dtype=bool)
            if y.all() or not y.any():
                continue
            auc = roc_auc_score(y, c.score)
            label = f"{auc:.3f}  " + ("↳ " if c.control else "") + c.label
            drawn.append((c, y, _legend_label(label, wrap)))
        entries.append(drawn)
    row_lines = [max((sum(lab.count("\n") + 1 for *_, lab in entries[k]) for k in range(r * cols, min(len(panels), (r + 1) * cols))),
                     default=1) for r in range(nrows)]
    row_h = [head + ax_h + foot + 0.2 + line * n for n in row_lines]
    top = 0.5 if title else 0.1
    fig_w, fig_h = panel_w * cols, top + sum(row_h)
    fig = _figure(fig_w, fig_h)
    y_top = fig_h - top
    for r in range(nrows):
        for k in range(r * cols, min(len(panels), (r + 1) * cols)):
            x0 = (k - r * cols) * panel_w + left
            ax = fig.add_axes([x0 / fig_w, (y_top - head - ax_h) / fig_h, ax_w / fig_w, ax_h / fig_h])
            colour = -1
            for c, y, label in entries[k]:
                if not c.control or colour < 0:
                    colour += 1
                fpr, tpr, _ = roc_curve(y, c.score)
                ax.plot(fpr, tpr, lw=1.5 if not c.control else 1.2, ls="--" if c.control else "-",
                        c=COLOURS[colour % len(COLOURS)], label=label)
            ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=1)
            ax.set(xlim=(0, 1), ylim=(0, 1.01))
            ax.set_xlabel("false positive rate", fontsize=8)
            ax.set_ylabel("true positive rate", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.set_title(wrapped(panels[k].title, 52), fontsize=9)
            ax.grid(alpha=0.3)
            if entries[k]:
                ax.legend(loc="upper left", bbox_to_anchor=((x0 - left + 0.05) / fig_w, (y_top - head - ax_h - foot) / fig_h),
                          bbox_transform=fig.transFigure, fontsize=7.5, frameon=False, title="AUC    route",
                          title_fontsize=7.5, alignment="left", handlelength=2.2, borderaxespad=0)
        y_top -= row_h[r]
    if title:
        fig.text(0.5 / fig_w, (fig_h - 0.15) / fig_h, wrapped(title, int(14 * fig_w)), fontsize=10, va="top")
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight")
    return Path(path), [len(e) for e in entries]


@dataclass(frozen=True, eq=False)  # an array: compared by identity, never element-wise
class Confusion:
    """A confusion matrix as drawn and tabled: the ``counts`` (rows true, columns ``columns``),
    the names of its ``rows`` and ``columns``, and the decision ``rule`` it was counted at.

    A matrix means nothing without its rule and labels (multi-class: classes × classes at the
    argmax; multi-label: classes × TP/FP/FN/TN at a threshold), so the figure and the report's
    table take them together.
    """

    counts: np.ndarray
    rows: list[str]
    columns: list[str]
    rule: str


def classification_panels(y: np.ndarray, ranking: np.ndarray, scores: np.ndarray, classes: Sequence[str],
                          confusion: Confusion, path: Path, *, title: str) -> Path:
    """ROC per class (AUC in the legend), the confusion matrix at its rule, calibration curves.

    ``y`` is (n, classes) booleans, ``ranking`` the scores the ROC ranks by, ``scores`` the
    probabilities the calibration curve bins; ``confusion`` is drawn as given.
    """
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import roc_auc_score, roc_curve

    fig = _figure(15, 4.8)
    ax_roc, ax_cm, ax_cal = fig.subplots(1, 3)
    for c, name in enumerate(classes):
        yc = y[:, c]
        if yc.all() or not yc.any():
            continue
        fpr, tpr, _ = roc_curve(yc, ranking[:, c])
        ax_roc.plot(fpr, tpr, lw=1.4, c=COLOURS[c % len(COLOURS)],
                    label=f"{name} (AUC {roc_auc_score(yc, ranking[:, c]):.3f}, n+={int(yc.sum())})")
        frac, mean = calibration_curve(yc, np.clip(scores[:, c], 0, 1), n_bins=10, strategy="uniform")
        ax_cal.plot(mean, frac, marker="o", ms=3, c=COLOURS[c % len(COLOURS)], label=name)
    ax_roc.plot([0, 1], [0, 1], ls=":", c="grey", lw=1)
    ax_roc.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, one class against the rest")
    ax_roc.legend(fontsize=7, loc="lower right")
    ax_roc.grid(alpha=0.3)
    ax_cal.plot([0, 1], [0, 1], ls=":", c="grey", lw=1, label="perfectly calibrated")
    ax_cal.set(xlabel="mean predicted probability (10 equal-width bins)", ylabel="fraction positive",
               title="calibration", xlim=(0, 1), ylim=(0, 1))
    ax_cal.legend(fontsize=7)
    ax_cal.grid(alpha=0.3)
    rows, cols, counts = confusion.rows, confusion.columns, confusion.counts
    ax_cm.imshow(counts, cmap="Blues", interpolation="nearest")
    ax_cm.set_xticks(range(len(cols)), cols, rotation=45 if len(cols) > 3 else 0, ha="right" if len(cols) > 3 else "center", fontsize=8)
    ax_cm.set_yticks(range(len(rows)), rows, fontsize=8)
    top = counts.max() if counts.size else 0
    for (i, j), v in np.ndenumerate(counts):
        ax_cm.text(j, i, str(int(v)), ha="center", va="center", fontsize=8,
                   color="white" if top and v > top / 2 else "black")
    ax_cm.set_title(f"confusion matrix: {confusion.rule}", fontsize=9)
    ax_cm.set_xlabel("predicted" if cols != ["TP", "FP", "FN", "TN"] else "outcome")
    ax_cm.set_ylabel("true label")
    fig.suptitle(wrapped(title, 120), fontsize=10)
    return _save(fig, path)


def score_histograms(y: np.ndarray, scores: np.ndarray, classes: Sequence[str], path: Path, *, title: str) -> Path:
    """Per class: its score on samples with that label against samples without it."""
    n = len(classes)
    cols = min(4, n)
    nrows = -(-n // cols)
    fig = _figure(3.6 * cols, 2.8 * nrows + 0.4)
    axes = np.atleast_1d(fig.subplots(nrows, cols, squeeze=False)).ravel()
    bins = np.linspace(0, 1, 31)
    for ax, c in zip(axes, range(n), strict=False):
        s = np.clip(scores[:, c], 0, 1)
        ax.hist(s[~y[:, c]], bins=bins, alpha=0.55, color="tab:blue", label=f"not {classes[c]} (n={int((~y[:, c]).sum())})")
        ax.hist(s[y[:, c]], bins=bins, alpha=0.55, color="tab:red", label=f"{classes[c]} (n={int(y[:, c].sum())})")
        ax.set_title(f"score of {classes[c]}", fontsize=9)
        ax.set_xlabel("probability")
        ax.legend(fontsize=7, loc="upper center")
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.suptitle(wrapped(title, 120), fontsize=10)
    return _save(fig, path)


def map_quality(maps: dict[str, dict[str, float]], plans: dict[str, dict[str, int]], path: Path) -> Path:
    """Held-out metrics of each map (bars), its relative MSE (own axis: lower is better) and its
    anchor plan (fit / held out / unused). ``maps`` is keyed by each map's label as drawn (one or
    two lines, distinct)."""
    def known(v: Any) -> bool:
        return isinstance(v, float | int) and bool(np.isfinite(v))

    metrics = [m for m in ("cosine_mean", "top1", "top5", "mrr", "cka_mapped_target", "probe_auc_ratio")
               if any(known(v.get(m)) for v in maps.values())]
    with_mse = any(known(v.get("relative_mse")) for v in maps.values())
    names = list(maps)
    fig = _figure(12.5, 1.4 + 0.62 * max(3, len(maps)))
    ratios = [3.0, 1.1, 1.6] if with_mse else [3.0, 1.6]
    axes = fig.subplots(1, len(ratios), gridspec_kw={"width_ratios": ratios})
    ax_m, ax_p = axes[0], axes[-1]
    height = 0.8 / max(1, len(metrics))
    for k, metric in enumerate(metrics):
        vals = [maps[n].get(metric) for n in names]
        ys = np.arange(len(names)) - 0.4 + (k + 0.5) * height
        ax_m.barh(ys, [v if known(v) else 0.0 for v in vals], height=height, color=COLOURS[k % len(COLOURS)],
                  label=metric)
    for i, n in enumerate(names):
        if not any(known(maps[n].get(m)) for m in metrics):  # no held-out anchors: nothing measured
            ax_m.text(0.01, i, "no held-out metrics (no anchors held out)", va="center", fontsize=7.5, color="dimgrey")
            continue
        for k, metric in enumerate(metrics):
            if not known(maps[n].get(metric)):  # e.g. retrieval over repeated targets: no figure, not a zero
                ax_m.text(0.005, i - 0.4 + (k + 0.5) * height, f"{metric}: n/a", va="center", fontsize=6,
                          color=COLOURS[k % len(COLOURS)])
    ax_m.set_yticks(range(len(names)), names, fontsize=8)
    ax_m.set_ylim(len(names) - 0.5, -0.5)
    ax_m.set_xlim(0, 1.05)
    ax_m.set_xlabel("held-out value (anchors never used to fit); higher is better", fontsize=8)
    ax_m.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.55 / (0.62 * max(3, len(maps)))), ncol=3)
    ax_m.set_title("held-out quality", fontsize=9)
    ax_m.grid(axis="x", alpha=0.3)
    if with_mse:
        ax_e = axes[1]
        vals = [maps[n].get("relative_mse") for n in names]
        top = max([v for v in vals if known(v)], default=1.0) or 1.0
        for i, v in enumerate(vals):
            if known(v):
                ax_e.barh(i, v, height=0.5, color="tab:grey")
                ax_e.text(v + 0.02 * top, i, f"{v:.3g}" if v < 0.001 else f"{v:.3f}", va="center", fontsize=7)
            else:
                ax_e.text(0.02 * top, i, "n/a", va="center", fontsize=7, color="dimgrey")
        ax_e.set_yticks(range(len(names)), [""] * len(names))
        ax_e.set_ylim(len(names) - 0.5, -0.5)
        ax_e.set_xlim(0, top * 1.35)
        ax_e.set_xlabel("held-out relative MSE; lower is better", fontsize=8)
        ax_e.set_title("relative MSE", fontsize=9)
        ax_e.grid(axis="x", alpha=0.3)
    for i, n in enumerate(names):
        p = plans.get(n, {})
        fit, held, pool = p.get("n_fit") or 0, p.get("n_heldout") or 0, p.get("n_pool") or 0
        unused = max(0, pool - fit - held)
        ax_p.barh(i, fit, color="tab:green", label="fit" if i == 0 else None)
        ax_p.barh(i, held, left=fit, color="tab:orange", label="held out" if i == 0 else None)
        ax_p.barh(i, unused, left=fit + held, color="lightgrey", label="pool, unused" if i == 0 else None)
        ax_p.text(fit + held + unused, i, f" {fit}+{held}/{pool}", va="center", fontsize=7)
    ax_p.set_yticks(range(len(names)), [""] * len(names))
    ax_p.set_ylim(len(names) - 0.5, -0.5)
    widest = max([max(plans.get(n, {}).get("n_pool") or 0,
                      (plans.get(n, {}).get("n_fit") or 0) + (plans.get(n, {}).get("n_heldout") or 0)) for n in names] + [1])
    ax_p.set_xlim(0, widest * 1.3)  # room for the counts written after each bar
    ax_p.set_xlabel("anchors", fontsize=8)
    ax_p.set_title("anchor plan: fit + held out / pool", fontsize=9)
    ax_p.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.55 / (0.62 * max(3, len(maps)))), ncol=3)
    return _save(fig, path)


def cosine_histograms(cosines: dict[str, np.ndarray], path: Path, *, title: str) -> Path:
    fig = _figure(6.4, 4)
    ax = fig.add_subplot()
    lo = min(float(c.min()) for c in cosines.values())
    bins = np.linspace(min(lo, 0.99), 1, 50)
    for name, c in cosines.items():  # names wrapped, never cut: two maps may differ only at the end
        ax.hist(c, bins=bins, alpha=0.55, label=_legend_label(f"{name} (median {np.median(c):.3f})", 44))
    ax.set_xlabel("cosine(mapped source, true target)")
    ax.set_ylabel("samples")
    ax.set_title(wrapped(title, 70), fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return _save(fig, path)


def pca_panels(native: np.ndarray, mapped: dict[str, np.ndarray], labels: Sequence[str], path: Path, *,
               title: str) -> tuple[Path, list[float]]:
    """Native target embeddings (o) and each map's output (x) on the native's top two PCs.

    Returns the path and the two explained-variance ratios (of the native embeddings).
    """
    from sklearn.decomposition import PCA

    pca = PCA(n_components=2).fit(native)
    a = pca.transform(native)
    labels = np.asarray(labels)
    kinds = sorted(set(labels.tolist()))[: len(COLOURS)]
    n = len(mapped)
    cols = min(3, n)  # three a row at most: wider would shrink the text on the page
    nrows = -(-n // cols)
    fig = _figure(4.6 * cols, 4.3 * nrows + 0.4)
    axes = np.atleast_1d(fig.subplots(nrows, cols, squeeze=False)).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    for ax, (name, Z) in zip(axes, mapped.items(), strict=False):
        b = pca.transform(Z)
        for colour, lab in zip(COLOURS, kinds, strict=False):
            m = labels == lab
            ax.scatter(a[m, 0], a[m, 1], s=8, c=colour, marker="o", alpha=0.45, label=f"native: {lab}")
            ax.scatter(b[m, 0], b[m, 1], s=10, c=colour, marker="x", alpha=0.6, label=f"mapped: {lab}")
        ax.set_xlabel(f"PC1 ({100 * pca.explained_variance_ratio_[0]:.0f} % of native variance)")
        ax.set_ylabel(f"PC2 ({100 * pca.explained_variance_ratio_[1]:.0f} %)")
        ax.set_title(wrapped(name, 50), fontsize=9)
        ax.legend(fontsize=6, markerscale=1.5, loc="upper right")
    fig.suptitle(wrapped(title, 120), fontsize=10)
    return _save(fig, path), [float(v) for v in pca.explained_variance_ratio_]


def benchmark_aucs(rows: Sequence[dict[str, Any]], path: Path, *, title: str) -> Path:
    """One line per data set: its macro AUC (diamond) with the 95 % interval as a bar, and every
    finding's AUC as a dot. ``rows``: ``{"name", "auc_macro", "ci": [lo, hi] or None, "aucs":
    {finding: AUC or None}}``, drawn top to bottom in the given order."""
    fig = _figure(7.5, 1.4 + 0.42 * len(rows))
    ax = fig.add_subplot()
    lowest = 0.5
    for k, row in enumerate(rows):
        y = len(rows) - 1 - k
        dots = np.array([v for v in row["aucs"].values() if v is not None and np.isfinite(v)], dtype=float)
        if len(dots):
            spread = np.linspace(-0.18, 0.18, len(dots)) if len(dots) > 1 else np.zeros(1)
            ax.scatter(dots, y + spread, s=14, c="tab:grey", alpha=0.75, zorder=2,
                       label="one finding" if k == 0 else None)
            lowest = min(lowest, float(dots.min()))
        macro, ci = row.get("auc_macro"), row.get("ci")
        if macro is not None and np.isfinite(macro):
            xerr = [[macro - ci[0]], [ci[1] - macro]] if ci else None
            ax.errorbar([macro], [y], xerr=xerr, fmt="D", c="tab:blue", ms=6, capsize=4, zorder=3,
                        label="macro AUC, 95 % CI" if k == 0 else None)
            lowest = min(lowest, ci[0] if ci else macro)
    ax.axvline(0.5, ls=":", c="grey", lw=1, label="chance")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([wrapped(r["name"], 32) for r in reversed(rows)], fontsize=8)  # wrapped, never cut
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_xlim(max(0.0, lowest - 0.05), 1.0)
    ax.set_xlabel("AUC")
    ax.set_title(wrapped(title, 80), fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def learning_curve(curve: Sequence[dict[str, Any]], routes: Sequence[str], path: Path, *, title: str) -> Path:
    """AUC against the number of training pairs (log scale), a line per route: the mean over
    seeds with a band of one standard deviation."""
    fig = _figure(6.4, 4.2)
    ax = fig.add_subplot()
    for colour, route in zip(COLOURS, routes, strict=False):
        points = [(c["n"], c[route]["auc_mean"], c[route]["auc_std"]) for c in curve if route in c]
        if not points:
            continue
        n, mean, std = (np.array(v, dtype=float) for v in zip(*points, strict=True))
        ax.plot(n, mean, marker="o", ms=3, lw=1.6, color=colour, label=route)
        ax.fill_between(n, mean - std, mean + std, color=colour, alpha=0.15, lw=0)
    ax.set_xscale("log")
    ax.set_xlabel("training pairs")
    ax.set_ylabel("AUC")
    ax.set_title(wrapped(title, 70), fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)
