"""Ridge's alpha near anchors ≈ dimensions: the default rule against GCV, 3 folds and the optimum.

For each anchor count, on two stores of the same samples (e.g. IU reports embedded with MiniLM
and mpnet), it fits with every default of `stitch fit` (``fit_map``: 20 % of the anchors held
out for the report, the map refitted on all of them) and scores the written map on a fixed
evaluation set the fit never saw: retrieval top-1 (is a mapped sample's nearest target, by
cosine, its own) and relative MSE. Beside it, on the same anchors: alpha by GCV, by 3 folds,
the default without the spread rescale, and the alpha with the least evaluation MSE (the
held-out optimum the rules aim at).

Evaluation samples have distinct texts (``--text-from``: a JSONL manifest with id and text),
and no anchor repeats an evaluation text: identical reports have identical embeddings, so
among duplicates "its own" would be decided by row order, not by the map.

    python examples/iu-text-stitching/alpha_sweep.py iu-out/source.h5 iu-out/target.h5 \
        --text-from iu-out/reports.jsonl --counts 300,400,500,600,700
"""

from __future__ import annotations

import argparse
import json
import warnings

import numpy as np


def top1(P: np.ndarray, T: np.ndarray) -> float:
    P = P / np.linalg.norm(P, axis=1, keepdims=True)
    T = T / np.linalg.norm(T, axis=1, keepdims=True)
    return float((np.argmax(P @ T.T, axis=1) == np.arange(len(P))).mean())


def relative_mse(P: np.ndarray, T: np.ndarray) -> float:
    return float(np.square(P - T).sum() / np.square(T - T.mean(0)).sum())


def split(ids: np.ndarray, texts: dict[str, str] | None, n_eval: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(evaluation rows with distinct texts, anchor pool rows sharing no evaluation text)."""
    order = np.random.default_rng(seed).permutation(len(ids))
    if texts is None:
        return np.sort(order[:n_eval]), order[n_eval:]
    seen: set[str] = set()
    evaluation = []
    for r in order:
        t = texts[ids[r]]
        if t not in seen:
            seen.add(t)
            evaluation.append(r)
        if len(evaluation) == n_eval:
            break
    pool = [r for r in order if texts[ids[r]] not in seen]
    return np.sort(np.array(evaluation)), np.array(pool)


def main() -> None:
    from stitchkit.maps import AnchorPlan, RidgeMap, fit_map
    from stitchkit.maps import functional as F
    from stitchkit.store import EmbeddingStore

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("source")
    ap.add_argument("target")
    ap.add_argument("--counts", default="300,400,500,600,700")
    ap.add_argument("--n-eval", type=int, default=1000)
    ap.add_argument("--text-from", default=None, help="JSONL manifest (id, text): evaluation texts distinct")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    warnings.simplefilter("ignore")

    with EmbeddingStore(args.source) as s, EmbeddingStore(args.target) as t:
        ids = np.asarray(s.ids).astype(str)
        X = s.read(np.arange(len(s)))
        Y = t.read(t.index_of(list(ids)))
    texts = None
    if args.text_from:
        texts = {r["id"]: r["text"] for r in map(json.loads, open(args.text_from))}
    evaluation, pool = split(ids, texts, args.n_eval, args.seed)
    Xe, Ye = X[evaluation], Y[evaluation]
    rows = []
    for n in (int(c) for c in args.counts.split(",")):
        a = pool[:n]
        m = fit_map(args.source, args.target, plan=AnchorPlan(anchors=list(ids[a])))  # every default
        row = {"n_anchors": n, "alpha_selection": m.alpha_selection_, "alpha_relative": m.alpha_relative_,
               "top1": top1(m.transform(Xe), Ye), "relative_mse": relative_mse(m.transform(Xe), Ye)}
        stats = F.SuffStats.from_arrays(X[a], Y[a], exact=True)
        gcv = RidgeMap().fit_stats(stats)  # one set of statistics: GCV whatever the count
        row["gcv_alpha_relative"], row["gcv_top1"] = gcv.alpha_relative_, top1(gcv.transform(Xe), Ye)
        row["gcv_relative_mse"] = relative_mse(gcv.transform(Xe), Ye)
        three = RidgeMap(cv=3).fit(X[a], Y[a], ids=list(ids[a]))
        row["cv3_alpha_relative"], row["cv3_top1"] = three.alpha_relative_, top1(three.transform(Xe), Ye)
        plain = RidgeMap(rescale=False).fit(X[a], Y[a], ids=list(ids[a]))
        row["no_rescale_top1"] = top1(plain.transform(Xe), Ye)
        curve = [relative_mse(RidgeMap(alpha=rel * F.alpha_scale(
            F.transform_stats(stats, F.preprocessing_from_stats(stats, center=True, standardize=True)),
            bias=True), rescale=False).fit(X[a], Y[a]).transform(Xe), Ye) for rel in F.ALPHA_GRID]
        best = int(np.argmin(curve))
        row["optimum_alpha_relative"], row["optimum_relative_mse"] = F.ALPHA_GRID[best], curve[best]
        rows.append(row)
        if not args.json:
            print(f"n={n:5d} default {row['alpha_selection']:>6} α {row['alpha_relative']:.3g} "
                  f"top-1 {row['top1']:.3f} (no rescale {row['no_rescale_top1']:.3f}) rel.MSE {row['relative_mse']:.3f} | "
                  f"GCV α {row['gcv_alpha_relative']:.3g} top-1 {row['gcv_top1']:.3f} rel.MSE {row['gcv_relative_mse']:.3f} | "
                  f"3-fold α {row['cv3_alpha_relative']:.3g} top-1 {row['cv3_top1']:.3f} | "
                  f"optimum α {row['optimum_alpha_relative']:.3g} rel.MSE {row['optimum_relative_mse']:.3f}",
                  flush=True)
    if args.json:
        print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
