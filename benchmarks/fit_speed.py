"""Fit time and peak memory of `stitch fit` from HDF5 stores, against a floor and latentis.

For each anchor count N it writes two stores (N × 1280 source, N × 384 target, generated
chunk-wise so that 1M anchors never sit in memory) under --workdir, then runs, each in a fresh
process so that peak memory (ru_maxrss) belongs to one measurement:

* floor: one chunked read of both stores plus single-precision BLAS XᵀX and XᵀY per chunk,
  the least work any exact closed-form fit from these files must do;
* stitchkit affine (alpha 0), orthogonal, and ridge with alpha "auto" (GCV from one
  eigendecomposition; ``ridge-cv3`` is the former 3-fold choice), through ``fit_map`` with no
  holdout and no metrics;
* latentis 0.0.8 (if importable, N ≤ --latentis-max): its Procrustes and least-squares
  translators on the same data read into memory, as its API requires.

    python benchmarks/fit_speed.py --n 10000,100000,1000000 --workdir /tmp/fit-bench
    python benchmarks/fit_speed.py --n 100000 --latentis-python /path/to/venv/bin/python
    python benchmarks/fit_speed.py --n 1000000 --methods orthogonal,affine --repeat 1
    python benchmarks/fit_speed.py --smoke      # 2,000 anchors, affine and orthogonal, once (seconds)

Stores are deleted afterwards unless --keep. Prints ``ratio: stitchkit METHOD / floor`` per N and
method.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from common import child_json, parse_args, peak_rss_mb, print_header, print_ratio, workdir

DX, DY = 1280, 384
CHUNK = 16384


def make_stores(workdir: Path, n: int, seed: int = 0) -> tuple[Path, Path]:
    from stitchkit.store import StoreWriter
    from stitchkit.store.store import base_attrs

    src, tgt = workdir / f"src-{n}.h5", workdir / f"tgt-{n}.h5"
    if src.exists() and tgt.exists():
        return src, tgt
    rng = np.random.default_rng(seed)
    # A low-rank signal plus noise, positive means like pooled CNN features.
    basis = rng.standard_normal((64, DX)).astype(np.float32)
    W = (rng.standard_normal((DX, DY)) / np.sqrt(DX)).astype(np.float32)
    with StoreWriter(src, dim=DX, attrs=base_attrs(model_spec="bench-src", modality="image")) as ws, \
         StoreWriter(tgt, dim=DY, attrs=base_attrs(model_spec="bench-tgt", modality="image")) as wt:
        for start in range(0, n, CHUNK):
            m = min(CHUNK, n - start)
            z = rng.standard_normal((m, 64), dtype=np.float32)
            X = z @ basis + rng.standard_normal((m, DX), dtype=np.float32) + 1.0
            Y = X @ W + 0.1 * rng.standard_normal((m, DY), dtype=np.float32)
            ids = [f"s{i:08d}" for i in range(start, start + m)]
            ws.append(ids, X)
            wt.append(ids, Y)
    return src, tgt


# -- workers (each runs in its own process) ----------------------------------------------------
def work_floor(src: str, tgt: str) -> dict:
    import h5py

    t0 = time.perf_counter()
    xtx = np.zeros((DX, DX))
    xty = np.zeros((DX, DY))
    with h5py.File(src, "r") as a, h5py.File(tgt, "r") as b:
        ex, ey = a["embeddings"], b["embeddings"]
        n = ex.shape[0]
        t_read = t_blas = 0.0
        for start in range(0, n, CHUNK):
            r0 = time.perf_counter()
            X = ex[start : start + CHUNK]
            Y = ey[start : start + CHUNK]
            r1 = time.perf_counter()
            xtx += X.T @ X
            xty += X.T @ Y
            t_blas += time.perf_counter() - r1
            t_read += r1 - r0
    return {"seconds": time.perf_counter() - t0, "read_s": t_read, "blas_s": t_blas}


def work_stitchkit(src: str, tgt: str, method: str) -> dict:
    from stitchkit.maps import AnchorPlan, fit_map, make_map

    kw = {"cv": 3} if method == "ridge-cv3" else {}
    t0 = time.perf_counter()
    m = fit_map(src, tgt, make_map(method.split("-")[0], **kw), AnchorPlan(holdout=0.0, metrics=False))
    out = {"seconds": time.perf_counter() - t0, "n_anchors": m.n_anchors_}
    if hasattr(m, "alpha_relative_"):
        out["alpha_relative"] = m.alpha_relative_
    return out


def work_latentis(src: str, tgt: str, method: str) -> dict:
    import h5py
    import torch
    from latentis.transform.base import StandardScaling
    from latentis.transform.translate.aligner import MatrixAligner, Procrustes, Translator
    from latentis.transform.translate.functional import lstsq_align_state

    torch.set_num_threads(os.cpu_count() or 1)
    t0 = time.perf_counter()
    with h5py.File(src, "r") as a, h5py.File(tgt, "r") as b:
        X = torch.from_numpy(a["embeddings"][()])
        Y = torch.from_numpy(b["embeddings"][()])
    t_read = time.perf_counter() - t0
    t1 = time.perf_counter()
    if method == "orthogonal":
        # Standard scaling both sides, zero padding, SVD: the same recipe as stitchkit's default.
        translator = Procrustes()
    else:
        # Least squares after standard scaling (centred, so no bias is needed).
        translator = Translator(
            aligner=MatrixAligner(name="lstsq", align_fn_state=lstsq_align_state),
            x_transform=StandardScaling(), y_transform=StandardScaling(),
        )
    translator.fit(X, Y)
    t_fit = time.perf_counter() - t1
    mapped, _ = translator.transform(X[:1000])
    return {"seconds": time.perf_counter() - t0, "read_s": t_read, "fit_s": t_fit,
            "out_shape": list(mapped.shape)}


def run_worker(kind: str, src: Path, tgt: Path, method: str = "", python: str | None = None) -> dict:
    return child_json(__file__, "--worker", kind, "--src", str(src), "--tgt", str(tgt), "--method", method,
                      python=python, strict=False)


def worker_main(args: argparse.Namespace) -> None:
    fn = {"floor": work_floor, "stitchkit": work_stitchkit, "latentis": work_latentis}[args.worker]
    base = peak_rss_mb()
    out = fn(args.src, args.tgt) if args.worker == "floor" else fn(args.src, args.tgt, args.method)
    out["peak_rss_mb"] = peak_rss_mb()
    out["base_rss_mb"] = base
    print(json.dumps(out))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", default="10000,100000", help="anchor counts, comma-separated")
    p.add_argument("--workdir", default="/tmp/fit-bench")
    p.add_argument("--methods", default="affine,orthogonal,ridge",
                   help="comma-separated: affine, orthogonal, ridge (GCV), ridge-cv3 (3-fold)")
    p.add_argument("--latentis-python", default=sys.executable,
                   help="interpreter that can import latentis (a separate venv is fine)")
    p.add_argument("--latentis-max", type=int, default=100_000,
                   help="skip latentis above this many anchors (it loads everything in memory)")
    p.add_argument("--repeat", type=int, default=3, help="runs of each measurement; the best counts")
    p.add_argument("--keep", action="store_true", help="keep the generated stores")
    p.add_argument("--json", dest="json_out", default=None, help="also write results here")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--src", default=None, help=argparse.SUPPRESS)
    p.add_argument("--tgt", default=None, help=argparse.SUPPRESS)
    p.add_argument("--method", default="", help=argparse.SUPPRESS)
    args = parse_args(p, smoke={"n": "2000", "methods": "affine,orthogonal", "repeat": 1, "latentis_max": 0,
                                "workdir": None})
    if args.worker:
        worker_main(args)
        return
    with workdir(args.workdir, prefix="fit-bench-") as folder:  # --smoke: a temporary one
        failed = run(args, folder)
    if args.workdir is not None and not args.keep and not any(Path(args.workdir).iterdir()):
        shutil.rmtree(args.workdir)
    sys.exit(1 if failed else 0)


def run(args: argparse.Namespace, workdir: Path) -> bool:
    """Measure every N; True when a stitchkit fit failed (latentis may be missing)."""
    print_header("fit_speed", repeat=args.repeat)
    results = []
    failed = False
    for n in [int(v) for v in args.n.split(",")]:
        t = time.perf_counter()
        src, tgt = make_stores(workdir, n)
        print(f"# N={n}: stores written in {time.perf_counter() - t:.1f}s "
              f"({(src.stat().st_size + tgt.stat().st_size) / 1e9:.2f} GB)", flush=True)
        run_worker("floor", src, tgt)  # warm the page cache so every run reads the same way
        # On a shared machine the load changes by the minute: interleave the floor with the
        # fits and keep the best of --repeat runs of each (peak memory does not vary).
        runs: dict[str, list[dict]] = {}
        methods = args.methods.split(",")
        for _ in range(args.repeat):
            runs.setdefault("floor", []).append(run_worker("floor", src, tgt))
            for method in methods:
                runs.setdefault(method, []).append(run_worker("stitchkit", src, tgt, method))
        floor = min(runs["floor"], key=lambda r: r["seconds"])
        row = {"n": n, "floor": floor, "floor_all_s": [r["seconds"] for r in runs["floor"]]}
        print(f"N={n:>8} floor          {floor['seconds']:7.2f} s  (read {floor['read_s']:.2f}, "
              f"BLAS {floor['blas_s']:.2f})  peak {floor['peak_rss_mb']:7.0f} MB", flush=True)
        for method in methods:
            ok = [r for r in runs[method] if "error" not in r]
            if not ok:
                row[f"stitchkit_{method}"] = runs[method][0]
                failed = True
                print(f"N={n:>8} stitchkit {method:<10} error: {runs[method][0]['error']}", flush=True)
                continue
            r = min(ok, key=lambda r: r["seconds"])
            row[f"stitchkit_{method}"] = {**r, "all_s": [x["seconds"] for x in ok]}
            print(f"N={n:>8} stitchkit {method:<10} {r['seconds']:7.2f} s  "
                  f"{r['seconds'] / floor['seconds']:5.2f}× floor  peak {r['peak_rss_mb']:7.0f} MB",
                  flush=True)
            print_ratio(f"stitchkit {method} / floor at N={n}", r["seconds"] / floor["seconds"],
                        f"best of {len(ok)}")
        if n <= args.latentis_max:
            for method in ("affine", "orthogonal"):
                r = run_worker("latentis", src, tgt, method, python=args.latentis_python)
                row[f"latentis_{method}"] = r
                if "error" in r:
                    print(f"N={n:>8} latentis  {method:<10} error: {r['error']}", flush=True)
                    continue
                ours = row.get(f"stitchkit_{method}", {}).get("seconds")
                vs = f"  stitchkit is {r['seconds'] / ours:4.1f}× faster" if ours else ""
                print(f"N={n:>8} latentis  {method:<10} {r['seconds']:7.2f} s  "
                      f"(fit {r['fit_s']:.2f})  peak {r['peak_rss_mb']:7.0f} MB{vs}", flush=True)
        results.append(row)
        if not args.keep:
            src.unlink()
            tgt.unlink()
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2))
    return failed


if __name__ == "__main__":
    main()
