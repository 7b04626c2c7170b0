"""Head training and head scoring at scale, on synthetic Lite2-shaped token stores.

Builds under --dir (reused when present): for each size N, an image store of N rows shaped as
Lite2's (81 tokens x 1280, float16, and 1280-d globals) and a matching MiniLM-shaped text store
(384-d globals, up to 32 word tokens with a mask), both written by the store's own writer
(stitchkit.store.StoreWriter). Tokens are rows of a fixed random pool; the globals of a pair
share a latent code. 100,000 pairs are about 24 GB; 20,000 + 100,000 + 5,216 about 30 GB.

Then, each measurement in a child process of its own, so that each one's peak memory (VmHWM
from /proc: benchmarks/common.py says why not ru_maxrss) is its own:

* **train N**: `stitch head train`'s loop (stitchkit.head.train.Trainer: streaming loader,
  background thread) for --steps steps after --warmup steps, then one validation pass; the
  seconds per step give one epoch, *extrapolated* (steps per epoch x seconds per step +
  the validation pass), and the set-up (join, checks, the fingerprint that reads every row
  once before the first step) is shown apart, not in the epoch;
* **ratio**: at --ratio-size pairs, the same steps on the same batches, interleaved: the
  loader's batches already in memory (tokens float16 as stored, converted in the step as
  streaming does), the same converted to float32 beforehand (pure compute), the streaming
  loader, and the loop as it was before the loader (a full shuffle, each batch's rows read in
  the training thread, the globals held in memory). Ratios are throughputs against the first;
  the held batches take 13 MB each (--ratio-steps), which is what fits, not the whole set;
* **before/after**: at --compare-size pairs (default 5,216, Kermany's train split), one full
  epoch of the loop before the loader against one with it, interleaved --repeats times;
* **score R**: head scoring of R query rows with tokens against 14 classes (stitchkit's
  classify_store, scores written to HDF5), rows/s and peak memory, against the head's bare
  forward (``Head.score``) on one block of as many rows as classify's blocks, already in memory
  as float32, warm, the median of three; a projection to 1,000,000 rows, labelled so.

Finally a projection of one epoch at 377,110 pairs from the largest size's step time. The
verdicts are the ``ratio:`` lines (streaming / in memory, after / before, scoring / bare forward).

    python benchmarks/head_scale.py                       # 20,000 and 100,000 pairs, /tmp/head-scale
    python benchmarks/head_scale.py --sizes 600 1200 --steps 8 --ratio-size 600 --ratio-steps 6 \\
        --compare-size 400 --score-rows 500 1000 --dir /tmp/hs-tiny   # a small run (a few minutes)
    python benchmarks/head_scale.py --sizes 50000 --no-train --ratio-size 0 --compare-size 0 \
        --score-rows 50000 --dir /tmp/hs50k                # head scoring alone (12 GB of stores)
    python benchmarks/head_scale.py --sizes 50000 --no-train --ratio-size 0 --compare-size 0 \
        --score-rows 50000 --image-tokens 16 --dir /tmp/hs50k  # rows of 16 tokens (--token-grid 4x4)
    python benchmarks/head_scale.py --smoke               # 64 pairs, a step of 32, temporary (seconds)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import (
    child_json,
    parse_args,
    peak_rss_mb,
    print_header,
    print_ratio,
    set_threads,
    workdir,
)

T_IMG, D_IMG, T_TXT, D_TXT = 81, 1280, 32, 384
IMG = {"model_spec": "synthetic-lite2", "weights_sha256": "lite2-shaped"}
TXT = {"model_spec": "synthetic-minilm", "weights_sha256": "minilm-shaped"}
CXR14 = ["atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia",
         "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis", "pleural thickening", "hernia"]
BLOCK = 256  # rows generated and appended at a time
MIMIC_PAIRS = 377_110


# -- stores ------------------------------------------------------------------------------------
def store_ok(path: Path, n: int, token_shape: tuple[int, int]) -> bool:
    from stitchkit.errors import StitchError
    from stitchkit.store import EmbeddingStore

    if not path.exists():
        return False
    try:
        with EmbeddingStore(path) as s:
            return len(s) == n and s.token_shape == token_shape
    except StitchError:
        return False


def write_pair_stores(folder: Path, n: int, seed: int = 0) -> tuple[Path, Path]:
    """Image (Lite2-shaped) and text (MiniLM-shaped) stores of ``n`` pairs whose globals share a
    latent code (a head has something to learn); tokens are rows of a fixed random pool (fast to
    make: this measures reading and compute, not what the head learns from tokens)."""
    from stitchkit.store import StoreWriter
    from stitchkit.store.store import base_attrs

    img, txt = pair_paths(folder, n)
    if store_ok(img, n, (T_IMG, D_IMG)) and store_ok(txt, n, (T_TXT, D_TXT)):
        return img, txt
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pool = rng.normal(size=(97, T_IMG, D_IMG)).astype(np.float16)
    word_pool = rng.normal(size=(31, T_TXT, D_TXT)).astype(np.float16)
    pool_mean = pool.astype(np.float32).mean(axis=1)
    to_img, to_txt = rng.normal(size=(16, D_IMG)).astype(np.float32), rng.normal(size=(16, D_TXT)).astype(np.float32)
    with StoreWriter(img, dim=D_IMG, attrs=base_attrs(modality="image", **IMG), token_shape=(T_IMG, D_IMG),
                     expected_rows=n) as wi, \
            StoreWriter(txt, dim=D_TXT, attrs=base_attrs(modality="text", **TXT), token_shape=(T_TXT, D_TXT),
                        expected_rows=n) as wt:
        for a in range(0, n, BLOCK):
            b = min(a + BLOCK, n)
            ids = [f"p{i:07d}" for i in range(a, b)]
            z = rng.normal(size=(b - a, 16)).astype(np.float32)
            at = np.arange(a, b)
            wi.append(ids, pool_mean[at % 97] + z @ to_img, tokens=pool[at % 97],
                      tokens_mask=np.ones((b - a, T_IMG), bool))
            mask = np.arange(T_TXT)[None, :] < rng.integers(6, T_TXT + 1, size=(b - a, 1))
            wt.append(ids, (z @ to_txt).astype(np.float32), tokens=word_pool[at % 31] * mask[..., None],
                      tokens_mask=mask)
    return img, txt


def tokens_suffix() -> str:
    """Stores and heads with another token count than Lite2's 81 (--image-tokens) are named apart."""
    return "" if T_IMG == 81 else f"-t{T_IMG}"


def pair_paths(folder: Path, n: int) -> tuple[Path, Path]:
    return folder / f"img-{n}{tokens_suffix()}.h5", folder / f"txt-{n}{tokens_suffix()}.h5"


# -- child processes ---------------------------------------------------------------------------
def child(task: str, **kw: Any) -> dict[str, Any]:
    """Run ``task`` in a fresh interpreter; its last stdout line is its JSON result."""
    return child_json(__file__, "--worker", json.dumps({"task": task, **kw}))


def worker(spec: dict[str, Any]) -> None:
    global T_IMG
    threads, task, T_IMG = spec.pop("threads"), spec.pop("task"), spec.pop("image_tokens")
    if task != "make":  # writing the stores needs no torch
        set_threads(threads)
    result = {"make": task_make, "train": task_train, "ratio": task_ratio, "compare": task_compare,
              "score": task_score}[task](**spec)
    print(json.dumps({"peak_rss_mb": peak_rss_mb(), **result}))  # a task may report the peak of its own part


def task_make(folder: str, n: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    img, txt = write_pair_stores(Path(folder), n)
    return {"seconds": time.perf_counter() - t0, "bytes": img.stat().st_size + txt.stat().st_size}


# -- training ----------------------------------------------------------------------------------
def trainer_for(folder: str, n: int, batch_size: int, ckpt_dir: Path, device: str = "cpu",
                precision: str = "fp32") -> Any:
    from stitchkit.head import ComputeOptions, HeadConfig, TrainConfig
    from stitchkit.head.train import Trainer, load_pairs

    img, txt = pair_paths(Path(folder), n)
    cfg = TrainConfig(min_steps=0, head=HeadConfig(), batch_size=batch_size, epochs=1, precision=precision,
                      seed=0)
    t0 = time.perf_counter()
    pairs = load_pairs([(img, txt)], cfg)
    t1 = time.perf_counter()
    trainer = Trainer(pairs, cfg, ComputeOptions(device=device), ckpt_dir / f"bench-{n}.head")
    trainer.setup_seconds = {"load_and_check": t1 - t0, "fingerprint": time.perf_counter() - t1}
    return trainer


def timed_steps(trainer: Any, source: Any, steps: int, warmup: int) -> float:
    """Seconds per step over ``steps`` steps after ``warmup`` (batches from ``source``; each
    step ends with ``loss.item()``, which waits for a GPU)."""
    it = iter(source)
    try:
        for s in range(warmup):
            trainer.step(next(it), trainer.train_part[2], s)
        t0 = time.perf_counter()
        for s in range(steps):
            trainer.step(next(it), trainer.train_part[2], warmup + s)
        return (time.perf_counter() - t0) / steps
    finally:
        if hasattr(it, "close"):
            it.close()  # stops the loader thread of a streamed source


def epoch_batches(trainer: Any, epoch: int) -> Any:
    """The batches of one epoch, read in this thread."""
    from stitchkit.head.stream import Shuffle, batches, epoch_order

    img, txt, _ = trainer.train_part
    cfg = trainer.cfg
    order = epoch_order(len(img), Shuffle(cfg.shuffle_block, cfg.shuffle_buffer), trainer.seed, epoch)
    return batches(img, txt, order, trainer.spec)


def streamed(trainer: Any) -> Any:
    """Batches epoch after epoch, each epoch's read by the loader thread as training reads them."""
    from stitchkit.head.stream import Prefetch

    epoch = 0
    while True:
        with Prefetch(epoch_batches(trainer, epoch), trainer.spec.depth) as loader:
            yield from loader
        epoch += 1


def as_float32(batch: Any) -> Any:
    """A batch with its tokens converted ahead (what the training thread otherwise converts)."""
    from dataclasses import replace

    def side(part: tuple) -> tuple:
        return tuple(None if t is None else (t.float() if t.is_floating_point() else t) for t in part)

    return replace(batch, image=side(batch.image), text=side(batch.text))


def held_batches(trainer: Any, count: int) -> list[Any]:
    """The first ``count`` batches of ``streamed``, read into memory first."""
    out: list[Any] = []
    epoch = 0
    while len(out) < count:
        out.extend(b for b, _ in zip(epoch_batches(trainer, epoch), range(count - len(out)), strict=False))
        epoch += 1
    return out


def task_train(folder: str, n: int, batch_size: int, steps: int, warmup: int, validate: bool,
               device: str = "cpu", precision: str = "fp32") -> dict[str, Any]:
    import tempfile

    from stitchkit.head.train import validation_metrics

    with tempfile.TemporaryDirectory() as tmp:
        trainer = trainer_for(folder, n, batch_size, Path(tmp), device, precision)
        trainer.model.train()
        per_step = timed_steps(trainer, streamed(trainer), steps, warmup)
        val_s = None
        if validate:
            t0 = time.perf_counter()
            validation_metrics(trainer.model, *trainer.val_part, trainer.cfg)
            val_s = time.perf_counter() - t0
    return {"n": n, "device": str(trainer.dev), "precision": precision, "per_step": per_step,
            "steps_per_epoch": trainer.steps_per_epoch, "n_val": len(trainer.pairs.va_rows),
            "validation_s": val_s, **trainer.setup_seconds}


class OldLoop:
    """The loop before the streaming loader: a full permutation per epoch, and each batch's
    rows read in the training thread (tokens by runs of rows, globals held in memory)."""

    def __init__(self, trainer: Any, epoch: int = 0) -> None:
        img, txt, _ = trainer.train_part
        self.img, self.txt = self._globals_held(img), self._globals_held(txt)
        self.cfg = trainer.cfg
        self.perm = np.random.default_rng([trainer.seed, epoch]).permutation(len(img))

    @staticmethod
    def _globals_held(side: Any) -> Any:
        from dataclasses import replace

        return replace(side, glob=side.read_glob(slice(0, len(side))))

    @staticmethod
    def _side(side: Any, rows: np.ndarray, use_tokens: bool) -> tuple:
        import torch

        g = torch.from_numpy(side.glob[rows])
        if not use_tokens or side.tokens is None:
            return g, None, None
        tok, mask = side.tokens[rows], side.mask[rows]
        t = int(mask.any(axis=0).nonzero()[0].max()) + 1 if mask.any() else 1
        return g, torch.from_numpy(tok[:, :t].astype(np.float32)), torch.from_numpy(mask[:, :t])

    def __iter__(self) -> Any:
        from stitchkit.head.stream import Batch

        bs = self.cfg.batch_size
        for s in range(len(self.perm) // bs):
            rows = self.perm[s * bs:(s + 1) * bs]
            yield Batch(rows, self._side(self.img, rows, self.cfg.image_tokens),
                        self._side(self.txt, rows, self.cfg.text_tokens))


def old_loop(trainer: Any) -> Any:
    """``OldLoop`` epoch after epoch."""
    epoch = 0
    while True:
        yield from OldLoop(trainer, epoch)
        epoch += 1


def fresh(trainer: Any, state: dict[str, Any]) -> None:
    """The same initial weights and a new optimiser: every timed run starts alike."""
    import torch

    trainer.model.load_state_dict(state)
    trainer.opt = torch.optim.AdamW(trainer.model.parameters(), lr=trainer.cfg.lr,
                                    weight_decay=trainer.cfg.weight_decay)


def task_ratio(folder: str, n: int, batch_size: int, steps: int, warmup: int, repeats: int) -> dict[str, Any]:
    import copy
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        trainer = trainer_for(folder, n, batch_size, Path(tmp))
        trainer.model.train()
        init = copy.deepcopy(trainer.model.state_dict())
        held = held_batches(trainer, warmup + steps)
        f32 = [as_float32(b) for b in held]
        runs: dict[str, list[float]] = {"in memory": [], "in memory, float32": [], "streaming": [],
                                        "before (rows read per batch)": []}
        for _ in range(repeats):
            for name in runs:
                fresh(trainer, init)
                if name == "in memory":
                    runs[name].append(timed_steps(trainer, held, steps, warmup))
                elif name == "in memory, float32":
                    runs[name].append(timed_steps(trainer, f32, steps, warmup))
                elif name == "streaming":
                    runs[name].append(timed_steps(trainer, streamed(trainer), steps, warmup))
                else:
                    runs[name].append(timed_steps(trainer, old_loop(trainer), steps, warmup))
    return {"n": n, "per_step": runs}


def task_compare(folder: str, n: int, batch_size: int, repeats: int) -> dict[str, Any]:
    """One full epoch before and after the loader, interleaved (no validation pass: it is the
    same code in both)."""
    import copy
    import tempfile

    from stitchkit.head.stream import Prefetch

    with tempfile.TemporaryDirectory() as tmp:
        trainer = trainer_for(folder, n, batch_size, Path(tmp))
        trainer.model.train()
        init = copy.deepcopy(trainer.model.state_dict())
        spe = trainer.steps_per_epoch
        runs: dict[str, list[float]] = {"before": [], "after": []}
        for _ in range(repeats):
            for name in runs:
                fresh(trainer, init)
                t0 = time.perf_counter()
                if name == "after":
                    with Prefetch(epoch_batches(trainer, 0), trainer.spec.depth) as loader:
                        for s, batch in enumerate(loader):
                            trainer.step(batch, trainer.train_part[2], s)
                else:
                    for s, batch in enumerate(OldLoop(trainer)):
                        trainer.step(batch, trainer.train_part[2], s)
                runs[name].append(time.perf_counter() - t0)
    return {"n": n, "steps": spe, "epoch_s": runs}


# -- scoring -----------------------------------------------------------------------------------
def score_inputs(folder: Path) -> tuple[Path, Path]:
    """A head (random weights, the default shape, token head) and a 14-class prompt store."""
    import torch

    from stitchkit.head import Head, HeadConfig
    from stitchkit.head.model import CrossAttentionHead
    from stitchkit.store import StoreWriter
    from stitchkit.store.store import base_attrs

    head, prompts = folder / f"score{tokens_suffix()}.head", folder / "prompts-14.h5"
    if not head.exists():
        torch.manual_seed(0)
        Head(CrossAttentionHead(D_IMG, D_TXT, HeadConfig()), image_space={**IMG, "dim": D_IMG},
             text_space={**TXT, "dim": D_TXT},
             meta={"image_tokens": True, "text_tokens": True, "image_token_count": T_IMG}).save(head)
    if not prompts.exists():
        rng = np.random.default_rng(1)
        texts = [f"There is {c}." for c in CXR14]
        with StoreWriter(prompts, dim=D_TXT, attrs=base_attrs(modality="text", **TXT), columns=["texts"],
                         token_shape=(T_TXT, D_TXT)) as w:
            w.append([f"c{i}" for i in range(14)], rng.normal(size=(14, D_TXT)).astype(np.float32),
                     columns={"texts": texts}, tokens=rng.normal(size=(14, T_TXT, D_TXT)),
                     tokens_mask=np.arange(T_TXT)[None, :] < 8 + np.arange(14)[:, None])
    return head, prompts


def task_score(folder: str, n_store: int, rows: int, device: str = "cpu") -> dict[str, Any]:
    from stitchkit.head import Head
    from stitchkit.maps.tokens import rows_per_chunk
    from stitchkit.store import EmbeddingStore
    from stitchkit.zeroshot.classify_plan import ClassifyOptions
    from stitchkit.zeroshot.prompt_cache import embed_prompts
    from stitchkit.zeroshot.prompts import from_classes
    from stitchkit.zeroshot.scoring import classify_store

    work = Path(folder)
    head, prompt_store = score_inputs(work)
    query = pair_paths(work, n_store)[0]
    with EmbeddingStore(query) as s:
        ids = list(s.ids[:rows])
    prompts = from_classes(CXR14, mode="multiclass")
    out = work / f"scores-{rows}.h5"
    t0, c0 = time.perf_counter(), time.process_time()
    res = classify_store(query, prompts, prompt_store=prompt_store, head_path=head, ids=ids, output=out,
                         bootstrap=0, device=device)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = peak_rss_mb()  # classify's peak, before the bare forward below adds its block
    # The head's bare forward on one block of rows already in memory (float32), as many rows as
    # classify's blocks hold (its default chunk size, bounded for tokens), warm, median of 3.
    h, text = Head.load(head).to(res.device), embed_prompts(prompts.texts(), prompt_store=prompt_store, tokens=True)
    with EmbeddingStore(query) as s:
        block = np.arange(min(rows, rows_per_chunk(s.token_shape, s.token_shape[1], ClassifyOptions().chunk_size)))
        glob, (tok, mask) = s.read(block), s.read_tokens(block)
    h.score(glob, text.glob, tok, mask, text.tokens, text.mask)  # warm-up
    times, cpus = [], []
    for _ in range(3):
        t1, c1 = time.perf_counter(), time.process_time()
        h.score(glob, text.glob, tok, mask, text.tokens, text.mask)
        times.append(time.perf_counter() - t1)
        cpus.append(time.process_time() - c1)
    bare, bare_cpu = len(block) / float(np.median(times)), len(block) / float(np.median(cpus))
    out.unlink(missing_ok=True)
    return {"rows": res.n, "device": res.device, "seconds": wall, "rows_per_s": res.n / wall,
            "bare_rows_per_s": bare, "bare_block": len(block), "peak_rss_mb": peak,
            "rows_per_cpu_s": res.n / cpu, "bare_rows_per_cpu_s": bare_cpu}


# -- the report --------------------------------------------------------------------------------
def mb(x: float) -> str:
    return f"{x:,.0f} MB"


def report_train(results: list[dict[str, Any]], batch_size: int) -> None:
    print("\nhead training, streaming loader (Trainer.step over Prefetch(batches(...))):")
    print(f"  {'pairs':>8} {'device':>7} {'s/step':>7} {'steps/epoch':>11} {'epoch s (extrapolated)':>23} "
          f"{'validation s':>12} {'fingerprint s':>13} {'peak RSS':>10}")
    for r in results:
        epoch = r["per_step"] * r["steps_per_epoch"] + (r["validation_s"] or 0)
        print(f"  {r['n']:>8,} {r['device']:>7} {r['per_step']:>7.3f} {r['steps_per_epoch']:>11,} "
              f"{epoch:>23,.0f} {(r['validation_s'] or 0):>12.1f} {r['fingerprint']:>13.1f} "
              f"{mb(r['peak_rss_mb']):>10}")
    for dev in dict.fromkeys(r["device"] for r in results):
        mine = [r for r in results if r["device"] == dev]
        a, b = mine[0], mine[-1]
        if len(mine) > 1:
            print(f"  {dev}: peak memory {b['n']:,} / {a['n']:,} pairs: {b['peak_rss_mb'] / a['peak_rss_mb']:.2f}x "
                  f"(goal <= 1.1), largest {b['peak_rss_mb'] / 1024:.2f} GB (goal <= 2)")
        spe = (MIMIC_PAIRS - round(MIMIC_PAIRS * 0.1)) // batch_size
        val = (b["validation_s"] or 0) * MIMIC_PAIRS / b["n"]  # the loss pass grows with the pairs
        print(f"  {dev}: PROJECTION (not measured), one epoch at {MIMIC_PAIRS:,} pairs from the "
              f"{b['n']:,}-pair step time: {spe:,} steps x {b['per_step']:.3f} s + validation "
              f"~{val:,.0f} s = {(spe * b['per_step'] + val) / 3600:.2f} h")
    cpu = {r["n"]: r["per_step"] for r in results if r["device"] == "cpu"}
    for r in results:
        if r["device"] != "cpu" and r["n"] in cpu:
            print_ratio(f"{r['device']} / cpu steps per second at {r['n']:,} pairs", cpu[r["n"]] / r["per_step"])


def report_ratio(ratio: dict[str, Any]) -> None:
    runs = ratio["per_step"]
    base = min(runs["in memory"])
    print(f"\nthroughput against the same steps on the same batches already in memory "
          f"({ratio['n']:,} pairs, best of {len(runs['in memory'])}, s/step in brackets):")
    for name, times in runs.items():
        print(f"  {name:<30} {base / min(times):.3f}  [{', '.join(f'{t:.3f}' for t in times)}]")
    print("  goal: streaming >= 0.9 of 'in memory' (the loader's batches, tokens float16 as stored and\n"
          "  converted in the step, as streaming does); 'in memory, float32' converted them beforehand")
    print_ratio("streaming / in memory (throughput)", base / min(runs["streaming"]), goal=">= 0.9")


def report_compare(c: dict[str, Any]) -> None:
    before, after = min(c["epoch_s"]["before"]), min(c["epoch_s"]["after"])
    print(f"\none epoch at {c['n']:,} pairs ({c['steps']} steps, best of {len(c['epoch_s']['after'])}, "
          f"no validation): before {before:.1f} s, after {after:.1f} s: after / before {after / before:.3f} "
          f"(runs: before {[round(t, 1) for t in c['epoch_s']['before']]}, "
          f"after {[round(t, 1) for t in c['epoch_s']['after']]})")
    print_ratio("one epoch after / before the loader", after / before)


def report_scores(scored: list[dict[str, Any]], store_n: int) -> None:
    print(f"\nhead scoring with tokens, 14 classes (query rows of the {store_n:,}-row store):")
    for s in scored:
        print(f"  {s['rows']:>8,} rows on {s['device']}: {s['seconds']:.1f} s, {s['rows_per_s']:.0f} rows/s "
              f"({s['rows_per_s'] / s['bare_rows_per_s']:.2f} of the bare forward, {s['bare_rows_per_s']:.0f} rows/s "
              f"on {s['bare_block']} rows), "
              f"peak RSS {mb(s['peak_rss_mb'])}")
        print(f"    CPU seconds (all threads): {s['rows_per_cpu_s']:.0f} rows per CPU s against the bare forward's "
              f"{s['bare_rows_per_cpu_s']:.0f}: {s['rows_per_cpu_s'] / s['bare_rows_per_cpu_s']:.2f} (less swayed by "
              "other jobs than wall time)")
        print_ratio(f"scoring / bare forward ({s['rows']:,} rows, {s['device']})",
                    s["rows_per_s"] / s["bare_rows_per_s"])
    for dev in dict.fromkeys(s["device"] for s in scored):
        mine = [s for s in scored if s["device"] == dev]
        first, last = mine[0], mine[-1]
        print(f"  {dev}: PROJECTION to 1,000,000 rows at {last['rows_per_s']:.0f} rows/s: "
              f"{1e6 / last['rows_per_s'] / 60:.0f} min, memory as measured (from {first['rows']:,} to "
              f"{last['rows']:,} rows: {last['peak_rss_mb'] / first['peak_rss_mb']:.2f}x)")


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20000, 100000])
    parser.add_argument("--dir", default="/tmp/head-scale", help="the stores (reused when present)")
    parser.add_argument("--devices", nargs="+", default=["cpu"], help="train and score on each (cpu, cuda)")
    parser.add_argument("--precision", default="fp32", help="training precision (fp32, bf16, fp16)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=100, help="timed training steps per size")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ratio-size", type=int, default=20000, help="pairs for the in-memory ratio (0: skip)")
    parser.add_argument("--ratio-steps", type=int, default=40,
                        help="timed steps of the ratio runs (their batches are held in memory: 13 MB each)")
    parser.add_argument("--compare-size", type=int, default=5216, help="pairs for before/after (0: skip)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--score-rows", type=int, nargs="*", default=[10000, 50000])
    parser.add_argument("--no-validate", action="store_true", help="skip the validation pass per size")
    parser.add_argument("--no-train", action="store_true", help="skip the training runs (e.g. to time scoring alone)")
    parser.add_argument("--image-tokens", type=int, default=T_IMG,
                        help="tokens a row (81: Lite2's 9x9; 16: a store embedded with --token-grid 4x4)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parse_args(parser, smoke={"sizes": [64], "dir": None, "batch_size": 32, "steps": 1, "warmup": 1,
                                     "ratio_size": 64, "ratio_steps": 1, "compare_size": 64, "repeats": 1,
                                     "score_rows": [32]})


def main() -> None:
    args = parse()
    if args.worker:
        return worker(json.loads(args.worker))
    with workdir(args.dir, prefix="head-scale-") as folder:  # --smoke: a temporary folder
        run(args, folder)


def run(args: argparse.Namespace, folder: Path) -> None:
    shared = {"folder": str(folder), "threads": args.threads, "image_tokens": args.image_tokens}
    print_header("head_scale", torch_threads=args.threads, batch=args.batch_size, image_tokens=args.image_tokens)
    for n in sorted({*args.sizes, *(s for s in (args.ratio_size, args.compare_size) if s)}):
        made = child("make", n=n, **shared)
        print(f"stores of {n:,} pairs: {made['bytes'] / 1e9:.1f} GB on disk ({made['seconds']:.0f} s to write or check)")
    if not args.no_train:
        report_train([child("train", n=n, batch_size=args.batch_size, steps=args.steps, warmup=args.warmup,
                            validate=not args.no_validate, device=dev, precision=args.precision, **shared)
                      for n in args.sizes for dev in args.devices], args.batch_size)
    if args.ratio_size:
        report_ratio(child("ratio", n=args.ratio_size, batch_size=args.batch_size, steps=args.ratio_steps,
                           warmup=args.warmup, repeats=args.repeats, **shared))
    if args.compare_size:
        report_compare(child("compare", n=args.compare_size, batch_size=args.batch_size, repeats=args.repeats,
                             **shared))
    if args.score_rows:
        store_n = max(args.sizes)
        report_scores([child("score", n_store=store_n, rows=min(r, store_n), device=dev, **shared)
                       for dev in args.devices for r in args.score_rows], store_n)


if __name__ == "__main__":
    main()
