"""Kill-and-resume scenarios for embed, apply, merge and head train (``build``) and for
classify, sweep, fit --engine ray and embed --engine ray (``build_more``).

Each scenario runs the real `stitch` command as a process, SIGKILLs it at a seeded point,
checks that nothing claims a completeness it does not have, re-runs the same command and
compares the result with an uninterrupted run (and, where the command prints a record, what
it printed). Used by ``tests/faults/test_kill.py`` and ``tests/faults/test_kill_more.py`` (a
few trials) and ``benchmarks/faults.py`` (many).
"""

from __future__ import annotations

import csv
import importlib.util
import json
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stitchkit.devices import torch_threads

from .helpers import Kill, appeared, child_running, kill_run, partials, run_inprocess


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
    # What a killed run left: raises AssertionError unless every output is absent or complete
    # and equal to the uninterrupted run's (default: ``compare`` when the output exists).
    check_killed: Callable[[Path, Path], None] | None = None
    # Commands that print a record (--json): raises AssertionError if what a run printed
    # (stdout, for the output ``out``) differs from the uninterrupted run's (for ``ref``).
    same_stdout: Callable[[str, Path, str, Path], None] | None = None
    reap_group: bool = False  # kill what the killed run started (a local Ray) once it is dead

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
    if scenario.check_killed is not None:
        scenario.check_killed(out, ref)
    elif out.exists():
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
    from stitchkit.maps import AnchorPlan, fit_map

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
    fit_map(inputs.lite0, inputs.lite2, "orthogonal", plan=AnchorPlan(holdout=0.2)).save(map_path)

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
    shard_paths = [str(p) for p in _shards(inputs)]

    def merge_args(out: Path) -> list[str]:
        return ["merge", *shard_paths, "-o", str(out)]

    # head train: label captions of the lite2 store in minilm space, many short epochs.
    captions = _captions(inputs)

    def head_args(out: Path) -> list[str]:
        return ["head", "train", str(inputs.lite2), str(captions), "-o", str(out), "--epochs", "12", "--min-steps", "0",
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


def _shards(inputs: Inputs) -> list[Path]:
    """Three shards cut from the lite0 store, provenance kept (written once)."""
    from stitchkit.store import EmbeddingStore, write_store

    paths = [inputs.work / f"shard-{i}.h5" for i in range(3)]
    if all(p.exists() for p in paths):
        return paths
    with EmbeddingStore(inputs.lite0) as store:
        attrs = {k: v for k, v in store.attrs.items()
                 if k in ("modality", "model_spec", "weights_sha256", "preprocessing", "input")}
        X, ids, labels = store.read(), list(store.ids), list(store.labels)
    for i, rows in enumerate(np.array_split(np.arange(len(ids)), 3)):
        write_store(paths[i], [ids[r] for r in rows], X[rows], columns={"labels": [labels[r] for r in rows]},
                    attrs={**attrs, "shard": f"{i}/3"})
    return paths


def _captions(inputs: Inputs) -> Path:
    """Label captions of the lite2 store in minilm space (written once)."""
    captions = inputs.work / "captions.h5"
    if not captions.exists():
        res = run_inprocess("head", "captions", inputs.lite2, "--from-labels", "pneumonia", "-m", "minilm",
                            "-o", captions)
        assert res.code == 0, res.stderr
    return captions


# -- classify, sweep and the Ray engine ----------------------------------------------------
RAY = importlib.util.find_spec("ray") is not None  # the `ray` extra (in `dev`)
MORE = ("classify", "sweep", "fit ray", "embed ray")


def same_bytes(a: Path, b: Path) -> None:
    assert a.read_bytes() == b.read_bytes(), f"{a.name} and {b.name} differ"


def same_png(a: Path, b: Path) -> None:
    """Same picture (pixels), whatever the PNG encoder's metadata."""
    from PIL import Image

    with Image.open(a) as x, Image.open(b) as y:
        assert x.size == y.size and np.array_equal(np.asarray(x), np.asarray(y)), f"{a.name} differs"


def same_map(a: Path, b: Path) -> None:
    from stitchkit.artifacts import load_artifact

    ta, ma = load_artifact(a, "map")
    tb, mb = load_artifact(b, "map")
    assert sorted(ta) == sorted(tb)
    for k in ta:
        assert np.array_equal(ta[k], tb[k]), k
    assert ma == mb, "metadata (anchors, metrics, spaces) differ"


def each_absent_or_same(outputs: Callable[[Path], list[Path]], compare: Callable[[Path, Path], None]
                        ) -> Callable[[Path, Path], None]:
    """A ``check_killed``: every output of the run is absent, or complete and equal."""

    def check(out: Path, ref: Path) -> None:
        for got, want in zip(outputs(out), outputs(ref), strict=True):
            if got.exists():
                compare(got, want)

    return check


VOLATILE = {"created", "seconds", "samples_per_s"}  # when and how fast, not what


def same_record(got: str, out: Path, want: str, ref: Path) -> None:
    """The record a run printed (--json) equals the uninterrupted run's, but for when it ran,
    how long it took and the output's name."""

    def plain(text: str, path: Path) -> object:
        try:
            record = json.loads(text)
        except ValueError as exc:
            raise AssertionError(f"stdout is not one whole JSON record: {text[-200:]!r}") from exc

        def norm(x: object) -> object:
            if isinstance(x, dict):
                return {k: norm(v) for k, v in x.items() if k not in VOLATILE}
            if isinstance(x, list):
                return [norm(v) for v in x]
            return x.replace(str(path), "<OUT>") if isinstance(x, str) else x

        return norm(record)

    assert plain(got, out) == plain(want, ref), "the printed record differs"


def ray_started(pid: int) -> Callable[[], bool]:
    """Ready once the run's local Ray is up (its raylet runs as the driver's child)."""
    return child_running(pid, "raylet")


def build_more(inputs: Inputs, names: tuple[str, ...] = MORE) -> list[Scenario]:
    """The scenarios of classify, sweep, fit --engine ray and embed --engine ray (``names``)."""
    work = inputs.work
    work.mkdir(parents=True, exist_ok=True)
    scenarios = []

    if "classify" in names:
        # A small head and the prompts' embeddings, made once: the prompt store is an input
        # here, so every run reports the same prompt source (a run that embeds the prompts
        # reports the text model, one that reads them the store).
        captions = _captions(inputs)
        head = work / "head.st"
        if not head.exists():
            # --threads 1 must not outlive the training: the scores' last digits depend on the
            # thread count, and the killed runs (fresh processes) use the default one.
            with torch_threads(None):  # `head train --threads 1` here must not slow what runs after it
                res = run_inprocess("head", "train", inputs.lite2, captions, "-o", head, "--min-steps", "0", "--epochs",
                                    "3", "--batch-size", "16", "--width", "16", "--threads", "1",
                                    "--no-plot")
            assert res.code == 0, res.stderr
        prompts = work / "prompts.h5"

        def classify_args(out: Path) -> list[str]:
            # Scores to CSV (out.result), metrics with bootstrap intervals as a --json record.
            return ["classify", str(inputs.lite2), "--prompts", "pneumonia", "--text-model", "minilm",
                    "--prompt-store", str(prompts), "--head", str(head), "-o", str(out),
                    "--chunk-size", "2", "--bootstrap", "300", "--json",
                    "--allow-overlap"]  # the head trained on these rows: what is scored does not matter here

        if not prompts.exists():
            res = run_inprocess(*classify_args(work / "warm-up.csv"))
            assert res.code == 0, res.stderr

        def classify_kill(rng: random.Random, out: Path) -> Kill:
            if rng.random() < 0.5:
                return Kill(rng.uniform(0, 0.01), appeared(f".{out.name}.*.partial", out.parent),
                            "while writing the scores")
            return Kill(rng.uniform(0, 0.3), appeared(out.name, out.parent),
                        "after the scores, during the metrics")

        scenarios.append(Scenario(
            "classify", classify_args, classify_kill, same_bytes,
            lambda out: sorted(out.parent.glob(".stitch-metrics-*")), max_delay=10.0,
            same_stdout=same_record))

    if "sweep" in names:
        def sweep_args(out: Path) -> list[str]:
            # out.result: the CSV table; out.png: its plot.
            # Few fits (ridge's search over alpha is slow at 1280 dimensions): ~10 s a run.
            return ["sweep", str(inputs.lite0), str(inputs.lite2), "--n-anchors", "4,12",
                    "--methods", "orthogonal,affine", "--seeds", "0,1", "-o", str(out)]

        def sweep_outputs(out: Path) -> list[Path]:
            return [out, out.with_suffix(".png")]

        def same_sweep(a: Path, b: Path) -> None:
            same_bytes(a, b)
            same_png(a.with_suffix(".png"), b.with_suffix(".png"))

        def sweep_kill(rng: random.Random, out: Path) -> Kill:
            plot = out.with_suffix(".png")
            r = rng.random()
            if r < 0.3:
                return Kill(rng.uniform(0, 0.005), appeared(f".{out.name}.*.partial", out.parent),
                            "while writing the table")
            if r < 0.6:
                return Kill(rng.uniform(0, 0.2), appeared(out.name, out.parent),
                            "after the table, before the plot")
            return Kill(rng.uniform(0, 0.05), appeared(f".{plot.name}.*.partial", out.parent),
                        "while writing the plot")

        scenarios.append(Scenario(
            "sweep", sweep_args, sweep_kill, same_sweep, max_delay=10.0,
            check_killed=each_absent_or_same(sweep_outputs, lambda a, b: (
                same_png(a, b) if a.suffix == ".png" else same_bytes(a, b)))))

    if "fit ray" in names:
        shards = ",".join(str(p) for p in _shards(inputs))  # one Ray task per shard

        def fit_args(out: Path) -> list[str]:
            # --overwrite: a kill can land after the map is complete, and a map already at -o is
            # refused without it (one line, exit 2); with it the re-run writes the same map again.
            return ["fit", shards, str(inputs.lite2), "-o", str(out), "--engine", "ray", "--overwrite"]

        def fit_kill(rng: random.Random, out: Path) -> Kill:
            if rng.random() < 0.5:
                return Kill(rng.uniform(0, 0.01), appeared(f".{out.name}.*.partial", out.parent),
                            "while writing the map")
            d = rng.uniform(0, 3)
            return Kill(d, label=f"{d:.1f}s after Ray started", ready_for=ray_started)

        scenarios.append(Scenario("fit ray", fit_args, fit_kill, same_map, max_delay=30.0,
                                  reap_group=True))

    if "embed ray" in names:
        def embed_args(out: Path) -> list[str]:
            return ["embed", str(inputs.manifest), "-m", "lite0", "-o", str(out), "--batch-size", "4",
                    "--engine", "ray", "--ray-cpus", "2", "--actors", "1"]

        def embed_kill(rng: random.Random, out: Path) -> Kill:
            parts = out.with_name(out.name + ".parts")
            with open(inputs.manifest, newline="") as fh:
                n_batches = -(-sum(1 for _ in csv.DictReader(fh)) // 4)
            r = rng.random()
            if r < 0.3:
                return Kill(rng.uniform(0, 0.05), appeared(f".{out.name}.*.partial", out.parent),
                            "assembling the store")
            if r < 0.65:
                k = rng.randint(1, max(1, n_batches - 1))
                return Kill(rng.uniform(0, 0.2), appeared("part-*.h5", parts, k), f"after {k} parts")
            d = rng.uniform(0, 5)
            return Kill(d, label=f"{d:.1f}s after Ray started", ready_for=ray_started)

        scenarios.append(Scenario(
            "embed ray", embed_args, embed_kill, lambda a, b: same_store(a, b, exact=False),
            lambda out: [out.with_name(out.name + ".parts")], max_delay=40.0, reap_group=True))
    return scenarios


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
    """The uninterrupted run's output (the same command, in this process); what it printed is
    kept beside it in ``ref.out.stdout``."""
    folder.mkdir(parents=True, exist_ok=True)
    ref = folder / "ref.out"
    if not ref.exists():
        with torch_threads(None):  # `head train --threads 1` here must not slow what runs after it
            res = run_inprocess(*scenario.args(ref))
        assert res.code == 0, res.stderr
        ref_stdout(ref).write_text(res.stdout, encoding="utf-8")
    return ref


def ref_stdout(ref: Path) -> Path:
    return ref.with_name(ref.name + ".stdout")


def trial(scenario: Scenario, rng: random.Random, i: int, folder: Path, ref: Path) -> Trial:
    """Kill one run at a point drawn from ``rng``, check the disk, re-run, compare with ``ref``."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    out = folder / "out.result"
    kill = kill_point(scenario, rng, out, i)
    printed = folder.parent / f".{folder.name}.killed-stdout" if scenario.same_stdout else None
    killed = kill_run(scenario.args(out), kill, stdout=printed, reap_group=scenario.reap_group)
    state = on_disk(folder)
    try:
        check_after_kill(scenario, out, ref)
        if printed is not None:
            # Nothing, or the whole record: a kill never leaves half a record on stdout.
            text = printed.read_text(encoding="utf-8")
            printed.unlink()
            if text or not killed:
                scenario.same_stdout(text, out, ref_stdout(ref).read_text(encoding="utf-8"), ref)
    except AssertionError as exc:
        return Trial(scenario.name, kill.label, killed, False, f"after the kill ({state}): {exc!r}")
    with torch_threads(None):  # `head train --threads 1` here must not slow what runs after it
        res = run_inprocess(*scenario.args(out))
    if res.code != 0:
        return Trial(scenario.name, kill.label, killed, False, f"({state}) re-run exit {res.code}: {res.stderr.strip()[-300:]}")
    try:
        scenario.compare(out, ref)
        if scenario.same_stdout is not None:
            scenario.same_stdout(res.stdout, out, ref_stdout(ref).read_text(encoding="utf-8"), ref)
    except AssertionError as exc:
        return Trial(scenario.name, kill.label, killed, False,
                     f"({state}) differs from an uninterrupted run: {exc!r}")
    left = scenario.leftovers(out)
    if left:
        return Trial(scenario.name, kill.label, killed, False,
                     f"({state}) left behind: {[p.name for p in left]}")
    return Trial(scenario.name, kill.label, killed, True, state=state)


def kill_point(scenario: Scenario, rng: random.Random, out: Path, i: int) -> Kill:
    """Trials 0, 1 of every 3 are tied to the job's progress, trial 2 is a plain delay."""
    if i % 3 != 2:
        return scenario.targeted(rng, out)
    d = rng.uniform(0, scenario.max_delay)
    return Kill(d, None, f"{d:.1f}s after start")


def rng_for(scenario: Scenario, seed: int) -> random.Random:
    return random.Random(f"{scenario.name}:{seed}")


def small_manifest(manifest: Path, work: Path, n_images: int) -> Path:
    """The first and last ``n_images / 2`` rows of ``manifest`` (both labels) as ``work/small.csv``."""
    import csv

    from stitchkit.datasets import write_csv

    with open(manifest, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return write_csv(rows[: n_images // 2] + rows[-n_images // 2:], work / "small.csv")


def assert_trials_survive(scenario: Scenario, tmp_path: Path, trials: int) -> None:
    """``trials`` seeded kills of ``scenario``, each re-run to the uninterrupted result."""
    ref = reference(scenario, tmp_path / "reference")
    rng = rng_for(scenario, seed=0)
    for i in range(trials):
        result = trial(scenario, rng, i, tmp_path / f"trial-{i}", ref)
        assert result.survived, f"{scenario.name}, killed {result.kill}: {result.problem}"
