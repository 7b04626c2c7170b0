"""One epoch of the token head on all 5,216 Kermany pairs: today's head against the head before
issue 22 (no cosine residual, PyTorch's initialisation, no dropout), same stores, same loop.

Each epoch runs in a child process of its own (its peak RSS is its own), alternating the two
heads --repeats times; prints seconds per epoch, peak RSS and the ratio today / before.

    python benchmarks/head_epoch.py demo-out          # stitch demo's k-train-lite2.h5 + captions
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

HEADS = {
    "today": {},
    "before": {"residual": False, "init": "torch", "dropout": 0.0},
}


def worker(demo: Path, name: str, batch_size: int, threads: int) -> None:
    import torch

    from stitchkit.head import HeadConfig, RunOptions, TrainConfig
    from stitchkit.head.train import Trainer, load_pairs

    torch.set_num_threads(threads)
    cfg = TrainConfig(head=HeadConfig(**HEADS[name]), batch_size=batch_size, epochs=1, min_steps=0,
                      token_dropout=0.5, token_coarsen=1.0)  # the demo's Kermany token head
    pairs = load_pairs([(demo / "k-train-lite2.h5", demo / "k-train-captions-minilm.h5")], cfg, seed=0)
    out = Path(f"/tmp/head-epoch-{name}.head")
    trainer = Trainer(pairs, cfg, 0, RunOptions(), out)
    t0 = time.perf_counter()
    trainer.model.train()
    trainer.train_epoch(None)
    seconds = time.perf_counter() - t0
    trainer.ckpt.unlink(missing_ok=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"head": name, "epoch_s": seconds, "steps": trainer.steps_per_epoch, "peak_rss_mb": rss}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("demo", type=Path)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.demo, args.worker, args.batch_size, args.threads)
        return
    runs = []
    for _ in range(args.repeats):
        for name in HEADS:
            done = subprocess.run([sys.executable, __file__, str(args.demo), "--worker", name, "--batch-size",
                                   str(args.batch_size), "--threads", str(args.threads)],
                                  capture_output=True, text=True, check=True)
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(runs[-1], flush=True)
    for name in HEADS:
        mine = [r for r in runs if r["head"] == name]
        print(f"{name:7} epoch {min(r['epoch_s'] for r in mine):6.1f} s (best of {len(mine)}), "
              f"peak RSS {max(r['peak_rss_mb'] for r in mine):,.0f} MB")
    best = {n: min(r["epoch_s"] for r in runs if r["head"] == n) for n in HEADS}
    print(f"today / before: {best['today'] / best['before']:.3f} (time per epoch, best of {args.repeats})")


if __name__ == "__main__":
    main()
