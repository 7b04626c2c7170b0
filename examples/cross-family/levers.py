"""The levers tried on a cross-family pair at a fixed anchor count, with the fit's own protocol.

Each row fits one map on the same anchors as `stitch fit SOURCE TARGET --n-anchors N --seed S`
(20 % held out by the same seeded split, N anchors drawn from the rest) and measures it as the
fit does (held-out cosine, retrieval top-1, and the probe AUC ratio: a logistic regression
trained on native TARGET embeddings of the fit pool, applied to mapped and native held-out
rows). Seeds 0..S-1; the table shows seed 0 and the mean over seeds.

    python examples/cross-family/levers.py k-train-xception.h5 k-train-lite2.h5 --n-anchors 500 --seeds 5
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np

from stitchkit.maps import make_map
from stitchkit.maps.anchors import select, split_holdout
from stitchkit.maps.metrics import Probe, alignment_metrics, probe_metrics
from stitchkit.store.store import EmbeddingStore

#: (lever, method, map parameters, anchor strategy); alphas are relative to the mean
#: eigenvalue of the standardised anchors' Gram matrix (the number stitch fit prints).
LEVERS = [
    ("ridge, defaults (alpha by GCV)", "ridge", {}, "random"),
    *[(f"ridge, alpha {a:g} (relative)", "ridge", {"alpha_relative": a}, "random") for a in (0.3, 1, 3, 10, 30)],
    ("ridge, alpha by 5-fold CV (--cv 5)", "ridge", {"cv": 5}, "random"),
    ("ridge, --no-standardize", "ridge", {"standardize": False}, "random"),
    ("ridge, --l2", "ridge", {"l2": True}, "random"),
    ("ridge, --no-rescale", "ridge", {"rescale": False}, "random"),
    ("ridge, --strategy stratified", "ridge", {}, "stratified"),
    ("ridge, --strategy farthest", "ridge", {}, "farthest"),
    ("ridge, --strategy kmeans", "ridge", {}, "kmeans"),
    ("affine, defaults (--alpha stable)", "affine", {}, "random"),
    ("affine, --alpha 0 (exact least squares)", "affine", {"alpha": 0.0}, "random"),
    ("orthogonal", "orthogonal", {}, "random"),
]


def read_pair(source: str, target: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    with EmbeddingStore(source) as a, EmbeddingStore(target) as b:
        ids = np.intersect1d(a.ids.astype(str), b.ids.astype(str))
        X, Y = a.read(a.index_of(ids)).astype(np.float64), b.read(b.index_of(ids)).astype(np.float64)
        labels = b.labels[b.index_of(ids)].astype(str)
    return ids, X, Y, labels


def measure(pair, method: str, params: dict, strategy: str, n: int, seed: int) -> dict[str, float]:
    ids, X, Y, labels = pair
    pool, held = split_holdout(ids, 0.2, seed)
    row = {k: i for i, k in enumerate(ids)}
    fit_rows = np.array([row[i] for i in pool])
    held_rows = np.array([row[i] for i in held])
    embeddings = X[fit_rows] if strategy in ("farthest", "kmeans") else None
    anchors = select(pool, n, strategy=strategy, seed=seed, labels=labels[fit_rows], embeddings=embeddings)
    a = np.array([row[i] for i in anchors])
    params = dict(params)
    if "alpha_relative" in params:  # standardised anchors: mean eigenvalue of the Gram matrix = n − 1
        params["alpha"] = params.pop("alpha_relative") * (len(a) - 1)
    if method != "orthogonal":
        params.setdefault("random_state", seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = make_map(method, **params).fit(X[a], Y[a], ids=list(anchors))
    mapped = m.transform(X[held_rows])
    out = alignment_metrics(X[held_rows], mapped, Y[held_rows])
    probe = Probe(Y[fit_rows], labels[fit_rows], seed=seed)
    out.update(probe_metrics(probe, mapped, Y[held_rows], labels[held_rows]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source")
    ap.add_argument("target")
    ap.add_argument("--n-anchors", type=int, default=500)
    ap.add_argument("--seeds", type=int, default=5)
    args = ap.parse_args()
    pair = read_pair(args.source, args.target)
    print(f"{args.source} -> {args.target}: {len(pair[0])} shared ids, {args.n_anchors} anchors, "
          f"seeds 0..{args.seeds - 1}")
    print("| lever | probe AUC ratio, seed 0 | mean over seeds | cosine, seed 0 | top-1, seed 0 |")
    print("|---|---|---|---|---|")
    for name, method, params, strategy in LEVERS:
        runs = [measure(pair, method, params, strategy, args.n_anchors, s) for s in range(args.seeds)]
        ratios = [r["probe_auc_ratio"] for r in runs]
        print(f"| {name} | {ratios[0]:.3f} | {np.mean(ratios):.3f} | {runs[0]['cosine_mean']:.3f} | "
              f"{runs[0]['top1']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
