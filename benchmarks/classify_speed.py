"""Throughput of `stitch classify` (map + head) against the same arithmetic as bare products.

Builds, under --workdir (never the repository), a store of N synthetic 1280-d embeddings in a
"source" space, an affine map source → "image" space (fitted on 2,000 synthetic anchors), a
head with the default shape (image 1280-d, text 384-d) and prompt stores for 2 and 14 classes.
Then it times

* ``stitch classify`` as a user runs it (a subprocess, HDF5 in, CSV scores out), and
* the bare arithmetic on the same arrays already in memory: one matrix product for the map
  and the head's forward pass on blocks, nothing else (no I/O, no checks, no output),

and records the peak resident memory of the classify process at several N, which should stay
flat (the store is streamed in blocks; scores are only kept in memory where labels exist).

    .venv/bin/python benchmarks/classify_speed.py --n 1000000 --workdir /tmp/bench
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DIM, TEXT_DIM = 1280, 384
CXR14 = ["atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia",
         "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis", "pleural_thickening", "hernia"]


def build(work: Path, n: int, seed: int = 0) -> dict[str, Path]:
    import torch

    from stitchkit.head import Head, HeadConfig
    from stitchkit.head.model import CrossAttentionHead
    from stitchkit.maps import fit_map
    from stitchkit.store import StoreWriter, write_store
    from stitchkit.store.store import base_attrs

    work.mkdir(parents=True, exist_ok=True)
    src = {"model_spec": "bench-source", "weights_sha256": "s"}
    img = {"model_spec": "bench-image", "weights_sha256": "i"}
    txt = {"model_spec": "bench-text", "weights_sha256": "t"}
    rng = np.random.default_rng(seed)
    paths: dict[str, Path] = {}
    query = work / f"query-{n}.h5"
    if not query.exists():
        with StoreWriter(query, dim=DIM, attrs=base_attrs(modality="image", **src)) as w:
            for a in range(0, n, 65536):
                b = min(a + 65536, n)
                w.append([f"q{i}" for i in range(a, b)], rng.normal(size=(b - a, DIM)).astype(np.float32))
    paths["query"] = query
    map_path = work / "bench.map"
    if not map_path.exists():
        x = rng.normal(size=(2000, DIM)).astype(np.float32)
        y = x @ rng.normal(size=(DIM, DIM)).astype(np.float32) / np.sqrt(DIM)
        ids = [f"a{i}" for i in range(2000)]
        write_store(work / "anchors-src.h5", ids, x, attrs=src)
        write_store(work / "anchors-img.h5", ids, y, attrs=img)
        fit_map(work / "anchors-src.h5", work / "anchors-img.h5", method="affine", metrics=False).save(map_path)
    paths["map"] = map_path
    head_path = work / "bench-head.st"
    if not head_path.exists():
        torch.manual_seed(seed)
        module = CrossAttentionHead(DIM, TEXT_DIM, HeadConfig())
        Head(module, image_space={**img, "dim": DIM}, text_space={**txt, "dim": TEXT_DIM},
             meta={"image_tokens": False, "text_tokens": False}).save(head_path)
    paths["head"] = head_path
    for k, classes in ((2, ["normal", "pneumonia"]), (14, CXR14)):
        texts = [f"There is {c.replace('_', ' ')}." for c in classes]
        p = work / f"prompts-{k}.h5"
        if not p.exists():
            write_store(p, [f"p{i}" for i in range(k)], rng.normal(size=(k, TEXT_DIM)).astype(np.float32),
                        attrs=txt, columns={"texts": texts})
        paths[f"prompts{k}"] = p
    return paths


def run_cli(paths: dict[str, Path], k: int, work: Path, classes: list[str]) -> dict[str, float]:
    out = work / f"scores-{k}.csv"
    # Peak memory from VmHWM: getrusage's ru_maxrss survives execve, so it would report the
    # parent's size at fork time (this script holds the bare route's arrays).
    cmd = [sys.executable, "-c",
           "import sys; sys.argv = ['stitch'] + sys.argv[1:];"
           "from stitchkit.cli.main import cli\n"
           "try:\n    cli.main(standalone_mode=False)\n"
           "finally:\n    hwm = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
           "    print('MAXRSS_KB', hwm, file=sys.stderr)",
           "classify", str(paths["query"]), "--classes", ",".join(classes),
           "--prompt-store", str(paths[f"prompts{k}"]), "--map", str(paths["map"]),
           "--head", str(paths["head"]), "-o", str(out), "--json"]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"classify failed: {done.stderr.strip().splitlines()[-1:]}")
    result = json.loads(done.stdout)
    rss = int(next(line.split()[1] for line in done.stderr.splitlines() if line.startswith("MAXRSS_KB")))
    out.unlink(missing_ok=True)
    return {"wall_s": wall, "inner_s": result["seconds"], "samples_per_s_wall": result["n"] / wall,
            "samples_per_s_inner": result["samples_per_s"], "peak_rss_mb": rss / 1024}


def run_bare(paths: dict[str, Path], k: int, n: int, block: int = 8192) -> dict[str, float]:
    """The same products on in-memory arrays: X·A + b, then the head's forward on blocks."""
    import torch

    from stitchkit.head import Head
    from stitchkit.maps import load_map
    from stitchkit.store import EmbeddingStore

    m = load_map(paths["map"])
    head = Head.load(paths["head"])
    with EmbeddingStore(paths[f"prompts{k}"]) as ps:
        text = torch.from_numpy(ps.read())
    with EmbeddingStore(paths["query"]) as qs:
        x = qs.read()  # in memory: the bare route pays no I/O
    probe = np.eye(DIM, dtype=np.float32)
    zero = m.transform(np.zeros((1, DIM), dtype=np.float32))
    a = torch.from_numpy(m.transform(probe) - zero)  # the map as one affine product
    b = torch.from_numpy(zero)
    xt = torch.from_numpy(x)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for s in range(0, n, block):
            y = torch.addmm(b, xt[s:s + block], a)
            head.module_(y, text)
    sec = time.perf_counter() - t0
    return {"seconds": sec, "samples_per_s": n / sec}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--classes", type=int, nargs="+", default=[2, 14])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/stitchkit-bench"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    rows = []
    for n in args.n:
        paths = build(args.workdir, n)
        for k in args.classes:
            classes = ["normal", "pneumonia"] if k == 2 else CXR14
            cli = run_cli(paths, k, args.workdir, classes)
            bare = run_bare(paths, k, n)
            row = {"n": n, "classes": k, **{f"cli_{key}": v for key, v in cli.items()},
                   "bare_samples_per_s": bare["samples_per_s"],
                   "ratio_inner": cli["samples_per_s_inner"] / bare["samples_per_s"],
                   "ratio_wall": cli["samples_per_s_wall"] / bare["samples_per_s"]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("| N | classes | stitch classify samples/s (wall) | bare products samples/s | ratio | peak RSS MB |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['n']:,} | {r['classes']} | {r['cli_samples_per_s_wall']:,.0f} | "
              f"{r['bare_samples_per_s']:,.0f} | {r['ratio_wall']:.2f} | {r['cli_peak_rss_mb']:,.0f} |")


if __name__ == "__main__":
    main()
