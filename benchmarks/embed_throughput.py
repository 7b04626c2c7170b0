"""Images/s of the embed pipeline against the same model's bare forward pass, in one run.

The baseline decodes every image first, then times only ``model(x)`` over the same batches
with the same thread count; the pipeline is `stitchkit.embed.embed_store` (what `stitch embed`
calls) on the same images, model loading excluded, decoding and writing included.

    python benchmarks/embed_throughput.py --model lite0 --n 1024
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from stitchkit.datasets import data_root  # noqa: E402
from stitchkit.embed import embed_store  # noqa: E402
from stitchkit.encoders import load_encoder  # noqa: E402
from stitchkit.inputs import Inputs, Item, load_image  # noqa: E402


def kermany_items(n: int) -> list[Item]:
    root = data_root() / "kermany-pneumonia-224"
    with open(root / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))[:n]
    return [Item(r["path"], path=root / r["path"], label=r["label"]) for r in rows]


def bare_forward(encoder, items: list[Item], batch_size: int) -> float:
    tensors = [encoder.prepare(load_image(it.path)) for it in items]
    batches = [torch.stack(tensors[i : i + batch_size]) for i in range(0, len(tensors), batch_size)]
    with torch.inference_mode():
        encoder.encode(batches[0])  # warm-up: first call allocates and picks kernels
        t0 = time.perf_counter()
        for batch in batches:
            encoder.encode(batch)
        return len(items) / (time.perf_counter() - t0)


def pipeline(encoder, items: list[Item], batch_size: int, workers: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        embed_store(Inputs(items, "image", "bench", ["label"]), encoder, Path(tmp) / "b.h5",
                    batch_size=batch_size, workers=workers)
        return len(items) / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lite0")
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    items = kermany_items(args.n)
    encoder = load_encoder(args.model)
    print(f"{args.model}, {len(items)} Kermany images, batch {args.batch_size}, "
          f"{torch.get_num_threads()} torch threads, {args.workers} decode worker(s)")
    bare, piped = [], []
    for _ in range(args.repeats):  # interleaved, so drift on a shared machine hits both alike
        bare.append(bare_forward(encoder, items, args.batch_size))
        piped.append(pipeline(encoder, items, args.batch_size, args.workers))
    print(f"bare forward (pre-decoded tensors): {max(bare):7.1f} img/s  (runs: {', '.join(f'{b:.1f}' for b in bare)})")
    print(f"stitch embed pipeline             : {max(piped):7.1f} img/s  (runs: {', '.join(f'{p:.1f}' for p in piped)})")
    print(f"ratio pipeline / bare             : {max(piped) / max(bare):7.3f}  (goal >= 0.95)")


if __name__ == "__main__":
    main()
