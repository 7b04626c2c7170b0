"""Kill-and-resume scenarios for embed, apply, merge and head train.

Each scenario runs the real `stitch` command as a process, SIGKILLs it at a seeded point,
checks that nothing claims a completeness it does not have, re-runs the same command and
compares the result with an uninterrupted run. Used by ``tests/faults/test_kill.py`` (a few
trials) and ``benchmarks/faults.py`` (many).
"""

from __future__ import annotations

import contextlib
import csv
import random
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .helpers import Kill, appeared, kill_run, partials, run_inprocess


@dataclass
class Inputs:
    """Real inputs a scenario starts from: an image manifest and two stores of its ids."""

    manifest: Path  # CSV of a few dozen Kermany images (id, path, label)
    lite0: Path  # store of those images embedded with lite0
    lite2: Path  # the same ids embedded with lite2
    work: Path  # a folder of its own for the scenario's files


@dataclass
class Scenario:
    name: str
    args: Callable[[Path], list[str]]  # the command for a given output path
    targeted: Callable[[random.Random, Path], Kill]  # a kill point tied to the job's progress
    compare: Callable[[Path, Path], None]  # raises AssertionError if two outputs differ
    extra_leftovers: Callable[[Path], list[Path]] = field(default=lambda out: [])
    max_delay: float = 20.0  # plain-delay kills are drawn from [0, max_delay] seconds

    def leftovers(self, out: Path) -> list[Path]:
        """Files a finished run must not leave behind: temporaries, parts, checkpoints."""
        return partials(out.parent) + [p for p in self.extra_leftovers(out) if p.exists()]


# -- comparing outputs ---------------------------------------------------------------------
def same_store(a: Path, b: Path, *, exact: bool = True) -> None:
    from stitchkit.store import EmbeddingStore

    with EmbeddingStore(a) as x, EmbeddingStore(b) as y:
        assert x.complete and y.complete
        assert list(x.ids) == list(y.ids)
        for col in ("labels", "texts", "groups"):
            cx, cy = getattr(x, col), getattr(y, col)
            assert (cx is None) == (cy is None) and (cx is None or list(cx) == list(cy)), col
        assert x.failed == y.failed
        assert x.space() == y.space()
        if exact:
            assert np.array_equal(x.read(), y.read())
        else:
            np.testing.assert_allclose(x.read(), y.read(), rtol=1e-5, atol=1e-6)


def same_head(a: Path, b: Path) -> None:
    from stitchkit.artifacts import load_artifact

    ta, ma = load_artifact(a, "head")
    tb, mb = load_artifact(b, "head")
    assert sorted(ta) == sorted(tb)
    for k in ta:
        np.testing.assert_allclose(ta[k], tb[k], rtol=1e-5, atol=1e-6, err_msg=k)
    ha, hb = ma["training"]["history"], mb["training"]["history"]
    assert [h["epoch"] for h in ha] == [h["epoch"] for h in hb]
    np.testing.assert_allclose([h["train_loss"] for h in ha], [h["train_loss"] for h in hb], rtol=1e-5)


def check_after_kill(scenario: Scenario, out: Path, ref: Path) -> None:
    """The output is absent, or complete and equal to the uninterrupted run's."""
    if out.exists():
        scenario.compare(out, ref)


# -- the scenarios -------------------------------------------------------------------------
def _ckpt_epoch_at_least(ckpt: Path, k: int) -> Callable[[], bool]:
    def ready() -> bool:
        if not ckpt.exists():
            return False
        from stitchkit.artifacts import read_header

        try:
            return int(read_header(ckpt).get("epoch", 0)) >= k
        except Exception:  # noqa: BLE001 - replaced under our feet: look again next time
            return False

    return ready


def build(inputs: Inputs) -> list[Scenario]:
    """Prepare what the scenarios read (a map, shards, captions) and return them."""
    from stitchkit.maps import fit_map
    from stitchkit.store import EmbeddingStore, write_store

    work = inputs.work
    work.mkdir(parents=True, exist_ok=True)

    # embed: batches of 4, so a few dozen images make several part files to kill between.
    def embed_args(out: Path) -> list[str]:
        return ["embed", str(inputs.manifest), "-m", "lite0", "-o", str(out), "--batch-size", "4",
                "--workers", "0"]

    def embed_kill(rng: random.Random, out: Path) -> Kill:
        parts = out.with_name(out.name + ".parts")
        with open(inputs.manifest, newline="") as fh:
            n_batches = -(-sum(1 for _ in csv.DictReader(fh)) // 4)
        if rng.random() < 0.3:  # while the final store is being assembled
            return Kill(rng.uniform(0, 0.05), appeared(f".{out.name}.*.partial", out.parent),
                        "assembling the store")
        k = rng.randint(1, max(1, n_batches - 1))
        return Kill(rng.uniform(0, 0.2), appeared("part-*.h5", parts, k), f"after {k} parts")

    # apply: a map fitted in memory on the real stores; small chunks make a long write window.
    map_path = work / "lite0-to-lite2.map"
    fit_map(inputs.lite0, inputs.lite2, method="orthogonal", holdout=0.2).save(map_path)

    def apply_args(out: Path) -> list[str]:
        return ["apply", str(map_path), str(inputs.lite0), "-o", str(out), "--chunk-size", "2"]

    def while_writing(rng: random.Random, out: Path) -> Kill:
        return Kill(rng.uniform(0, 0.15), appeared(f".{out.name}.*.partial", out.parent),
                    "while writing")

    def while_merging(rng: random.Random, out: Path) -> Kill:
        # A merge of a few hundred rows writes for milliseconds: kill almost at once.
        return Kill(rng.uniform(0, 0.004), appeared(f".{out.name}.*.partial", out.parent),
                    "while writing")

    # merge: three shards cut from the lite0 store, provenance kept.
    shard_paths = []
    with EmbeddingStore(inputs.lite0) as store:
        attrs = {k: v for k, v in store.attrs.items()
                 if k in ("modality", "model_spec", "weights_sha256", "preprocessing", "input")}
        X, ids, labels = store.read(), list(store.ids), list(store.labels)
    for i, rows in enumerate(np.array_split(np.arange(len(ids)), 3)):
        p = work / f"shard-{i}.h5"
        write_store(p, [ids[r] for r in rows], X[rows], columns={"labels": [labels[r] for r in rows]},
                    attrs={**attrs, "shard": f"{i}/3"})
        shard_paths.append(str(p))

    def merge_args(out: Path) -> list[str]:
        return ["merge", *shard_paths, "-o", str(out)]

    # head train: label captions of the lite2 store in minilm space, many short epochs.
    captions = work / "captions.h5"
    res = run_inprocess("head", "captions", inputs.lite2, "--from-labels", "pneumonia", "-m", "minilm",
                        "-o", captions)
    assert res.code == 0, res.stderr

    def head_args(out: Path) -> list[str]:
        return ["head", "train", str(inputs.lite2), str(captions), "-o", str(out), "--epochs", "12",
                "--batch-size", "16", "--width", "16", "--patience", "100", "--threads", "1",
                "--no-plot"]

    def head_kill(rng: random.Random, out: Path) -> Kill:
        k = rng.randint(1, 9)
        return Kill(rng.uniform(0, 0.1), _ckpt_epoch_at_least(out.with_name(out.name + ".ckpt"), k),
                    f"after epoch {k}")

    return [
        Scenario("embed", embed_args, embed_kill, lambda a, b: same_store(a, b, exact=False),
                 lambda out: [out.with_name(out.name + ".parts")]),
        Scenario("apply", apply_args, while_writing, same_store),
        Scenario("merge", merge_args, while_merging, same_store),
        Scenario("head train", head_args, head_kill, same_head,
                 lambda out: [out.with_name(out.name + ".ckpt")]),
    ]


@dataclass
class Trial:
    scenario: str
    kill: str
    killed: bool
    survived: bool
    problem: str = ""
    state: str = ""  # what the kill left on disk, e.g. "parts 3, temporaries 1"


def on_disk(folder: Path) -> str:
    """A short account of what a killed run left: output, temporaries, parts, checkpoint."""
    out = folder / "out.result"
    parts = folder / "out.result.parts"
    bits = ["output" if out.exists() else "no output"]
    if partials(folder):
        bits.append(f"temporaries {len(partials(folder))}")
    if parts.exists():
        bits.append(f"parts {len(list(parts.glob('part-*.h5')))}")
    if (folder / "out.result.ckpt").exists():
        bits.append("checkpoint")
    return ", ".join(bits)


def reference(scenario: Scenario, folder: Path) -> Path:
    """The uninterrupted run's output (the same command, in this process)."""
    folder.mkdir(parents=True, exist_ok=True)
    ref = folder / "ref.out"
    if not ref.exists():
        with torch_threads_kept():
            res = run_inprocess(*scenario.args(ref))
        assert res.code == 0, res.stderr
    return ref


def trial(scenario: Scenario, rng: random.Random, i: int, folder: Path, ref: Path) -> Trial:
    """Kill one run at a point drawn from ``rng``, check the disk, re-run, compare with ``ref``."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    out = folder / "out.result"
    kill = kill_point(scenario, rng, out, i)
    killed = kill_run(scenario.args(out), kill)
    state = on_disk(folder)
    try:
        check_after_kill(scenario, out, ref)
    except AssertionError as exc:
        return Trial(scenario.name, kill.label, killed, False, f"after the kill ({state}): {exc!r}")
    with torch_threads_kept():
        res = run_inprocess(*scenario.args(out))
    if res.code != 0:
        return Trial(scenario.name, kill.label, killed, False, f"({state}) re-run exit {res.code}: {res.stderr.strip()[-300:]}")
    try:
        scenario.compare(out, ref)
    except AssertionError as exc:
        return Trial(scenario.name, kill.label, killed, False,
                     f"({state}) differs from an uninterrupted run: {exc!r}")
    left = scenario.leftovers(out)
    if left:
        return Trial(scenario.name, kill.label, killed, False,
                     f"({state}) left behind: {[p.name for p in left]}")
    return Trial(scenario.name, kill.label, killed, True, state=state)


@contextlib.contextmanager
def torch_threads_kept() -> Iterator[None]:
    """`head train --threads 1` in this process must not slow down what runs after it."""
    import torch

    n = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(n)


def kill_point(scenario: Scenario, rng: random.Random, out: Path, i: int) -> Kill:
    """Trials 0, 1 of every 3 are tied to the job's progress, trial 2 is a plain delay."""
    if i % 3 != 2:
        return scenario.targeted(rng, out)
    d = rng.uniform(0, scenario.max_delay)
    return Kill(d, None, f"{d:.1f}s after start")


def rng_for(scenario: Scenario, seed: int) -> random.Random:
    return random.Random(f"{scenario.name}:{seed}")
