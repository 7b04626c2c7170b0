"""Token reads for head training: 128 random rows of a Lite2 token store, as LazyTokens reads them.

Baseline, in the same process: h5py slices run by run (the reader head training used before the
store's reading layer), and h5py's own point selection. Prints seconds per batch and the ratio
of the store's reader to each baseline (< 1: faster) as ``ratio:`` lines.

    python benchmarks/token_reads.py demo-out/k-train-lite2.h5 --batches 20
    python benchmarks/token_reads.py --smoke   # 32 Kermany images through Lite2, 3 batches of 8

``--smoke`` without a store embeds the first 16 normal and 16 pneumonia Kermany train images with
Lite2 (patch tokens) into a temporary folder.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import h5py
import numpy as np
from common import parse_args, print_header, print_ratio, smoke_stores, workdir

from stitchkit.store import EmbeddingStore


def runs_baseline(data: h5py.Dataset, rows: np.ndarray) -> np.ndarray:
    unique, inverse = np.unique(rows, return_inverse=True)
    out = np.empty((len(unique), *data.shape[1:]), dtype=data.dtype)
    breaks = np.nonzero(np.diff(unique) != 1)[0] + 1
    for start, run in zip(np.r_[0, breaks], np.split(unique, breaks), strict=True):
        out[start:start + len(run)] = data[int(run[0]):int(run[-1]) + 1]
    return out[inverse]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", nargs="?", help="a store with tokens (--smoke: embedded here)")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--points", action="store_true", help="also time h5py's point selection (slow)")
    args = parse_args(parser, smoke={"batches": 3, "batch_size": 8})
    if args.store is not None:
        return run(args)
    if not args.smoke:
        parser.error("name a store with tokens (or run --smoke)")
    with workdir(None, prefix="token-reads-") as tmp:
        args.store = str(smoke_stores(tmp, 32)["lite2"])
        run(args)


def run(args: argparse.Namespace) -> None:
    print_header("token_reads", store=Path(args.store).name, batch=args.batch_size)
    rng = np.random.default_rng(0)
    with EmbeddingStore(args.store) as store, h5py.File(args.store, "r") as raw:
        if not store.has_tokens:
            raise SystemExit(f"{args.store} has no tokens: embed with --tokens")
        data = raw["tokens"]  # the baseline reads the raw dataset
        n = len(store)
        batches = [np.sort(rng.choice(n, args.batch_size, replace=False)) for _ in range(args.batches)]
        readers = {"store.read(tokens=True)": lambda r: store.read(r, tokens=True, dtype=np.float16),
                   "h5py runs (before)": lambda r: runs_baseline(data, r)}
        if args.points:
            readers["h5py point selection"] = lambda r: data[r]
        for rows in batches:  # one untimed pass of each: the page cache and each file handle's HDF5
            for read in readers.values():  # metadata cache (the chunk index) start warm for all
                read(rows)
        timings = dict.fromkeys(readers, 0.0)
        names = list(readers)
        for k, rows in enumerate(batches):  # interleaved, the order alternating: drift hits all alike
            for name in names if k % 2 == 0 else names[::-1]:
                t0 = time.perf_counter()
                out = readers[name](rows)
                timings[name] += (time.perf_counter() - t0) / len(batches)
                assert out.shape == (args.batch_size, *data.shape[1:])
        np.testing.assert_array_equal(readers["store.read(tokens=True)"](batches[1]), runs_baseline(data, batches[1]))
        shape = tuple(data.shape[1:])
    print(f"{args.store}: {n} rows, tokens {shape}, batch {args.batch_size}")
    base = timings["h5py runs (before)"]
    for name, sec in timings.items():
        print(f"  {name:<26} {sec:.4f} s/batch   ratio to before {sec / base:.2f}")
    for name, sec in timings.items():
        if name != "h5py runs (before)":
            print_ratio(f"{name} / h5py runs (before), seconds per batch", sec / base)


if __name__ == "__main__":
    main()
