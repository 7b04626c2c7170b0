"""Per-stage throughput of `stitch embed` against the same model's bare forward pass, in one run.

For images (Kermany, with and without ``--tokens``) and texts (IU reports), on the same inputs
and thread count, it times each stage on its own:

* decode: file -> PIL image (``stitchkit.embed.load_sample``; texts have none);
* preprocess: the encoder's ``prepare`` (resize, crop, normalise -> tensor; texts: tokenise);
* forward: the encoder's ``encode`` on ready batches (what `stitch embed` runs);
* write: ``StoreWriter`` appends of the results (embeddings, and float16 tokens with --tokens);

then the pipeline as `stitch embed` runs it (``embed_store``: DataLoader decode workers,
forward, resumable parts, the assembled store; model loading excluded), and two baselines:
the encoder's own forward (on the runtime `stitch embed` picks, ``--runtime``: ONNX Runtime,
or torch channels_last) and eager NCHW (the model as timm builds it, contiguous tensors),
which is what "bare forward" meant before channels_last.
Runs are interleaved (repeats), so drift on a shared machine hits every figure alike.

``--try bf16,compile,onnx`` also times the forward of candidate speed-ups on the same batches
and gives the least cosine similarity of their embeddings to float32 eager ones (kept only
if ≥ 0.999): bfloat16 weights, ``torch.compile`` (inductor, warm-up reported apart) and ONNX
Runtime (`stitch embed --runtime onnx`'s own path).

``--vs-forward`` is the verdict on the pipeline itself: for Lite0 and Lite2 (``--models``), with
and without ``--tokens``, on ONNX Runtime and on torch (``--runtimes``: up to 8 rows), `stitch
embed`'s marginal throughput (images/s between a 128-image run and a run sized to take about
``--seconds`` more, so start-up, worker forks and the store's fixed costs cancel) against the
same encoder's forward alone on pre-made tensors (batch 64, same threads), the rows interleaved
across ``--repeats``, each with the load average beside it. Goal: ≥ 0.90.

``--runtimes torch,onnx`` times `stitch embed`'s runtimes against each other: the full pipeline
(``embed_store``, with and without ``--tokens``) and the forward alone, for each runtime in
turn within each repeat (the order alternates between repeats), with the ONNX export timed cold
into a fresh cache, the load average at each repeat, the least cosine between the runtimes'
embeddings and tokens, and the onnx / torch ratios. ``--only-runtimes`` skips everything else.

    python benchmarks/embed_throughput.py --model lite0 --n 256 --text-model minilm
    python benchmarks/embed_throughput.py --model lite0 --n 128 --try bf16,compile,onnx
    python benchmarks/embed_throughput.py --model lite2 --n 256 --runtimes torch,onnx --only-runtimes
    python benchmarks/embed_throughput.py --vs-forward    # the 8 rows, about 6 minutes on 2 idle cores
    python benchmarks/embed_throughput.py --smoke   # 8 images and 8 reports, batch 4, once (seconds)
    python benchmarks/embed_throughput.py --vs-forward --smoke

The verdicts are the ``ratio:`` lines: pipeline / bare forward (images, texts), with
--vs-forward marginal pipeline / bare forward per row, and with --runtimes onnx / torch.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

# common sets HF_HUB_OFFLINE before stitchkit loads a model
from common import (
    data_folder,
    kermany_rows,
    load_average,
    parse_args,
    print_header,
    print_ratio,
    timed,
)

from stitchkit.datasets import iu_reports
from stitchkit.embed import embed_store, load_sample
from stitchkit.encoders import load_encoder
from stitchkit.inputs import Inputs, Item
from stitchkit.store import StoreWriter
from stitchkit.store.store import base_attrs


def kermany_items(n: int) -> list[Item]:
    return [Item(r["path"], path=Path(r["file"]), label=r["label"]) for r in kermany_rows(n)]


def iu_items(n: int) -> list[Item]:
    rows = iu_reports(data_folder() / "iu-xray-reports" / "NLMCXR_reports.tgz")[:n]
    key = next(k for k in ("findings", "text", "report") if k in rows[0]) if rows else "text"
    return [Item(str(i), text=r.get(key) or r.get("impression") or "no findings") for i, r in enumerate(rows)]


def batched(xs: list[Any], size: int) -> list[list[Any]]:
    return [xs[i:i + size] for i in range(0, len(xs), size)]


def write_seconds(dim: int, outs: list[Any], ids: list[str], tokens: bool) -> float:
    """StoreWriter appends of the encoder outputs, as the job's parts and final store do."""
    with tempfile.TemporaryDirectory() as tmp:
        shape = None
        if tokens:
            t = max(o.tokens.shape[1] for o in outs)
            shape = (t, outs[0].tokens.shape[2])
        t0 = time.perf_counter()
        with StoreWriter(Path(tmp) / "w.h5", dim=dim, attrs=base_attrs(modality="bench"),
                         token_shape=shape) as w:
            at = 0
            for o in outs:
                n = len(o.embeddings)
                w.append(ids[at:at + n], o.embeddings.numpy(),
                         tokens=o.tokens.numpy() if tokens else None,
                         tokens_mask=o.mask.numpy() if tokens else None)
                at += n
        return time.perf_counter() - t0


def image_stages(encoder: Any, items: list[Item], batch_size: int, tokens: bool) -> dict[str, float]:
    decode_s, raws = timed(lambda: [load_sample(it, "image")[0] for it in items])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the DataLoader workers that prepare for `stitch embed`
    try:
        prep_s, prepared = timed(lambda: [encoder.prepare(r) for r in raws])
    finally:
        torch.set_num_threads(threads)
    batches = [encoder.collate(b) for b in batched(prepared, batch_size)]
    with torch.inference_mode():
        encoder.encode(batches[0], tokens=tokens)  # warm-up: first call allocates, picks kernels
        fwd_s, outs = timed(lambda: [encoder.encode(b, tokens=tokens) for b in batches])
    write_s = write_seconds(encoder.dim, outs, [it.id for it in items], tokens)
    n = len(items)
    return {"decode": n / decode_s, "preprocess": n / prep_s, "forward": n / fwd_s, "write": n / write_s}


def text_stages(encoder: Any, items: list[Item], batch_size: int, tokens: bool) -> dict[str, float]:
    texts = [it.text for it in items]
    out: dict[str, float] = {}
    tok = getattr(encoder, "tokenizer", None)
    if tok is not None:  # tokenising alone (the forward below includes it, as encode does)
        s, _ = timed(lambda: [tok(b, padding=True, truncation=True, return_tensors="pt")
                              for b in batched(texts, batch_size)])
        out["preprocess"] = len(texts) / s
    with torch.inference_mode():
        encoder.encode(texts[:batch_size], tokens=tokens)
        fwd_s, outs = timed(lambda: [encoder.encode(b, tokens=tokens) for b in batched(texts, batch_size)])
    out["forward"] = len(texts) / fwd_s
    out["write"] = len(texts) / write_seconds(encoder.dim, outs, [it.id for it in items], tokens)
    return out


def pipeline(encoder: Any, items: list[Item], modality: str, batch_size: int, workers: int,
             tokens: bool) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        s, _ = timed(lambda: embed_store(Inputs(items, modality, "bench", ["label"] if modality == "image" else []),
                                         encoder, Path(tmp) / "b.h5", batch_size=batch_size,
                                         workers=workers, tokens=tokens))
    return len(items) / s


def write_tars(items: list[Item], folder: Path, shards: int = 4) -> list[Path]:
    """The same images as WebDataset shards (KEY.jpg + KEY.cls), as img2dataset lays them out."""
    import io
    import tarfile

    paths = []
    for s in range(shards):
        paths.append(folder / f"{s:05d}.tar")
        with tarfile.open(paths[-1], "w") as tf:
            for j, it in enumerate(items[s::shards]):
                for ext, data in (("jpg", it.path.read_bytes()), ("cls", (it.label or "").encode())):
                    info = tarfile.TarInfo(f"{s:05d}{j:05d}.{ext}")
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
    return paths


def webdataset_pipeline(encoder: Any, tars: list[Path], batch_size: int, workers: int) -> float:
    """`stitch embed shards/*.tar`: listing the shards is timed too; members decode in the workers."""
    from stitchkit.inputs import read_inputs

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        inputs = read_inputs(tars)
        embed_store(inputs, encoder, Path(tmp) / "w.h5", batch_size=batch_size, workers=workers)
        return len(inputs.items) / (time.perf_counter() - t0)


def ready_batches(encoder: Any, items: list[Item], batch_size: int) -> list[torch.Tensor]:
    """Batches as the model takes them (8-bit pixels already normalised): the bare forward's input."""
    prepared = [encoder.prepare(load_sample(it, "image")[0]) for it in items]
    return [encoder.normalise(encoder.collate(b)) for b in batched(prepared, batch_size)]


def forward_rate(fn: Callable[[torch.Tensor], Any], batches: list[torch.Tensor]) -> tuple[float, np.ndarray]:
    with torch.inference_mode():
        fn(batches[0])
        t0 = time.perf_counter()
        outs = [fn(b) for b in batches]
        rate = sum(len(b) for b in batches) / (time.perf_counter() - t0)
    return rate, torch.cat([torch.as_tensor(o).float() for o in outs]).numpy()


# The encoder's own forward: torch channels_last, or ONNX Runtime where `stitch embed` picks it.
BARE_OWN = "bare encoder forward (its runtime)"


def eager_nchw(encoder: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model as timm builds it: default memory format, contiguous NCHW input."""
    model = copy.deepcopy(encoder.model).to(memory_format=torch.contiguous_format).float()
    return lambda b: model(b.float().contiguous())


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(axis=1).min())


def candidates(model_name: str, encoder: Any, batches: list[torch.Tensor], ref: np.ndarray,
               which: list[str]) -> list[dict[str, Any]]:
    rows = []
    if "bf16" in which:
        enc16 = load_encoder(model_name, dtype="bfloat16")
        rate, emb = forward_rate(lambda b: enc16.encode(b).embeddings, batches)
        rows.append({"variant": "bfloat16 weights (channels_last)", "img_per_s": rate,
                     "min_cosine_vs_fp32": min_cosine(emb, ref)})
    if "compile" in which:
        model = copy.deepcopy(encoder.model)
        compiled = torch.compile(model)
        with torch.inference_mode():
            warm, _ = timed(lambda: compiled(batches[0].contiguous(memory_format=torch.channels_last)))
        rate, emb = forward_rate(lambda b: compiled(b.contiguous(memory_format=torch.channels_last)), batches)
        rows.append({"variant": "torch.compile (inductor, channels_last)", "img_per_s": rate,
                     "warmup_s": warm, "min_cosine_vs_fp32": min_cosine(emb, ref)})
    if "onnx" in which:
        try:
            import onnxruntime as ort
        except ImportError:
            rows.append({"variant": "onnxruntime", "error": "onnxruntime not importable"})
        else:
            with fresh_cache():
                export_s, enc = timed(lambda: load_encoder(model_name, runtime="onnx"))
                rate, emb = forward_rate(lambda b: enc.encode(b).embeddings, batches)
            rows.append({"variant": f"onnxruntime {ort.__version__} (CPU EP, --runtime onnx)", "img_per_s": rate,
                         "load_and_export_s": export_s, "min_cosine_vs_fp32": min_cosine(emb, ref)})
    return rows


class fresh_cache:
    """A temporary $STITCHKIT_CACHE, so an ONNX export is timed cold and leaves nothing behind."""

    def __enter__(self) -> Path:
        self.tmp = tempfile.TemporaryDirectory()
        self.old = os.environ.get("STITCHKIT_CACHE")
        os.environ["STITCHKIT_CACHE"] = self.tmp.name
        return Path(self.tmp.name)

    def __exit__(self, *exc: object) -> None:
        if self.old is None:
            os.environ.pop("STITCHKIT_CACHE", None)
        else:
            os.environ["STITCHKIT_CACHE"] = self.old
        self.tmp.cleanup()


def compare_runtimes(model_name: str, items: list[Item], batch_size: int, workers: int, repeats: int,
                     runtimes: list[str], forward: bool = True) -> dict[str, Any]:
    """`stitch embed` on each runtime, interleaved: pipeline and forward, with and without tokens."""
    out: dict[str, Any] = {"runtimes": runtimes, "load_avg": []}
    with fresh_cache():
        encs = {}
        for rt in runtimes:
            load_s, encs[rt] = timed(lambda rt=rt: load_encoder(model_name, runtime=rt))
            out[f"load_s_{rt}"] = load_s
            out[f"export_s_{rt}"] = encs[rt].export_seconds
            if encs[rt].runtime != rt:
                raise SystemExit(f"--runtime {rt} resolved to {encs[rt].runtime}")
        batches = ready_batches(encs[runtimes[0]], items, batch_size)
        runs: dict[str, list[float]] = {}
        outs: dict[str, Any] = {}
        for r in range(repeats):
            out["load_avg"].append(os.getloadavg()[0])
            order = runtimes if r % 2 == 0 else runtimes[::-1]  # drift hits both alike
            for rt in order:
                enc = encs[rt]
                for tokens in (False, True):
                    tag = " --tokens" if tokens else ""
                    if forward or (tokens and r == 0):  # one tokens forward for the cosines
                        with torch.inference_mode():
                            enc.encode(batches[0], tokens=tokens)
                            s, res = timed(lambda enc=enc, tokens=tokens: [enc.encode(b, tokens=tokens)
                                                                           for b in batches])
                        if forward:
                            runs.setdefault(f"{rt} forward{tag}", []).append(len(items) / s)
                        if tokens:
                            outs[rt] = res
                    runs.setdefault(f"{rt} stitch embed{tag}", []).append(
                        pipeline(enc, items, "image", batch_size, workers, tokens))
        out["load_avg"].append(os.getloadavg()[0])
    out["images_per_s"] = {k: {"best": max(v), "runs": v} for k, v in runs.items()}
    if "torch" in outs and "onnx" in outs:
        emb = [np.concatenate([o.embeddings.numpy() for o in outs[rt]]) for rt in ("onnx", "torch")]
        tok = [np.concatenate([o.tokens.numpy().reshape(len(o.tokens), -1) for o in outs[rt]])
               for rt in ("onnx", "torch")]
        out["min_cosine_onnx_vs_torch"] = {"embeddings": min_cosine(*emb), "tokens": min_cosine(*tok)}
        out["ratios_onnx_over_torch"] = {
            what: {"best": max(runs[f"onnx {what}"]) / max(runs[f"torch {what}"]),
                   "per_repeat": [a / b for a, b in zip(runs[f"onnx {what}"], runs[f"torch {what}"], strict=True)]}
            for what in ("forward", "forward --tokens", "stitch embed", "stitch embed --tokens")
            if f"onnx {what}" in runs}
    return out


def print_runtimes(model: str, n: int, batch_size: int, threads: int, workers: str, cmp: dict[str, Any]) -> None:
    print(f"\n{model}, {n} Kermany images, batch {batch_size}, {threads} torch threads (ORT intra-op the same), "
          f"--workers {workers}, load average per repeat {[round(x, 1) for x in cmp['load_avg']]}")
    print(f"ONNX export (cold cache): {cmp.get('export_s_onnx') or 0:.1f} s")
    print("| images/s (best of runs) | " + " | ".join(cmp["runtimes"]) + " | onnx / torch (best; per repeat) |")
    print("|---|" + "---|" * len(cmp["runtimes"]) + "---|")
    for what in ("stitch embed", "stitch embed --tokens", "forward", "forward --tokens"):
        if f"{cmp['runtimes'][0]} {what}" not in cmp["images_per_s"]:
            continue
        cells = [f"{cmp['images_per_s'][f'{rt} {what}']['best']:.1f}" for rt in cmp["runtimes"]]
        ratio = cmp.get("ratios_onnx_over_torch", {}).get(what)
        rtext = f"{ratio['best']:.2f}; " + ", ".join(f"{x:.2f}" for x in ratio["per_repeat"]) if ratio else ""
        print(f"| {what} | " + " | ".join(cells) + f" | {rtext} |")
    if "min_cosine_onnx_vs_torch" in cmp:
        c = cmp["min_cosine_onnx_vs_torch"]
        print(f"least cosine onnx vs torch: embeddings {c['embeddings']:.7f}, tokens (per image) {c['tokens']:.7f}")
    for what, ratio in cmp.get("ratios_onnx_over_torch", {}).items():
        print_ratio(f"onnx / torch, {what} (images/s)", ratio["best"], "best of the repeats")


def cpu_seconds() -> float:
    """CPU seconds of this process and of its finished children (the decode workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def bare_rate(encoder: Any, batches: list[torch.Tensor], tokens: bool, seconds: float) -> tuple[float, float]:
    """The encoder's forward alone on pre-made tensors, (images/s, CPU s per image): at least
    one pass over ``batches`` and about ``seconds``, after a warm-up call."""
    with torch.inference_mode():
        encoder.encode(batches[0], tokens=tokens)
        n, t0, c0 = 0, time.perf_counter(), cpu_seconds()
        while n == 0 or time.perf_counter() - t0 < seconds:
            for b in batches:
                encoder.encode(b, tokens=tokens)
                n += len(b)
        return n / (time.perf_counter() - t0), (cpu_seconds() - c0) / n


def vs_forward(models: list[str], runtimes: list[str], batch_size: int, workers: int | None, repeats: int,
               seconds: float, small: int) -> list[dict[str, Any]]:
    """`stitch embed`'s marginal images/s against its own bare forward, per (model, runtime,
    tokens), the rows interleaved within each repeat (order reversed between repeats)."""
    encoders = {(m, rt): load_encoder(m, runtime=rt) for m in models for rt in runtimes}
    for (m, rt), enc in encoders.items():
        if enc.runtime != rt:
            raise SystemExit(f"{m}: --runtime {rt} resolved to {enc.runtime}")
    pool = kermany_items(small + 2 * batch_size)
    ready = {key: ready_batches(enc, pool[:2 * batch_size], batch_size) for key, enc in encoders.items()}
    rows = [{"model": m, "runtime": rt, "tokens": tok, "bare": [], "marginal": [], "cpu": [], "load": []}
            for m in models for rt in runtimes for tok in (False, True)]
    for r in range(repeats):
        for row in rows if r % 2 == 0 else rows[::-1]:
            key, tokens = (row["model"], row["runtime"]), row["tokens"]
            enc = encoders[key]
            bare, bare_cpu = bare_rate(enc, ready[key], tokens, min(seconds / 3, 3.0))
            if "n_big" not in row:  # sized once, from the first bare rate: about `seconds` beyond small
                row["n_big"] = small + batch_size * max(1, round(seconds * bare / batch_size))
            items = kermany_items(row["n_big"])
            c0 = cpu_seconds()
            t_small = len(items[:small]) / pipeline(enc, items[:small], "image", batch_size, workers, tokens)
            c1 = cpu_seconds()
            t_big = len(items) / pipeline(enc, items, "image", batch_size, workers, tokens)
            marginal = (len(items) - small) / (t_big - t_small)
            # CPU per image beyond the small run, all processes: what sharing the machine distorts least
            pipe_cpu = ((cpu_seconds() - c1) - (c1 - c0)) / (len(items) - small)
            row["bare"].append(bare)
            row["marginal"].append(marginal)
            row["cpu"].append(bare_cpu / pipe_cpu)
            row["load"].append(load_average())
            print(f"  {row['model']} {row['runtime']}{' --tokens' if tokens else ''}: bare {bare:.1f}, marginal "
                  f"{marginal:.1f} images/s ({small} vs {len(items)} images), ratio {marginal / bare:.3f}, "
                  f"CPU per image bare / pipeline {bare_cpu / pipe_cpu:.3f}, load {load_average()}", flush=True)
    return rows


def print_vs_forward(rows: list[dict[str, Any]], batch_size: int, threads: int, workers: str) -> None:
    print(f"\n`stitch embed` marginal / bare forward, batch {batch_size}, {threads} threads, --workers {workers}")
    print("| model | runtime | tokens | bare forward, images/s | stitch embed marginal, images/s | ratio (per repeat) "
          "| CPU s per image, bare / pipeline | load average (1/5/15 min) |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        ratios = [m / b for m, b in zip(row["marginal"], row["bare"], strict=True)]
        row["ratio"] = max(row["marginal"]) / max(row["bare"])
        print(f"| {row['model']} | {row['runtime']} | {'yes' if row['tokens'] else 'no'} | "
              f"{max(row['bare']):.1f} | {max(row['marginal']):.1f} | **{row['ratio']:.2f}** "
              f"({', '.join(f'{x:.2f}' for x in ratios)}) | {max(row['cpu']):.2f} | {'; '.join(row['load'])} |")
    for row in rows:
        print_ratio(f"stitch embed marginal / bare forward, {row['model']} {row['runtime']}"
                    f"{' --tokens' if row['tokens'] else ''} (images/s)", row["ratio"],
                    f"best of each; load {row['load'][-1]}", goal=">= 0.90")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lite0")
    parser.add_argument("--text-model", default="minilm", help="'' to skip texts")
    parser.add_argument("--n", type=int, default=256, help="images")
    parser.add_argument("--n-texts", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=lambda s: None if s == "auto" else int(s), default=None,
                        help="decode workers of `stitch embed`: N or auto (its default)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--try", dest="tries", default="", help="bf16,compile,onnx")
    parser.add_argument("--runtime", default="auto", help="what the stage figures run: auto | torch | onnx")
    parser.add_argument("--runtimes", default="", help="torch,onnx: time `stitch embed` on each, interleaved")
    parser.add_argument("--only-runtimes", action="store_true", help="with --runtimes: skip the stage figures")
    parser.add_argument("--no-runtime-forward", action="store_true",
                        help="with --runtimes: time the pipeline only, not the forward alone")
    parser.add_argument("--vs-forward", action="store_true",
                        help="only `stitch embed`'s marginal rate vs its bare forward, per model, runtime and tokens")
    parser.add_argument("--models", default="lite0,lite2", help="with --vs-forward")
    parser.add_argument("--seconds", type=float, default=6.0,
                        help="with --vs-forward: about how long the larger run goes beyond the 128-image one")
    parser.add_argument("--json", dest="json_out", default=None)
    args = parse_args(parser, smoke={"n": 8, "n_texts": 8, "batch_size": 4, "repeats": 1, "seconds": 0.5,
                                     "models": "lite0"})
    threads = torch.get_num_threads()
    workers = "auto" if args.workers is None else str(args.workers)  # as printed
    print_header("embed_throughput", model=args.model, images=args.n, torch_threads=threads)
    if args.vs_forward:
        runtimes = [r.strip() for r in (args.runtimes or "onnx,torch").split(",") if r.strip()]
        rows = vs_forward([m.strip() for m in args.models.split(",")], runtimes, args.batch_size, args.workers,
                          args.repeats, args.seconds, small=2 * args.batch_size)
        if args.json_out:
            Path(args.json_out).write_text(json.dumps(rows, indent=1))
        print_vs_forward(rows, args.batch_size, threads, workers)
        return
    report: dict[str, Any] = {"threads": threads, "batch_size": args.batch_size, "workers": args.workers,
                              "model": args.model, "n_images": args.n, "load_avg_start": os.getloadavg()[0]}
    items = kermany_items(args.n)
    runtimes = [r.strip() for r in args.runtimes.split(",") if r.strip()]
    if runtimes:
        report["runtimes"] = compare_runtimes(args.model, items, args.batch_size, args.workers,
                                              args.repeats, runtimes, forward=not args.no_runtime_forward)
        if args.only_runtimes:
            print(json.dumps(report, indent=1))
            if args.json_out:
                Path(args.json_out).write_text(json.dumps(report, indent=1))
            print_runtimes(args.model, len(items), args.batch_size, threads, workers, report["runtimes"])
            return
    encoder = load_encoder(args.model, runtime=args.runtime)
    report["runtime"] = encoder.runtime
    own = BARE_OWN
    batches = ready_batches(encoder, items, args.batch_size)
    nchw = eager_nchw(encoder)
    runs: dict[str, list[float]] = {}
    stages: dict[str, list[dict[str, float]]] = {"image": [], "image+tokens": []}
    ref = None
    shard_dir = tempfile.TemporaryDirectory()
    tars = write_tars(items, Path(shard_dir.name))
    for _ in range(args.repeats):  # interleaved: drift on a shared machine hits all alike
        rate, ref = forward_rate(nchw, batches)
        runs.setdefault("bare eager NCHW", []).append(rate)
        rate, _ = forward_rate(lambda b: encoder.encode(b).embeddings, batches)
        runs.setdefault(own, []).append(rate)
        runs.setdefault("stitch embed pipeline", []).append(pipeline(encoder, items, "image", args.batch_size, args.workers, False))
        runs.setdefault("stitch embed --tokens pipeline", []).append(pipeline(encoder, items, "image", args.batch_size, args.workers, True))
        runs.setdefault("stitch embed pipeline, WebDataset shards", []).append(webdataset_pipeline(encoder, tars, args.batch_size, args.workers))
        stages["image"].append(image_stages(encoder, items, args.batch_size, False))
        stages["image+tokens"].append(image_stages(encoder, items, args.batch_size, True))
    shard_dir.cleanup()
    best = {k: max(v) for k, v in runs.items()}
    report["images_per_s"] = {k: {"best": best[k], "runs": v} for k, v in runs.items()}
    report["stages_images_per_s"] = {k: {s: max(r[s] for r in v) for s in v[0]} for k, v in stages.items()}
    report["ratio_pipeline_vs_eager_nchw"] = best["stitch embed pipeline"] / best["bare eager NCHW"]
    report["ratio_pipeline_vs_encoder_forward"] = best["stitch embed pipeline"] / best[own]
    report["ratio_webdataset_pipeline_vs_encoder_forward"] = (
        best["stitch embed pipeline, WebDataset shards"] / best[own])
    report["ratio_tokens_pipeline_vs_eager_nchw"] = best["stitch embed --tokens pipeline"] / best["bare eager NCHW"]
    if args.text_model:
        texts = iu_items(args.n_texts)
        tenc = load_encoder(args.text_model)
        trun: dict[str, list[float]] = {}
        tstages = []
        for _ in range(args.repeats):
            with torch.inference_mode():
                tenc.encode([t.text for t in texts[:args.batch_size]])
                s, _ = timed(lambda: [tenc.encode(b) for b in batched([t.text for t in texts], args.batch_size)])
            trun.setdefault("bare encoder (tokenise + forward)", []).append(len(texts) / s)
            trun.setdefault("stitch embed pipeline", []).append(pipeline(tenc, texts, "text", args.batch_size, 0, False))
            tstages.append(text_stages(tenc, texts, args.batch_size, False))
        report["texts"] = {"model": args.text_model, "n": len(texts),
                           "texts_per_s": {k: {"best": max(v), "runs": v} for k, v in trun.items()},
                           "stages_texts_per_s": {s: max(r[s] for r in tstages) for s in tstages[0]},
                           "ratio_pipeline_vs_bare": max(trun["stitch embed pipeline"])
                           / max(trun["bare encoder (tokenise + forward)"])}
    if args.tries:
        report["candidates"] = candidates(args.model, encoder, batches, ref,
                                          [t.strip() for t in args.tries.split(",") if t.strip()])
    report["load_avg_end"] = os.getloadavg()[0]
    print(json.dumps(report, indent=1))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=1))
    print(f"\n{args.model} ({encoder.runtime}), {len(items)} Kermany images, batch {args.batch_size}, {threads} threads, "
          f"--workers {workers}")
    print("| what | images/s |\n|---|---|")
    for k, v in best.items():
        print(f"| {k} | {v:.1f} |")
    for k, v in report["stages_images_per_s"].items():
        print(f"| stage, {k}: " + ", ".join(f"{s} {r:,.0f}" for s, r in v.items()) + " | |")
    print_ratio("stitch embed pipeline / eager NCHW forward (images/s)", report["ratio_pipeline_vs_eager_nchw"])
    print_ratio("stitch embed pipeline / encoder forward (images/s)", report["ratio_pipeline_vs_encoder_forward"])
    if "texts" in report:
        print_ratio(f"stitch embed pipeline / bare encoder, {args.text_model} (texts/s)",
                    report["texts"]["ratio_pipeline_vs_bare"])
    if runtimes:
        print_runtimes(args.model, len(items), args.batch_size, threads, workers, report["runtimes"])


if __name__ == "__main__":
    main()
