"""`stitch classify` on labelled stores against the same arithmetic as bare float32 products.

Builds, under --workdir (never the repository), a labelled store of N synthetic 1280-d
embeddings in a "source" space (labels: one of the 14 ChestX-ray14 findings per row, or
normal / pneumonia for 2 classes), an affine map source → "image" space (fitted on 2,000
synthetic anchors), a head with the default shape (image 1280-d, text 384-d) and prompt stores
for the head (384-d text space) and for cosine scoring (in the image space itself). Then, per
N, class count and scoring, in one run:

* ``stitch classify`` as a user runs it (a subprocess; HDF5 in, HDF5 scores out, metrics and
  1,000 bootstrap resamples included, since the store is labelled); its start-up is the same
  command on a 1,000-row store, and the marginal time is the difference;
* the bare arithmetic on the same file: h5py reads of the same 8,192-row blocks, the map as one
  float32 product plus bias (numpy), then cosine (normalise, product with the class vectors) or
  the head's forward pass (torch); no checks, no metrics, no output;

and the peak resident memory of the classify process (VmHWM), which should stay flat in N.
Prints ``ratio: classify marginal / bare`` per row (wall and CPU) and a markdown table.

    .venv/bin/python benchmarks/classify_speed.py --n 100000 1000000 --workdir /tmp/bench
    .venv/bin/python benchmarks/classify_speed.py --smoke   # 2,000 rows, 2 classes, cosine (seconds)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from common import (
    BENCHMARKS,
    parse_args,
    print_header,
    print_ratio,
    set_threads,
    timed_cpu,
    workdir,
)

DIM, TEXT_DIM = 1280, 384
CXR14 = ["atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia",
         "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis", "pleural_thickening", "hernia"]
SRC = {"model_spec": "bench-source", "weights_sha256": "s"}
IMG = {"model_spec": "bench-image", "weights_sha256": "i"}
TXT = {"model_spec": "bench-text", "weights_sha256": "t"}
BLOCK = 8192  # what `stitch classify --chunk-size` defaults to
# `stitch classify` as the console script runs it, then this process's peak memory on stderr
# (VmHWM, common.peak_rss_mb: getrusage's ru_maxrss survives execve, so it would report this
# script's size at fork time, and this script holds arrays of its own).
CLASSIFY = ("import sys; sys.path.insert(0, {benchmarks!r}); from common import peak_rss_mb\n"
            "sys.argv = ['stitch'] + sys.argv[1:]\n"
            "from stitchkit.cli.main import cli\n"
            "try:\n    cli.main(standalone_mode=False)\n"
            "finally:\n    print('PEAK_RSS_MB', peak_rss_mb(), file=sys.stderr)")


def class_names(k: int) -> list[str]:
    return ["normal", "pneumonia"] if k == 2 else CXR14[:k]


def build_query(work: Path, n: int, k: int, seed: int = 0) -> Path:
    from stitchkit.store import StoreWriter
    from stitchkit.store.store import base_attrs

    query = work / f"query-{n}-{k}.h5"
    if query.exists():
        return query
    rng = np.random.default_rng(seed)
    names = np.array(class_names(k), dtype=object)
    with StoreWriter(query, dim=DIM, attrs=base_attrs(modality="image", **SRC), columns=["labels"],
                     expected_rows=n) as w:
        for a in range(0, n, 65536):
            b = min(a + 65536, n)
            w.append([f"q{i}" for i in range(a, b)], rng.normal(size=(b - a, DIM)).astype(np.float32),
                     columns={"labels": list(names[rng.integers(0, k, b - a)])})
    return query


def build_shared(work: Path, seed: int = 0) -> dict[str, Path]:
    import torch

    from stitchkit.head import Head, HeadConfig
    from stitchkit.head.model import CrossAttentionHead
    from stitchkit.maps import AnchorPlan, fit_map
    from stitchkit.store import write_store

    work.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed + 1)
    paths: dict[str, Path] = {"map": work / "bench.map", "head": work / "bench-head.st"}
    if not paths["map"].exists():
        x = rng.normal(size=(2000, DIM)).astype(np.float32)
        y = x @ rng.normal(size=(DIM, DIM)).astype(np.float32) / np.sqrt(DIM)
        ids = [f"a{i}" for i in range(2000)]
        write_store(work / "anchors-src.h5", ids, x, attrs=SRC)
        write_store(work / "anchors-img.h5", ids, y, attrs=IMG)
        fit_map(work / "anchors-src.h5", work / "anchors-img.h5", "affine", plan=AnchorPlan(metrics=False)).save(paths["map"])
    if not paths["head"].exists():
        torch.manual_seed(seed)
        module = CrossAttentionHead(DIM, TEXT_DIM, HeadConfig())
        Head(module, image_space={**IMG, "dim": DIM}, text_space={**TXT, "dim": TEXT_DIM},
             meta={"image_tokens": False, "text_tokens": False}).save(paths["head"])
    for k in (2, 14):
        texts = [f"There is {c.replace('_', ' ')}." for c in class_names(k)]
        for scoring, space, dim in (("head", TXT, TEXT_DIM), ("cosine", IMG, DIM)):
            p = work / f"prompts-{scoring}-{k}.h5"
            if not p.exists():
                write_store(p, [f"p{i}" for i in range(k)], rng.normal(size=(k, dim)).astype(np.float32),
                            attrs=space, columns={"texts": texts})
            paths[f"prompts-{scoring}-{k}"] = p
    return paths


def run_cli(query: Path, paths: dict[str, Path], k: int, scoring: str, work: Path) -> dict[str, float]:
    out = work / f"scores-{k}-{scoring}.h5"
    cmd = [sys.executable, "-c", CLASSIFY.format(benchmarks=str(BENCHMARKS)),
           "classify", str(query), "--classes", ",".join(class_names(k)),
           "--prompt-store", str(paths[f"prompts-{scoring}-{k}"]), "--map", str(paths["map"]),
           "-o", str(out), "--json", "--bootstrap", "1000"]
    cmd += ["--head", str(paths["head"])] if scoring == "head" else ["--scoring", "cosine"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if done.returncode != 0:
        raise SystemExit(f"classify failed: {done.stderr.strip().splitlines()[-3:]}")
    result = json.loads(done.stdout)
    if result.get("metrics") is None or "accuracy_ci_low" not in result["metrics"]:
        raise SystemExit("classify gave no metrics with intervals: the store should be labelled")
    rss = float(next(line.split()[1] for line in done.stderr.splitlines() if line.startswith("PEAK_RSS_MB")))
    out.unlink(missing_ok=True)
    return {"wall_s": wall, "cpu_s": cpu, "loop_s": result["seconds"], "n": result["n"], "peak_rss_mb": rss,
            "auc_macro": result["metrics"]["auc_macro"], "ci_method": result["metrics"].get("method_ci")}


def run_bare(query: Path, paths: dict[str, Path], k: int, scoring: str) -> tuple[float, float]:
    """(wall, CPU) seconds for chunked read + map + (normalise + product | head forward)."""
    import h5py
    import torch

    from stitchkit.head import Head
    from stitchkit.maps import load_map
    from stitchkit.store import EmbeddingStore

    m = load_map(paths["map"])
    zero = m.transform(np.zeros((1, DIM), dtype=np.float32))
    a = (m.transform(np.eye(DIM, dtype=np.float32)) - zero).astype(np.float32)  # the map: x·A + c
    c = zero[0].astype(np.float32)
    with EmbeddingStore(paths[f"prompts-{scoring}-{k}"]) as ps:
        text = ps.read()
    head = Head.load(paths["head"]) if scoring == "head" else None
    text_t = torch.from_numpy(text)
    unit = text / np.linalg.norm(text, axis=1, keepdims=True)

    def products() -> None:
        with h5py.File(query, "r") as h5, torch.inference_mode():
            emb = h5["embeddings"]
            n = emb.shape[0]
            for s in range(0, n, BLOCK):
                x = emb[s:s + BLOCK]
                y = x @ a
                y += c
                if head is None:
                    y /= np.linalg.norm(y, axis=1, keepdims=True)
                    y @ unit.T
                else:
                    head.module_(torch.from_numpy(y), text_t)

    wall, cpu, _ = timed_cpu(products)
    return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--classes", type=int, nargs="+", default=[14])
    ap.add_argument("--scoring", nargs="+", default=["cosine", "head"], choices=["cosine", "head"])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/stitchkit-bench"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="keep the query stores (they are N × 5 kB)")
    args = parse_args(ap, smoke={"n": [2000], "classes": [2], "scoring": ["cosine"], "workdir": None})
    set_threads(args.threads)
    print_header("classify_speed", torch_threads=args.threads)
    with workdir(args.workdir, prefix="classify-bench-") as folder:  # --smoke: a temporary one
        rows = run(args, folder)
    print("| N | classes | scoring | classify marginal s (wall − start-up) | bare products s | "
          "ratio (wall) | ratio (CPU s) | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['n']:,} | {r['classes']} | {r['scoring']} | {r['marginal_s']:.1f} | {r['bare_s']:.1f} | "
              f"{r['ratio']:.2f} | {r['ratio_cpu']:.2f} | {r['peak_rss_mb']:,.0f} |")


def run(args: argparse.Namespace, work: Path) -> list[dict]:
    paths = build_shared(work)
    rows = []
    for k in args.classes:
        tiny = build_query(work, 1000, k)
        for scoring, n in ((s, n) for s in args.scoring for n in args.n):  # cosine rows first
            query = build_query(work, n, k)
            # bare, classify, bare: the machine is shared, so the bare figure is the faster
            # of two runs either side of the command (a slower bare would flatter the ratio).
            bare1 = run_bare(query, paths, k, scoring)
            start = run_cli(tiny, paths, k, scoring, work)
            cli = run_cli(query, paths, k, scoring, work)
            bare2 = run_bare(query, paths, k, scoring)
            bare, bare_cpu = min(bare1[0], bare2[0]), min(bare1[1], bare2[1])
            marginal = cli["wall_s"] - start["wall_s"]
            marginal_cpu = cli["cpu_s"] - start["cpu_s"]
            row = {"n": n, "classes": k, "scoring": scoring, "startup_s": start["wall_s"],
                   "startup_cpu_s": start["cpu_s"], **cli, "marginal_s": marginal,
                   "marginal_cpu_s": marginal_cpu, "bare_s": bare, "bare_cpu_s": bare_cpu,
                   "bare_runs_s": [bare1[0], bare2[0]], "ratio": marginal / bare,
                   "ratio_cpu": marginal_cpu / bare_cpu,
                   "load_avg": os.getloadavg()[0]}
            rows.append(row)
            print(json.dumps(row), flush=True)
            print_ratio(f"classify marginal / bare at N={n:,}, {k} classes, {scoring}", row["ratio"],
                        f"CPU seconds {row['ratio_cpu']:.3f}")
        if not args.keep:
            for n in args.n:
                (work / f"query-{n}-{k}.h5").unlink(missing_ok=True)
    return rows


if __name__ == "__main__":
    main()
