"""Ridge alpha for the cosine route, chosen on held-out covid pairs by patient group.

No Kermany image or label is read. For each alpha on a grid, a ridge map image → text is fitted
on four fifths of the covid patients (GroupKFold by patient, 5 folds) and scored on the held-out
fifth by a label-free retrieval criterion fixed before any test figure was looked at, ranking
images the way classification does (queries ranked against one fixed text): for each held-out
note, the AUC of its own image's cosine against the images of the other held-out patients whose
note differs (standardised notes repeat). The image → note direction is printed too; it is not
used: a note-specific offset (notes nearer the mean text) dominates it at large alpha.
The alpha with the best mean criterion is printed (and written as JSON).
Usage: python choose_alpha.py IMAGES.h5 TEXTS.h5 OUT.json
"""

from __future__ import annotations

import json
import sys

import numpy as np
from sklearn.model_selection import GroupKFold

from stitchkit.maps import AnchorPlan, fit_map, make_map
from stitchkit.maps.functional import l2_normalize
from stitchkit.store import EmbeddingStore

GRID = [10.0 ** e for e in np.arange(1.0, 6.51, 0.5)]


def retrieval_auc(pred: np.ndarray, true: np.ndarray, texts: np.ndarray, groups: np.ndarray,
                  images_for_note: bool = True) -> float:
    sim = l2_normalize(pred) @ l2_normalize(true).T  # (image, note)
    if images_for_note:
        sim = sim.T  # row i: note i against every image
    out = []
    for i in range(len(pred)):
        other = (groups != groups[i]) & (texts != texts[i])
        if not other.any():
            continue
        out.append(float((sim[i, other] < sim[i, i]).mean() + 0.5 * (sim[i, other] == sim[i, i]).mean()))
    return float(np.mean(out))


def main(images: str, texts: str, out: str) -> None:
    img, txt = EmbeddingStore(images), EmbeddingStore(texts)
    ids = np.array([i for i in txt.ids if i in set(img.ids)])
    x = img.read(img.index_of(list(ids)))
    y = txt.read(txt.index_of(list(ids)))
    groups = img.groups[img.index_of(list(ids))]
    notes = txt.texts[txt.index_of(list(ids))]
    scores: dict[float, list[float]] = {a: [] for a in GRID}
    other: dict[float, list[float]] = {a: [] for a in GRID}
    for train, held in GroupKFold(n_splits=5).split(x, y, groups):
        for a in GRID:
            m = fit_map(images, texts, make_map("ridge", alpha=a), plan=AnchorPlan(anchors=list(ids[train]), holdout=0.0, metrics=False))
            pred = m.transform(x[held])
            scores[a].append(retrieval_auc(pred, y[held], notes[held], groups[held]))
            other[a].append(retrieval_auc(pred, y[held], notes[held], groups[held], False))
    mean = {a: float(np.mean(v)) for a, v in scores.items()}
    side = {a: float(np.mean(v)) for a, v in other.items()}
    best = max(mean, key=mean.get)
    for a in GRID:
        print(f"alpha {a:>12.1f}  held-out AUC note→images {mean[a]:.4f}  (image→notes {side[a]:.4f})"
              + ("  <- best" if a == best else ""))
    with open(out, "w") as fh:
        json.dump({"alpha": best, "criterion": "held-out retrieval AUC, GroupKFold(5) by patient",
                   "n_pairs": len(ids), "n_patients": len(set(groups)),
                   "grid": {str(a): mean[a] for a in GRID},
                   "image_to_notes": {str(a): side[a] for a in GRID}}, fh, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
