"""Two routes' scores of the same images compared, paired: a stitched route against its control.

A stitched route's AUC beside its native one says little: both carry a bootstrap interval, and
two intervals overlap far more often than a paired comparison finds no difference. The control
is the reference model through a map fitted on the same anchors (and the same adaptation), so
the difference isolates the new backbone from what the map alone does (docs/maps.md).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..errors import UsageError
from .metrics import paired_auc_difference
from .prompts import PromptSet
from .score_writer import read_scores


def paired_comparison(route: str | os.PathLike, control: str | os.PathLike, prompts: PromptSet,
                      positive: str, *, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """AUC of ``positive`` under ``route``'s scores minus under ``control``'s, on the images both
    scored, with its paired bootstrap interval and DeLong's p-value
    (:func:`~stitchkit.zeroshot.metrics.paired_auc_difference`). Rows whose label matches no
    class of ``prompts`` are left out, as `stitch classify`'s metrics leave them."""
    a, b = read_scores(route), read_scores(control)
    if a.labels is None:
        raise UsageError(f"{route}: the scores carry no labels, so there is no AUC to compare")
    at = {i: k for k, i in enumerate(b.ids)}
    missing = [i for i in a.ids if i not in at]
    if missing:
        raise UsageError(f"{control} lacks {len(missing)} of {route}'s images (first: {missing[0]}): "
                         "score the same images with both routes")
    classes = {c.name: c for c in prompts.classes}
    if positive not in classes or positive not in a.classes or positive not in b.classes:
        raise UsageError(f"class {positive!r} is not scored by both files and the prompts")
    cls = classes[positive]
    usable = np.array([any(c.matches(lab) for c in prompts.classes) for lab in a.labels])
    y = np.array([cls.matches(lab) for lab in a.labels])[usable]
    score_a = a.ranking[:, a.classes.index(positive)][usable]
    score_b = b.ranking[np.array([at[i] for i in a.ids]), b.classes.index(positive)][usable]
    found = paired_auc_difference(y, score_a, score_b, n_boot=n_boot, seed=seed)
    return {"route": str(route), "control": str(control), "class": positive, **found}


def paired_macro_difference(truth: np.ndarray, valid: np.ndarray, score_a: np.ndarray, score_b: np.ndarray,
                            *, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                            groups: np.ndarray | None = None) -> dict[str, Any]:
    """Macro AUC (mean over findings) of scorer A minus scorer B on the same images.

    ``truth``, ``valid`` (the rows each finding counts), ``score_a``, ``score_b``: (n, F). The
    interval resamples images, the same resample for both scorers and every finding (paired, as
    `stitch benchmark`'s own intervals); each finding's DeLong p-value is the paired test on its
    valid rows. A finding with one class only in its valid rows is left out. ``groups``: each
    image's group (patient; :func:`~stitchkit.zeroshot.metrics.group_codes`): the interval then
    resamples whole groups (the cluster bootstrap), still one draw for both scorers and every
    finding, not stratified by class; the ordinary bootstrap whatever N (no little bootstraps).
    """
    from .metrics import resampled_auc, resampling

    findings = [f for f in range(truth.shape[1])
                if 0 < truth[valid[:, f], f].sum() < valid[:, f].sum()]
    if not findings:
        raise UsageError("no finding has both classes among the images: nothing to compare")
    per_finding = []
    for f in findings:
        rows = valid[:, f]
        per_finding.append(paired_auc_difference(truth[rows, f], score_a[rows, f], score_b[rows, f], n_boot=0))
    difference = float(np.mean([p["difference"] for p in per_finding]))
    out: dict[str, Any] = {"auc_macro_a": float(np.mean([p["auc_a"] for p in per_finding])),
                           "auc_macro_b": float(np.mean([p["auc_b"] for p in per_finding])),
                           "difference": difference, "findings": [int(f) for f in findings],
                           "delong_p": [p["delong"]["p_value"] for p in per_finding]}
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        n = truth.shape[0]
        design = resampling(rng, n, n_boot, groups=groups, exact_max=n)  # one subset of all: the ordinary bootstrap
        scorers = [(valid[:, f], resampled_auc(truth[valid[:, f], f], score_a[valid[:, f], f]),
                    resampled_auc(truth[valid[:, f], f], score_b[valid[:, f], f])) for f in findings]
        draws = np.zeros(n_boot)
        block = 64  # resamples at a time: memory of 64 weight rows, whatever n_boot
        with np.errstate(invalid="ignore", divide="ignore"):
            for start in range(0, n_boot, block):
                size = min(block, n_boot - start)
                counts = design.weights(rng, 0, size)  # images: the multinomial; groups: whole groups
                for rows, a, b in scorers:
                    draws[start:start + size] += (a(counts[:, rows]) - b(counts[:, rows])) / len(findings)
        draws = draws[np.isfinite(draws)]
        tail = 100 * (1 - level) / 2
        what = "whole groups (a group's images together)" if design.unit == "group" else "images"
        out["ci"] = {"level": level, "n_boot": int(len(draws)), "method": f"paired percentile bootstrap of {what}",
                     **design.record(),
                     "difference": [float(np.percentile(draws, tail)), float(np.percentile(draws, 100 - tail))]}
    return out
