"""Few anchors plus unpaired samples: held-out quality and fit time, refined vs anchors-only.

For each anchor count and seed it runs ``fit_map`` twice on the same holdout split and anchor
draw: anchors only, and with ``unpaired=N`` (MNN pseudo-anchor refinement, see
stitchkit/maps/refine.py). It prints one row per (count, seed) and the mean per count, with
the time ratio refined / anchors-only (the issue's bound: at most 10× at 5,000 unpaired).

    python benchmarks/refine_unpaired.py lite0.h5 lite2.h5 --counts 10,25,50,100,250 \\
        --unpaired 5000 --method ridge --json refine-kermany.json
    python benchmarks/refine_unpaired.py --smoke   # 32 Kermany images, Lite0 → Lite2, 10 anchors, orthogonal

``--smoke`` without stores embeds the first 16 normal and 16 pneumonia Kermany train images with
Lite0 and Lite2 into a temporary folder. The time ratios are also printed as ``ratio:`` lines.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np
from common import parse_args, print_header, print_ratio, smoke_stores, workdir

KEYS = ("cosine_mean", "top1", "relative_mse", "probe_auc_ratio")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", nargs="?", help="source store (--smoke: embedded here)")
    p.add_argument("target", nargs="?", help="target store, the same samples' ids")
    p.add_argument("--counts", default="10,25,50,100,250")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--unpaired", type=int, default=5000)
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--method", default="ridge")
    p.add_argument("--holdout", type=float, default=0.2)
    p.add_argument("--json", dest="json_out", default=None)
    args = parse_args(p, smoke={"counts": "10", "seeds": "0", "unpaired": 12, "iterations": 1,
                                "method": "orthogonal"})
    if args.source is None or args.target is None:
        if not args.smoke:
            p.error("name the source and target stores (or run --smoke)")
        with workdir(None, prefix="refine-") as tmp:
            stores = smoke_stores(tmp, 32, models=("lite0", "lite2"), tokens=False)
            args.source, args.target = str(stores["lite0"]), str(stores["lite2"])
            return run(args)
    run(args)


def run(args: argparse.Namespace) -> None:
    from stitchkit.maps import AnchorPlan, fit_map

    print_header("refine_unpaired", method=args.method, unpaired=args.unpaired)

    rows = []
    for n in [int(v) for v in args.counts.split(",")]:
        for seed in [int(v) for v in args.seeds.split(",")]:
            row: dict = {"n_anchors": n, "seed": seed}
            for label, unpaired in (("anchors_only", 0), ("refined", args.unpaired)):
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    t0 = time.perf_counter()
                    m = fit_map(args.source, args.target, args.method, plan=AnchorPlan(n_anchors=n, seed=seed, holdout=args.holdout, unpaired=unpaired, refine_iterations=args.iterations, metrics=True))
                    row[f"{label}_s"] = time.perf_counter() - t0
                row[label] = {k: m.metrics_[k] for k in KEYS if k in m.metrics_}
                if unpaired:
                    ref = m.anchors_["refinement"]
                    row["pseudo_pairs"] = ref["pseudo_pairs_per_round"]
                    row["unpaired_used"] = [ref["unpaired_source"], ref["unpaired_target"]]
                    row["warned_worse"] = any("made the held-out" in str(w.message) for w in caught)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\n{'anchors':>7} | " + " | ".join(f"{k} only → refined" for k in KEYS) + " | time ratio")
    for n in sorted({r["n_anchors"] for r in rows}):
        group = [r for r in rows if r["n_anchors"] == n]
        cells = []
        for k in KEYS:
            a = [r["anchors_only"][k] for r in group if k in r["anchors_only"]]
            b = [r["refined"][k] for r in group if k in r["refined"]]
            cells.append(f"{np.mean(a):.3f} → {np.mean(b):.3f}" if a and b else "—")
        ratio = np.mean([r["refined_s"] / r["anchors_only_s"] for r in group])
        print(f"{n:>7} | " + " | ".join(cells) + f" | {ratio:.1f}×")
    for n in sorted({r["n_anchors"] for r in rows}):
        group = [r for r in rows if r["n_anchors"] == n]
        print_ratio(f"refined / anchors-only fit time at {n} anchors",
                    float(np.mean([r["refined_s"] / r["anchors_only_s"] for r in group])),
                    f"mean over {len(group)} seed(s), {args.unpaired:,} unpaired", goal="<= 10 at 5,000 unpaired")
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump({"args": vars(args), "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
