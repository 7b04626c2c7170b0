"""`stitch benchmark`'s cost over the classify calls it stands for, in one process.

Builds, under --workdir (never the repository), a labelled store of N synthetic 1280-d
embeddings with the columns the dataset readers write (labels: ChestX-ray14 findings joined by
"|" at their NIH prevalences, or "No Finding"; ``split``, half of the rows "test"; ``uncertain``:
one finding on 3 % of the rows) and a prompt store holding every sentence of the cxr14 prompt
set in the same space (cosine scoring, no text model). The suite has two data sets over the test
rows: every finding with >= 10 positives (multi-label) and the five CheXpert competition findings
as a multi-class set (rows with exactly one of them). Then, interleaved and best of --repeat:

* ``run_suite`` (what `stitch benchmark` runs): selection, classify calls without their own
  bootstrap, the shared-resample bootstrap, benchmark.json, table.md, records.json;
* the classify calls a user would run for the same table: the prompt file read and
  ``classify_store`` on the same rows and findings with ``n_boot`` resamples (what `stitch
  classify --prompts cxr14 --ids ... --bootstrap N` does; the rows are chosen beforehand, as id
  files would be).

It prints the ratio of the first to the second (``ratio: stitch benchmark / classify calls``,
goal <= 1.05) and the first's own split: the time inside its classify calls and the rest.

    .venv/bin/python benchmarks/benchmark_overhead.py --n 25000 --workdir /tmp/bench-overhead
    .venv/bin/python benchmarks/benchmark_overhead.py --smoke   # 2,000 rows, 50 resamples, once
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
from common import parse_args, print_header, print_ratio, set_threads, workdir

DIM = 1280
SPACE = {"model_spec": "bench-image", "weights_sha256": "i", "modality": "image"}
# NIH ChestX-ray14 prevalences (Wang et al. 2017, all 112,120 images), in cxr14.yaml's label spelling.
PREVALENCE = {"Atelectasis": 0.103, "Cardiomegaly": 0.025, "Effusion": 0.119, "Infiltration": 0.177,
              "Mass": 0.052, "Nodule": 0.056, "Pneumonia": 0.013, "Pneumothorax": 0.047,
              "Consolidation": 0.042, "Edema": 0.021, "Emphysema": 0.022, "Fibrosis": 0.015,
              "Pleural_Thickening": 0.030, "Hernia": 0.002}
SUITE = {"name": "overhead", "datasets": [
    {"name": "findings", "store": "s", "task": "multilabel", "prompts": "cxr14", "findings": "auto",
     "min_positives": 10, "where": {"split": "test"}},
    {"name": "five-class", "store": "s", "task": "multiclass", "prompts": "cxr14",
     "findings": ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion"], "where": {"split": "test"}},
]}


def build(work: Path, n: int, seed: int = 0) -> tuple[Path, Path]:
    from stitchkit.store import write_store
    from stitchkit.zeroshot.prompts import load_prompts

    work.mkdir(parents=True, exist_ok=True)
    query, prompts = work / f"query-{n}.h5", work / "prompts.h5"
    rng = np.random.default_rng(seed)
    if not prompts.exists():
        texts = load_prompts("cxr14").texts(negatives=True)
        write_store(prompts, [f"p{i}" for i in range(len(texts))],
                    rng.normal(size=(len(texts), DIM)).astype(np.float32), attrs=SPACE, columns={"texts": texts})
    if not query.exists():
        names = list(PREVALENCE)
        hit = rng.random((n, len(names))) < np.array(list(PREVALENCE.values()))
        labels = ["|".join(f for f, h in zip(names, row, strict=True) if h) or "No Finding" for row in hit]
        unsure = [names[rng.integers(len(names))] if rng.random() < 0.03 else "" for _ in range(n)]
        columns = {"labels": labels, "split": ["test" if i % 2 else "train" for i in range(n)], "uncertain": unsure}
        write_store(query, [f"q{i}" for i in range(n)], rng.normal(size=(n, DIM)).astype(np.float32),
                    attrs=SPACE, columns=columns)
    return query, prompts


def run_benchmark(query: Path, prompts: Path, out: Path, n_boot: int) -> dict:
    from stitchkit.zeroshot.benchmark import BenchmarkOptions, Route, parse_suite, run_suite

    shutil.rmtree(out, ignore_errors=True)
    suite = parse_suite(SUITE, source=str(out.parent / "suite.yaml"))
    t0 = time.perf_counter()
    data = run_suite(suite, {"s": str(query)}, Route(scoring="cosine", prompt_store=str(prompts)), out,
                     BenchmarkOptions(bootstrap=n_boot))
    return {"wall_s": time.perf_counter() - t0, "classify_inside_s": data["seconds"]["classify"],
            "macro": [d["metrics"]["auc_macro"] for d in data["datasets"]]}


def run_classify(query: Path, prompts: Path, out: Path, n_boot: int) -> float:
    """The same rows and findings through classify_store with its own bootstrap, per data set."""
    from stitchkit.store import EmbeddingStore
    from stitchkit.zeroshot.benchmark import parse_suite, select
    from stitchkit.zeroshot.prompts import PromptSet, load_prompts
    from stitchkit.zeroshot.scoring import classify_store

    suite = parse_suite(SUITE, source=str(out.parent / "suite.yaml"))
    jobs = []
    with EmbeddingStore(query) as store:  # the rows and findings, chosen outside the timing (id files)
        for entry in suite.entries:
            chosen = select(store, entry, suite, load_prompts(entry.prompts, mode=entry.task))
            jobs.append((entry, [c.name for c in chosen.classes], [str(i) for i in store.ids_at(chosen.rows)]))
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for entry, names, ids in jobs:  # as `stitch classify --prompts cxr14 --ids ...` runs: the prompt file read
        pset = load_prompts(entry.prompts, mode=entry.task)
        by_name = {c.name.lower(): c for c in pset.classes}
        classes = [by_name.get(n.lower()) or next(c for c in pset.classes if n in c.labels) for n in names]
        classify_store(query, PromptSet(classes, entry.task, pset.source), prompt_store=prompts, scoring="cosine",
                       output=out / f"{entry.name}.h5", ids=ids, bootstrap=n_boot, allow_missing_classes=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, nargs="+", default=[25_000])
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/stitchkit-bench-overhead"))
    ap.add_argument("--threads", type=int, default=2)
    args = parse_args(ap, smoke={"n": [2000], "bootstrap": 50, "repeat": 1, "workdir": None})
    set_threads(args.threads)
    print_header("benchmark_overhead", torch_threads=args.threads, bootstrap=args.bootstrap)
    with workdir(args.workdir, prefix="bench-overhead-") as folder:  # --smoke: a temporary one
        run(args, folder)


def run(args: argparse.Namespace, work: Path) -> None:
    for n in args.n:
        query, prompts = build(work, n)
        bench, plain = [], []
        run_classify(query, prompts, work / "warm", args.bootstrap)  # prompt cache, imports
        for _ in range(args.repeat):  # interleaved: the machine is shared
            bench.append(run_benchmark(query, prompts, work / "bench-out", args.bootstrap))
            plain.append(run_classify(query, prompts, work / "classify-out", args.bootstrap))
        best = min(bench, key=lambda r: r["wall_s"])
        row = {"n": n, "bootstrap": args.bootstrap, "benchmark_s": best["wall_s"],
               "inside_classify_s": best["classify_inside_s"], "rest_s": best["wall_s"] - best["classify_inside_s"],
               "classify_calls_s": min(plain), "ratio": best["wall_s"] / min(plain),
               "runs_benchmark_s": [r["wall_s"] for r in bench], "runs_classify_s": plain,
               "load_avg": os.getloadavg()[0]}
        print(json.dumps(row))
        print_ratio(f"stitch benchmark / the classify calls it stands for at n={n}", row["ratio"],
                    f"{row['benchmark_s']:.2f} s against {row['classify_calls_s']:.2f} s; of it, classify "
                    f"without bootstrap {row['inside_classify_s']:.2f} s, bootstrap + selection + outputs "
                    f"{row['rest_s']:.2f} s", goal="<= 1.05")


if __name__ == "__main__":
    main()
