"""One epoch of the token head on all 5,216 Kermany pairs: today's head against the head before
issue 22 (no cosine residual, PyTorch's initialisation, no dropout), same stores, same loop.

Each epoch runs in a child process of its own (its peak RSS is its own), alternating the two
heads --repeats times; prints seconds per epoch, peak RSS and ``ratio: today / before``.

    python benchmarks/head_epoch.py demo-out          # stitch demo's k-train-lite2.h5 + captions
    python benchmarks/head_epoch.py --smoke           # 32 Kermany images embedded here, once each

``--smoke`` without a folder embeds the first 16 normal and 16 pneumonia Kermany train images
with Lite2 (patch tokens) and their label captions with MiniLM, as the demo does, into a
temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from common import (
    child_json,
    parse_args,
    peak_rss_mb,
    print_header,
    print_ratio,
    set_threads,
    smoke_stores,
    workdir,
)

HEADS = {
    "today": {},
    "before": {"residual": False, "init": "torch", "dropout": 0.0},
}


def worker(demo: Path, name: str, batch_size: int, threads: int) -> None:
    from stitchkit.head import ComputeOptions, HeadConfig, TrainConfig
    from stitchkit.head.train import Trainer, load_pairs

    set_threads(threads)
    cfg = TrainConfig(head=HeadConfig(**HEADS[name]), batch_size=batch_size, epochs=1, min_steps=0,
                      token_dropout=0.5, token_coarsen=1.0, seed=0)  # the demo's Kermany token head
    pairs = load_pairs([(demo / "k-train-lite2.h5", demo / "k-train-captions-minilm.h5")], cfg)
    out = Path(tempfile.gettempdir()) / f"head-epoch-{name}-{os.getpid()}.head"
    trainer = Trainer(pairs, cfg, ComputeOptions(), out)
    t0 = time.perf_counter()
    trainer.model.train()
    trainer.train_epoch(None)
    seconds = time.perf_counter() - t0
    trainer.ckpt.unlink(missing_ok=True)
    print(json.dumps({"head": name, "epoch_s": seconds, "steps": trainer.steps_per_epoch,
                      "peak_rss_mb": peak_rss_mb()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("demo", type=Path, nargs="?", help="a finished `stitch demo` folder")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parse_args(parser, smoke={"batch_size": 8, "repeats": 1})
    if args.worker:
        worker(args.demo, args.worker, args.batch_size, args.threads)
        return
    if args.demo is None and not args.smoke:
        parser.error("name a finished `stitch demo` folder (or run --smoke)")
    with workdir(None, prefix="head-epoch-") as tmp:
        demo = args.demo or smoke_stores(tmp, 32, captions=True)["lite2"].parent
        print_header("head_epoch", pairs_from=demo, batch=args.batch_size, torch_threads=args.threads)
        runs = []
        for _ in range(args.repeats):
            for name in HEADS:
                runs.append(child_json(__file__, str(demo), "--worker", name, "--batch-size", str(args.batch_size),
                                       "--threads", str(args.threads)))
                print(runs[-1], flush=True)
    for name in HEADS:
        mine = [r for r in runs if r["head"] == name]
        print(f"{name:7} epoch {min(r['epoch_s'] for r in mine):6.1f} s (best of {len(mine)}), "
              f"peak RSS {max(r['peak_rss_mb'] for r in mine):,.0f} MB")
    best = {n: min(r["epoch_s"] for r in runs if r["head"] == n) for n in HEADS}
    print_ratio("today / before", best["today"] / best["before"], f"time per epoch, best of {args.repeats}")


if __name__ == "__main__":
    sys.exit(main())
