"""Figures of route (e) from the score files `stitch classify -o` wrote, and label-free ensembles.

For two classes the written log-odds are s = z_pneumonia − z_normal of the class logits, so
  * AUC ranks by s (what classify reports);
  * accuracy at argmax is s > 0; at the mixture rule it is the posterior of the two-Gaussian
    mixture fitted to the unlabelled s (stitchkit.zeroshot.scorers.mixture_calibration, exactly
    what `--prior mixture` does);
  * an ensemble of heads averages s (= averaging the class logits, what `--head a --head b` does);
  * a head + cosine combination averages the routes' s after standardising each on the
    unlabelled query set (mean 0, std 1): the routes' logit scales differ. No label is used.
Usage: python evaluate.py OUT.json NAME=SCORES.csv[+SCORES.csv...][@z] ...
  (+: average of several files' log-odds; @z: standardise each before averaging)
"""

from __future__ import annotations

import csv
import json
import sys

import numpy as np
from sklearn.metrics import roc_auc_score

from stitchkit.zeroshot.scorers import mixture_calibration


def read(path: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    ids = [r["id"] for r in rows]
    y = np.array([r["label"] != "normal" for r in rows], dtype=int)
    s = np.array([float(r["score:pneumonia"]) for r in rows])
    return ids, y, s


def figures(spec: str) -> dict:
    z = spec.endswith("@z")
    files = spec.removesuffix("@z").split("+")
    ids0, y, _ = read(files[0])
    parts = []
    for f in files:
        ids, yy, s = read(f)
        assert ids == ids0 and (yy == y).all(), f"{f}: other samples than {files[0]}"
        parts.append((s - s.mean()) / s.std() if z else s)
    s = np.mean(parts, axis=0)
    a, b, priors, _ = mixture_calibration(np.stack([np.zeros_like(s), s], axis=1))
    return {"files": files, "standardised": z, "n": int(len(y)), "auc": float(roc_auc_score(y, s)),
            "accuracy_argmax": float(((s > 0) == y).mean()),
            "accuracy_mixture": float(((a * s + b > 0) == y).mean()),
            "mixture_priors": [float(p) for p in priors]}


def main(out: str, specs: list[str]) -> None:
    try:
        with open(out) as fh:
            res = json.load(fh)
    except FileNotFoundError:
        res = {}
    for spec in specs:
        name, files = spec.split("=", 1)
        res[name] = figures(files)
        r = res[name]
        print(f"{name:40s} AUC {r['auc']:.3f}  acc argmax {r['accuracy_argmax']:.3f}  "
              f"mixture {r['accuracy_mixture']:.3f} (priors {r['mixture_priors'][0]:.3f}/{r['mixture_priors'][1]:.3f})")
    with open(out, "w") as fh:
        json.dump(res, fh, indent=1, sort_keys=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
