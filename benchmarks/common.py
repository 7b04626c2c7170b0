"""What the benchmark scripts share: peak memory, the machine's header line, timing, the ratio
line, the data folder, child processes, work folders, the ``--smoke`` switch and small real
stores for smoke runs.

How the scripts import it: ``import common`` (or ``from common import ...``). A script run as
``python benchmarks/X.py`` has its own folder first on ``sys.path`` (Python puts it there), and so
has every child a script starts as ``[sys.executable, __file__, ...]``; nothing edits the path.

Importing this module sets ``HF_HUB_OFFLINE`` and ``TRANSFORMERS_OFFLINE`` (unless already set):
the benchmarks run on the packaged models, and without them a hub lookup retries for about
48 s before it fails (../shared/MODELS.md). Import it before anything that imports a model
library.

Each script's ``--smoke`` runs its smallest real input in seconds (tests/test_benchmarks_smoke.py
runs them all); its figures prove the script runs, they measure nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

BENCHMARKS = Path(__file__).resolve().parent
ROOT = BENCHMARKS.parent

SMOKE_HELP = ("the smallest real run (seconds, temporary files): proves the script runs; its "
              "figures measure nothing")


# -- memory --------------------------------------------------------------------------------------
def peak_rss_mb() -> float:
    """This process's peak resident memory in MB: ``VmHWM`` from /proc/self/status.

    Not ``getrusage(RUSAGE_SELF).ru_maxrss``: on Linux a process started by fork + exec keeps
    its parent's ``ru_maxrss`` across the exec, so a child of a large parent (a benchmark holding
    arrays, a test runner) reports the parent's peak instead of its own. ``VmHWM`` belongs to the
    process image that reads it. ``ru_maxrss`` remains the fallback where /proc is missing (not
    Linux), where it is the best there is.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux and BSD
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale / 1024


# -- the machine ---------------------------------------------------------------------------------
def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as ``a/b/c``."""
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def memory_gb() -> float:
    """The machine's memory (MemTotal), in GB; 0 where /proc/meminfo is missing."""
    try:
        with open("/proc/meminfo") as fh:
            kb = next((int(line.split()[1]) for line in fh if line.startswith("MemTotal")), 0)
    except OSError:
        kb = 0
    return kb / 2**20


def print_header(what: str, **facts: Any) -> None:
    """One line a run starts with: what it measures, when, on what, and the load beside it
    (the project's machines are shared: the ratios in the same run are what count)."""
    extra = "".join(f", {k.replace('_', ' ')} {v}" for k, v in facts.items())
    print(f"{what}: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, {os.cpu_count()} CPUs, "
          f"{memory_gb():.0f} GB memory, load average {load_average()}{extra}", flush=True)


def print_load(when: str = "at the end") -> None:
    print(f"load average {when}: {load_average()}", flush=True)


def set_threads(n: int) -> None:
    """torch's threads, and the OpenMP default of the children this process starts."""
    os.environ.setdefault("OMP_NUM_THREADS", str(n))
    import torch

    torch.set_num_threads(n)


# -- timing and results --------------------------------------------------------------------------
def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(wall seconds, result) of ``fn()``."""
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def timed_cpu(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """(wall seconds, CPU seconds of this process, result) of ``fn()``: CPU time is what sharing
    the machine distorts least, so show it beside the wall time."""
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w0, time.process_time() - c0, out


def print_ratio(what: str, value: float, detail: str = "", goal: str = "") -> None:
    """The line a benchmark's verdict is read from: ``ratio: WHAT = 1.234 (DETAIL; goal GOAL)``."""
    notes = "; ".join(x for x in (detail, f"goal {goal}" if goal else "") if x)
    print(f"ratio: {what} = {value:.3f}" + (f" ({notes})" if notes else ""), flush=True)


def print_result(text: str) -> None:
    """The verdict of a benchmark that checks rather than compares: ``result: TEXT``."""
    print(f"result: {text}", flush=True)


# -- arguments, folders, children ----------------------------------------------------------------
def parse_args(parser: argparse.ArgumentParser, smoke: dict[str, Any],
               argv: list[str] | None = None) -> argparse.Namespace:
    """Add ``--smoke`` and parse. Under ``--smoke`` the defaults become ``smoke`` (the smallest
    real run); flags given on the command line still win."""
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = parser.parse_args(argv)
    if args.smoke:
        parser.set_defaults(**smoke)
        args = parser.parse_args(argv)
    return args


@contextlib.contextmanager
def workdir(path: str | os.PathLike | None, prefix: str = "stitchkit-bench-") -> Iterator[Path]:
    """``path``, created and kept; None: a temporary folder, removed afterwards. Never the
    repository: the benchmarks write generated data only where they are told to."""
    if path is not None:
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)


def child_json(script: str | os.PathLike, *args: str, python: str | None = None,
               env: dict[str, str] | None = None, strict: bool = True) -> dict[str, Any]:
    """Run ``python script ARGS`` in a fresh interpreter (its peak memory is its own) and return
    the JSON object on the last line of its stdout. A failure ends the benchmark with the
    child's last lines of stderr, or under ``strict=False`` gives ``{"error": last line}``."""
    cmd = [python or sys.executable, str(script), *map(str, args)]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if done.returncode != 0:
        if strict:
            raise SystemExit(f"{Path(script).name} {' '.join(map(str, args))[:200]} failed:\n"
                             f"{done.stderr[-3000:]}")
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- data ----------------------------------------------------------------------------------------
def data_folder(data: str | os.PathLike | None = None) -> Path:
    """The public data sets: ``data`` if given, else $STITCHKIT_DATA, then ../shared/data
    (:func:`stitchkit.datasets.data_root`, which says what to do when none exists)."""
    if data is not None:
        return Path(data)
    from stitchkit.datasets import data_root

    return data_root()


def kermany_rows(n: int | None = None, *, split: str | None = None, balanced: bool = False,
                 data: str | os.PathLike | None = None) -> list[dict[str, str]]:
    """Rows of Kermany's labels.csv (path, label, subtype, split) in the file's order, each with
    ``file``, its absolute path: the first ``n`` (all when None) of ``split`` (both when None);
    ``balanced``: the first n // 2 normal images, then pneumonia ones up to n."""
    root = data_folder(data) / "kermany-pneumonia-224"
    with open(root / "labels.csv", newline="") as fh:
        rows = [{**r, "file": str(root / r["path"])} for r in csv.DictReader(fh)
                if split is None or r["split"] == split]
    if balanced and n is not None:
        normal = [r for r in rows if r["label"] == "normal"][: n // 2]
        return normal + [r for r in rows if r["label"] != "normal"][: n - len(normal)]
    return rows if n is None else rows[:n]


def write_manifest(rows: list[dict[str, str]], out: Path) -> Path:
    """A CSV manifest (id, path, label) of Kermany rows, as `stitch embed` reads one."""
    with open(out, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["id", "path", "label"])
        writer.writeheader()
        writer.writerows({"id": r["path"], "path": r["file"], "label": r["label"]} for r in rows)
    return out


def smoke_stores(folder: Path, n: int = 32, models: tuple[str, ...] = ("lite2",),
                 tokens: bool = True, captions: bool = False) -> dict[str, Path]:
    """Real stores for a smoke run, named as `stitch demo` names them: the first n // 2 normal
    and pneumonia Kermany train images through each model (``k-train-MODEL.h5``, patch tokens
    with ``tokens``) and, with ``captions``, their label-derived MiniLM captions with word
    tokens (``k-train-captions-minilm.h5``, the demo's `stitch head captions --from-labels
    pneumonia --tokens`). Stores already in ``folder`` are kept."""
    from stitchkit.embed import embed_store
    from stitchkit.encoders import load_encoder
    from stitchkit.inputs import read_inputs

    folder.mkdir(parents=True, exist_ok=True)
    manifest = write_manifest(kermany_rows(n, split="train", balanced=True), folder / "k-train.csv")
    out = {"manifest": manifest}
    for model in models:
        out[model] = folder / f"k-train-{model}.h5"
        if not out[model].exists():
            embed_store(read_inputs(manifest), load_encoder(model), out[model], tokens=tokens, workers=0)
    if captions:
        from stitchkit.zeroshot.captions import CaptionSource, make_captions
        from stitchkit.zeroshot.prompts import load_prompts

        out["captions"] = folder / "k-train-captions-minilm.h5"
        if not out["captions"].exists():
            make_captions(out[models[0]], out=out["captions"], text_model="minilm", tokens=True,
                          source=CaptionSource(prompts=load_prompts("pneumonia")))
    return out
