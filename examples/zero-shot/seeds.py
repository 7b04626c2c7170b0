"""Route (e) over seeds: how much a zero-shot head moves with its seed.

Heads trained on `stitch demo`'s covid-notes sentences alone, and with NIH's findings sentences
of the training patients (`--pairs`), default `stitch head train` settings, seeds 0..4; each
scored on Kermany test (624 images, `--prompts pneumonia`, `--prior mixture`), beside the
cosine route of the same pairs (deterministic: no seed). Writes OUT/seeds.json with every run
and the mean and standard deviation per route.
Usage: python examples/zero-shot/seeds.py demo-out -o seeds-out [--seeds 0,1,2,3,4]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from stitchkit.head import TrainConfig, train_head
from stitchkit.zeroshot.prompts import load_prompts
from stitchkit.zeroshot.scoring import classify_store


def score(demo: Path, **route: object) -> dict[str, float]:
    result = classify_store(demo / "k-test-lite2.h5", load_prompts("pneumonia"), text_model="minilm",
                            bootstrap=0, prior="mixture", **route)
    return {"auc": result.metrics["auc"]["pneumonia"], "accuracy": result.metrics["accuracy"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("demo", type=Path)
    parser.add_argument("-o", "--out", type=Path, default=Path("seeds-out"))
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--pairs", default="covid,mixed", help="covid, mixed or both")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    d = args.demo
    sources = {"covid": [], "mixed": [(d / "nih-lite2.h5", d / "nih-sentences-minilm.h5")]}
    runs = json.loads((args.out / "seeds.json").read_text())["runs"] if (args.out / "seeds.json").exists() else []
    done = {(r["pairs"], r["head"], r["seed"]) for r in runs}
    cosine = {f"{name} cosine": score(d, map_path=d / f"{name}-lite2-to-minilm.map", scoring="cosine")
              for name in args.pairs.split(",")}
    for pairs in args.pairs.split(","):
        for seed in map(int, args.seeds.split(",")):
            for head, tokens in (("token", True), ("global", False)):
                if (pairs, head, seed) in done:
                    continue
                out = args.out / f"{pairs}-{head}-{seed}.head"
                train_head(d / "covid-lite2.h5", d / "covid-sentences-minilm.h5", out=out,
                           more_pairs=sources[pairs],
                           config=TrainConfig(image_tokens=tokens, text_tokens=tokens, seed=seed))
                runs.append({"pairs": pairs, "head": head, "seed": seed, **score(d, head_path=out)})
                print(runs[-1], flush=True)
                summary = dict(cosine)
                for key in {(r["pairs"], r["head"]) for r in runs}:
                    aucs = [r["auc"] for r in runs if (r["pairs"], r["head"]) == key]
                    summary[f"{key[0]} {key[1]} head"] = {"auc_mean": float(np.mean(aucs)),
                                                          "auc_std": float(np.std(aucs)), "seeds": len(aucs)}
                (args.out / "seeds.json").write_text(json.dumps({"runs": runs, "summary": summary}, indent=1))
    print(json.dumps(json.loads((args.out / "seeds.json").read_text())["summary"], indent=1))


if __name__ == "__main__":
    main()
