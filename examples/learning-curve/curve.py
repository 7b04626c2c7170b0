"""The head's learning curve: token head, global head and cosine on N label-derived pairs.

Kermany train images paired with label-derived captions (`stitch demo`'s k-train-lite2.h5 and
k-train-captions-minilm.h5), N = 50 ... 5,216 pairs drawn per seed (stratified by label), scored
on Kermany test (624 images, `--prompts pneumonia`, AUC of pneumonia):

* token head: `stitch head train` on the N pairs (patch and word tokens), default settings
  but a fixed budget of --steps steps in batches of at most 64 (the same compute at every N);
* global head: the same on global vectors;
* cosine: a ridge map fitted on the same N pairs into MiniLM's space (`stitch fit --method
  ridge`), then cosine to the prompts: the route a residual head starts from;
* patch (only with `--routes ...,patch`): the same map applied to every patch token of the
  test images, the token cosines pooled (`stitch classify --scoring patch`, its defaults).

With `--adapt MAP` (`stitch adapt`, e.g. of the Kermany train images) every head and map is
scored a second time through that adaptation map, as the route "... + adaptation".

Writes OUT/learning-curve.csv (a row per N, seed and route; rerunning skips the rows there)
and OUT/learning-curve.json (mean and standard deviation per N and route; `stitch report OUT`
draws it). Usage: python examples/learning-curve/curve.py demo-out -o curve-out
(patch scoring at two sizes: ... --sizes 200,5216 --routes cosine,patch)
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from stitchkit.formats import LEARNING_CURVE
from stitchkit.head import HeadConfig, TrainConfig, train_head
from stitchkit.maps import fit_map
from stitchkit.maps.options import AnchorPlan
from stitchkit.store import EmbeddingStore
from stitchkit.zeroshot.prompts import load_prompts
from stitchkit.zeroshot.scoring import classify_store

ROUTES = ("token head", "global head", "cosine")  # the default routes
ALL_ROUTES = (*ROUTES, "patch")
ADAPTED = " + adaptation"
FIELDS = ["n", "seed", "route", "auc", "accuracy", "seconds"]


def subset(labels: np.ndarray, ids: np.ndarray, n: int, seed: int) -> list[str]:
    """``n`` ids, each label in proportion to its share (all of them at n = len(ids))."""
    if n >= len(ids):
        return [str(i) for i in ids]
    rng = np.random.default_rng([seed, n])
    chosen: list[str] = []
    names, counts = np.unique(labels, return_counts=True)
    for name, count in zip(names, counts, strict=True):
        take = max(1, round(n * count / len(ids)))
        chosen += [str(i) for i in rng.choice(ids[labels == name], take, replace=False)]
    return chosen[:n]


def score(test: Path, **route: object) -> tuple[float, float]:
    result = classify_store(test, load_prompts("pneumonia"), text_model="minilm", bootstrap=0, **route)
    return result.metrics["auc"]["pneumonia"], result.metrics["accuracy"]


def run_route(route: str, demo: Path, work: Path, ids: list[str], seed: int, steps: int,
              adapt: Path | None = None) -> dict[str, tuple[float, float]]:
    """The route trained on ``ids``, scored as it is and (``adapt``) through the adaptation map."""
    images, captions, test = demo / "k-train-lite2.h5", demo / "k-train-captions-minilm.h5", demo / "k-test-lite2.h5"
    if route in ("cosine", "patch"):  # the same map: scored on the global vector, or on every patch token
        fitted = fit_map(images, captions, "ridge", AnchorPlan(anchors=ids, holdout=0.0, metrics=False, seed=seed))
        fitted.save(work / "map.map")
        scored = {"map_path": work / "map.map", "scoring": route}
    else:
        tokens = route == "token head"
        cfg = TrainConfig(head=HeadConfig(), batch_size=64, epochs=1, min_steps=steps,
                          image_tokens=tokens, text_tokens=tokens)
        train_head(images, captions, out=work / "head.st", config=replace(cfg, seed=seed), ids=ids)
        scored = {"head_path": work / "head.st"}
    found = {route: score(test, **scored)}
    if adapt is not None:
        found[route + ADAPTED] = score(test, adapt_path=adapt, **scored)
    return found


def summarise(rows: list[dict[str, str]]) -> dict[str, object]:
    table = []
    for n in sorted({int(r["n"]) for r in rows}):
        entry: dict[str, object] = {"n": n}
        for route in [r + more for r in ALL_ROUTES for more in ("", ADAPTED)]:
            aucs = [float(r["auc"]) for r in rows if int(r["n"]) == n and r["route"] == route]
            if aucs:
                entry[route] = {"auc_mean": float(np.mean(aucs)), "auc_std": float(np.std(aucs)), "seeds": len(aucs)}
        table.append(entry)
    routes = [r + more for r in ALL_ROUTES for more in ("", ADAPTED) if any(r + more in e for e in table)]
    return {"schema": LEARNING_CURVE.schema, "metric": "AUC pneumonia, Kermany test (624)", "routes": routes, "curve": table}


def write_summary(rows: list[dict[str, str]], out: Path, t0: float) -> dict[str, object]:
    summary = summarise(rows)
    summary["minutes_this_run"] = round((time.perf_counter() - t0) / 60, 1)
    summary["training_seconds"] = round(sum(float(r["seconds"]) for r in rows), 1)
    (out / "learning-curve.json").write_text(json.dumps(summary, indent=1))
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("demo", type=Path, help="stitch demo's output folder (the stores)")
    parser.add_argument("-o", "--out", type=Path, default=Path("curve-out"))
    parser.add_argument("--sizes", default="50,100,200,500,1000,2000,5216")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=300, help="training steps of every head")
    parser.add_argument("--adapt", type=Path, default=None, help="also score through this adaptation map")
    parser.add_argument("--routes", default=",".join(ROUTES), help=f"comma-separated, among {', '.join(ALL_ROUTES)}")
    args = parser.parse_args()
    routes = [r.strip() for r in args.routes.split(",") if r.strip()]
    if not routes or set(routes) - set(ALL_ROUTES):
        parser.error(f"--routes takes routes among {', '.join(ALL_ROUTES)}, got {args.routes!r}")
    args.out.mkdir(parents=True, exist_ok=True)
    table = args.out / "learning-curve.csv"
    rows = list(csv.DictReader(table.open())) if table.exists() else []
    done = {(r["n"], r["seed"], r["route"]) for r in rows}
    with EmbeddingStore(args.demo / "k-train-lite2.h5") as store:
        ids, labels = np.asarray(store.ids), np.asarray(store.labels)
    t0 = time.perf_counter()
    for seed in map(int, args.seeds.split(",")):
        for n in map(int, args.sizes.split(",")):
            chosen = subset(labels, ids, n, seed)
            for route in routes:
                if (str(len(chosen)), str(seed), route) in done:
                    continue
                start = time.perf_counter()
                found = run_route(route, args.demo, args.out, chosen, seed, args.steps, args.adapt)
                seconds = f"{time.perf_counter() - start:.1f}"
                new = not table.exists()
                with table.open("a", newline="") as fh:
                    writer = csv.DictWriter(fh, fieldnames=FIELDS)
                    if new:
                        writer.writeheader()
                    for name, (auc, acc) in found.items():
                        row = {"n": len(chosen), "seed": seed, "route": name, "auc": f"{auc:.4f}",
                               "accuracy": f"{acc:.4f}", "seconds": seconds}
                        writer.writerow(row)
                        rows.append({k: str(v) for k, v in row.items()})
                        print(f"N={len(chosen):>5} seed {seed} {name:26} AUC {auc:.4f}  ({seconds} s)", flush=True)
                write_summary(rows, args.out, t0)  # after every row: an interrupted run leaves its figure
    summary = write_summary(rows, args.out, t0)
    for entry in summary["curve"]:
        cells = [f"{r}: {entry[r]['auc_mean']:.3f} ± {entry[r]['auc_std']:.3f}" for r in summary["routes"] if r in entry]
        print(f"N={entry['n']:>5}  " + "   ".join(cells))


if __name__ == "__main__":
    main()
