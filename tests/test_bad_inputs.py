"""The bad-input matrix: every command × every kind of bad input.

Each cell runs the real `stitch` entry point (the console script's wrapper, in this process:
one subprocess per cell would cost 5-15 s of torch import on the shared CI machine; the
disk-full case is also run once as a real process with a file-size limit) and asserts:

* exit code non-zero: 2 for usage errors (bad arguments or input files), 1 for runtime
  failures (disk full, an input that cannot be embedded under ``--strict``);
* exactly one line on stderr that is not a ``warning:`` line or a progress line
  (``embed lite0: 8/24 3.1/s ETA 5s``): ``error: <problem>: <fix>``, naming the problem;
* no ``Traceback`` (``--debug`` is never given; one test checks that it does show one);
* a file already at the output path keeps its bytes.

``test_docs_match_the_matrix`` compares the table this run would write with the committed
``docs/bad-inputs.md`` (all but its hand-kept last section) and fails on any difference;
``STITCHKIT_WRITE_MATRIX=1`` also rewrites the page then (the test still fails that run, so
that a stale page is never passed: review the diff and commit it).

Simulations: "read-only output folder" is ``/proc/sys`` when running as root (root ignores
``chmod``; ``/proc/sys`` is mounted read-only), else a folder chmod-ed 0o555. "Output disk
full" is ``RLIMIT_FSIZE`` with SIGXFSZ ignored, so writes fail with EFBIG.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path

import h5py
import numpy as np
import pytest

# tests/faults is a package of helpers beside this file; pytest puts tests/ on the path only
# when it collects that package, so say it here for runs of this file alone.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from faults.helpers import Result, run_inprocess, run_subprocess  # noqa: E402

# -- the world every cell draws from ---------------------------------------------------------
CONDITIONS: dict[str, str] = {
    "missing": "missing file",
    "directory": "directory instead of file",
    "empty": "empty input",
    "corrupt": "truncated or corrupt HDF5",
    "no-datasets": "HDF5 without the expected datasets",
    "truncated-image": "truncated image",
    "text-png": "text file named .png",
    "nan": "NaN/Inf in a store",
    "duplicate-ids": "duplicate ids",
    "ids-mismatch": "ids that do not match",
    "dim-mismatch": "dimension mismatch",
    "provenance": "provenance mismatch",
    "unknown-model": "unknown model spec",
    "bad-prompts": "malformed prompt file",
    "read-only": "read-only output folder",
    "disk-full": "output disk full",
    "bad-option": "unknown option",
    "overlap": "rows that trained the head",
}
COMMANDS = ["embed", "info", "merge", "models", "fit", "apply", "sweep", "anchors select",
            "head captions", "head train", "classify", "benchmark", "report", "demo"]
DIRECTORY = r"is a (directory|folder)"  # click's wording, or the store reader's
SENTINEL = b"an earlier result that a failed run must leave alone\n"
STORE_LIMIT = 16 * 1024  # bytes: smaller than any store, map or head these cells write
TEXT_LIMIT = 16  # bytes: smaller than an id list or a CSV table


@dataclass
class World:
    root: Path
    lite0: Path
    lite2: Path
    minilm: Path
    manifest: Path  # a few good Kermany images
    map: Path  # lite2 -> lite0
    captions: Path  # label captions of the lite2 ids, minilm space
    head: Path  # trained on lite2 + captions
    missing: Path
    folder: Path
    empty: Path
    corrupt: Path
    no_datasets: Path
    nan: Path  # lite2 with NaN and Inf rows
    dup: Path  # lite2 with a repeated id
    notes_png: Path
    truncated_png: Path
    bad_prompts: Path
    readonly: Path
    weights_sha256: str  # of lite0, to forge an unfinished run's fingerprint


def readonly_folder(root: Path) -> Path:
    """A folder no file can be created in. Root ignores permissions: use /proc/sys then."""
    if os.geteuid() == 0:
        return Path("/proc/sys")
    ro = root / "read-only"
    ro.mkdir()
    ro.chmod(0o555)
    return ro


def make_world(root: Path, lite0: Path, lite2: Path, minilm: Path, kermany_manifest: Path) -> World:
    from stitchkit.maps import fit_map
    from stitchkit.store import EmbeddingStore

    root.mkdir(parents=True, exist_ok=True)
    with open(kermany_manifest, newline="") as fh:
        rows = list(csv.DictReader(fh))[:6]
    manifest = _write_manifest(root / "good.csv", rows)

    map_path = root / "lite2-to-lite0.map"
    fit_map(lite2, lite0, "orthogonal").save(map_path)
    captions, head = root / "captions.h5", root / "head.st"
    for args in (["head", "captions", lite2, "--from-labels", "pneumonia", "-t", "minilm", "-o", captions],
                 ["head", "train", lite2, captions, "-o", head, "--epochs", "1", "--min-steps", "0", "--batch-size", "16",
                  "--width", "8", "--no-plot"]):
        res = run_inprocess(*args)
        assert res.code == 0, res.stderr

    folder = root / "a-folder.h5"
    folder.mkdir()
    empty = root / "empty.h5"
    empty.write_bytes(b"")
    corrupt = root / "truncated.h5"
    data = lite2.read_bytes()
    corrupt.write_bytes(data[: len(data) // 2])
    no_datasets = root / "no-datasets.h5"
    with h5py.File(no_datasets, "w") as h5:
        h5["vectors"] = np.zeros((3, 4), dtype=np.float32)
    nan = root / "nan.h5"
    shutil.copy(lite2, nan)
    with h5py.File(nan, "a") as h5:
        # Every fifth row, so that any sample of anchors or held-out rows meets some.
        for row in range(1, h5["embeddings"].shape[0], 5):
            h5["embeddings"][row, row % 7] = np.nan if row % 2 else np.inf
    dup = root / "dup.h5"
    shutil.copy(lite2, dup)
    with h5py.File(dup, "a") as h5:
        h5["ids"][1] = h5["ids"][0]
    good_png = Path(rows[0]["path"]).read_bytes()
    notes_png = root / "notes.png"
    notes_png.write_text("this is a text file named .png\n")
    truncated_png = root / "truncated.jpeg"
    truncated_png.write_bytes(good_png[: len(good_png) // 3])
    bad_prompts = root / "prompts.yaml"
    bad_prompts.write_text("classes:\n  normal: [There is no finding.\n  pneumonia: {positive: 3\n")
    with EmbeddingStore(lite0) as s:
        sha = s.attrs["weights_sha256"]
    return World(root, lite0, lite2, minilm, manifest, map_path, captions, head,
                 root / "missing.h5", folder, empty, corrupt, no_datasets, nan, dup, notes_png,
                 truncated_png, bad_prompts, readonly_folder(root), sha)


def _write_manifest(path: Path, rows: list[dict[str, str]]) -> Path:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["id", "path", "label"])
        writer.writeheader()
        writer.writerows({k: r[k] for k in ("id", "path", "label")} for r in rows)
    return path


# -- the cells --------------------------------------------------------------------------------
@dataclass
class Case:
    args: list[object]
    code: int
    needle: str  # a regular expression the message must match (case-insensitive)
    output: Path | None = None  # the output path: any file there must keep its bytes
    existing: bytes | None = None  # what to put at ``output`` first (default: SENTINEL)
    fsize: int | None = None  # simulate a full disk past this many bytes
    setup: Callable[[], None] | None = None


Builder = Callable[[World, Path], Case]
CELLS: dict[tuple[str, str], Builder] = {}
NOT_APPLICABLE: dict[tuple[str, str], str] = {}


def cell(command: str, condition: str) -> Callable[[Builder], Builder]:
    def register(fn: Builder) -> Builder:
        CELLS[(command, condition)] = fn
        return fn

    return register


def na(command: str, reason: str, *conditions: str) -> None:
    for c in conditions:
        NOT_APPLICABLE[(command, c)] = reason


def ro(w: World, name: str) -> Path:
    return w.readonly / f"stitchkit-test-{name}"


# embed ---------------------------------------------------------------------------------------
def _embed(src: object, out: Path, *extra: object, model: str = "lite0") -> list[object]:
    return ["embed", src, "-m", model, "-o", out, "--workers", "0", "--batch-size", "8", *extra]


def _manifest_with(w: World, d: Path, extra: Path) -> Path:
    with open(w.manifest, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return _write_manifest(d / "m.csv", [*rows, {"id": extra.name, "path": str(extra), "label": "normal"}])


cell("embed", "missing")(lambda w, d: Case(_embed(d / "nope.csv", d / "o.h5", "--overwrite"), 2, "does not exist", d / "o.h5"))
cell("embed", "directory")(lambda w, d: Case(_embed(w.manifest, w.folder), 2, DIRECTORY))


@cell("embed", "empty")
def _(w: World, d: Path) -> Case:
    (d / "empty.csv").write_text("")
    return Case(_embed(d / "empty.csv", d / "o.h5", "--overwrite"), 2, "column", d / "o.h5")


@cell("embed", "corrupt")
def _(w: World, d: Path) -> Case:
    # An existing output that is not a finished store of this run is never overwritten.
    return Case(_embed(w.manifest, d / "o.h5"), 2, "already exists", d / "o.h5", w.corrupt.read_bytes())


cell("embed", "truncated-image")(lambda w, d: Case(
    _embed(_manifest_with(w, d, w.truncated_png), d / "o.h5", "--strict", "--overwrite"), 2, "truncated", d / "o.h5"))
cell("embed", "text-png")(lambda w, d: Case(
    _embed(_manifest_with(w, d, w.notes_png), d / "o.h5", "--strict", "--overwrite"), 2, "not an image", d / "o.h5"))


@cell("embed", "duplicate-ids")
def _(w: World, d: Path) -> Case:
    with open(w.manifest, newline="") as fh:
        rows = list(csv.DictReader(fh))
    m = _write_manifest(d / "m.csv", [*rows, rows[0]])
    return Case(_embed(m, d / "o.h5", "--overwrite"), 2, "duplicate ids", d / "o.h5")


@cell("embed", "ids-mismatch")
def _(w: World, d: Path) -> Case:
    # OUT.parts holds an unfinished run over other ids (same model and options).
    parts = d / "o.h5.parts"
    parts.mkdir()
    (parts / "run.json").write_text(json.dumps({
        "model_spec": "lite0", "weights_sha256": w.weights_sha256, "batch_size": 8,
        "tokens": False, "ids_sha256": "0" * 64, "dtype": "torch.float32"}))
    return Case(_embed(w.manifest, d / "o.h5", "--overwrite"), 2, r"unfinished run with other settings \(ids_sha256\)", d / "o.h5")


@cell("embed", "dim-mismatch")
def _(w: World, d: Path) -> Case:
    (d / "t.txt").write_text("There is pneumonia.\n")
    return Case(_embed(d / "t.txt", d / "o.h5", "--overwrite"), 2, "same modality", d / "o.h5")


cell("embed", "unknown-model")(lambda w, d: Case(_embed(w.manifest, d / "o.h5", "--overwrite", model="no-such-model"), 2, "unknown model spec", d / "o.h5"))
cell("embed", "read-only")(lambda w, d: Case(_embed(w.manifest, ro(w, "o.h5")), 2, "not writable"))
cell("embed", "disk-full")(lambda w, d: Case(_embed(w.manifest, d / "o.h5", "--overwrite"), 1, "file too large", d / "o.h5", fsize=STORE_LIMIT))
cell("embed", "bad-option")(lambda w, d: Case(_embed(w.manifest, d / "o.h5", "--bogus"), 2, "no such option", d / "o.h5"))
na("embed", "embed reads images or texts, not stores (an existing output is the corrupt-HDF5 cell)", "no-datasets", "nan")
na("embed", "embed reads no map: a store is the only thing it writes", "provenance")
na("embed", "no prompts", "bad-prompts")

# info ----------------------------------------------------------------------------------------
cell("info", "missing")(lambda w, d: Case(["info", w.missing], 2, "no such file"))
cell("info", "directory")(lambda w, d: Case(["info", w.folder], 2, DIRECTORY))
cell("info", "empty")(lambda w, d: Case(["info", w.empty], 2, "not a stitchkit file"))
cell("info", "corrupt")(lambda w, d: Case(["info", w.corrupt], 2, "truncated"))
cell("info", "no-datasets")(lambda w, d: Case(["info", w.no_datasets], 2, "no 'embeddings' dataset"))
cell("info", "text-png")(lambda w, d: Case(["info", w.notes_png], 2, "not a stitchkit file"))
cell("info", "bad-option")(lambda w, d: Case(["info", w.lite2, "--bogus"], 2, "no such option"))
na("info", "info describes any store, NaN or repeated ids included (exit 0; test_not_applicable_claims)",
   "nan", "duplicate-ids")
na("info", "info reads one file and writes nothing", "truncated-image", "ids-mismatch", "dim-mismatch",
   "provenance", "unknown-model", "bad-prompts", "read-only", "disk-full")

# merge ---------------------------------------------------------------------------------------
def _merge(*shards: object, out: Path) -> list[object]:
    return ["merge", *shards, "-o", out]


cell("merge", "missing")(lambda w, d: Case(_merge(w.lite2, w.missing, out=d / "o.h5"), 2, "no such file", d / "o.h5"))
cell("merge", "directory")(lambda w, d: Case(_merge(w.lite2, w.folder, out=d / "o.h5"), 2, DIRECTORY, d / "o.h5"))
cell("merge", "empty")(lambda w, d: Case(_merge(w.lite2, w.empty, out=d / "o.h5"), 2, "not an HDF5 file", d / "o.h5"))
cell("merge", "corrupt")(lambda w, d: Case(_merge(w.lite2, w.corrupt, out=d / "o.h5"), 2, "truncated", d / "o.h5"))
cell("merge", "no-datasets")(lambda w, d: Case(_merge(w.lite2, w.no_datasets, out=d / "o.h5"), 2, "no 'embeddings' dataset", d / "o.h5"))
cell("merge", "nan")(lambda w, d: Case(_merge(w.nan, out=d / "o.h5"), 2, "NaN or Inf", d / "o.h5"))
cell("merge", "duplicate-ids")(lambda w, d: Case(_merge(w.dup, out=d / "o.h5"), 2, "twice", d / "o.h5"))
cell("merge", "dim-mismatch")(lambda w, d: Case(_merge(w.lite2, w.minilm, out=d / "o.h5"), 2, "merge only shards of one model", d / "o.h5"))
cell("merge", "provenance")(lambda w, d: Case(_merge(w.lite2, w.lite0, out=d / "o.h5"), 2, "merge only shards of one model", d / "o.h5"))
cell("merge", "read-only")(lambda w, d: Case(_merge(w.lite2, out=ro(w, "o.h5")), 2, "not writable"))
cell("merge", "disk-full")(lambda w, d: Case(_merge(w.lite2, out=d / "o.h5"), 1, "file too large", d / "o.h5", fsize=STORE_LIMIT))
cell("merge", "bad-option")(lambda w, d: Case(_merge(w.lite2, "--bogus", out=d / "o.h5"), 2, "no such option", d / "o.h5"))
na("merge", "merge joins shards by id: any ids are fine as long as they do not repeat", "ids-mismatch")
na("merge", "merge reads stores only", "truncated-image", "text-png", "unknown-model", "bad-prompts")

# models --------------------------------------------------------------------------------------
cell("models", "bad-option")(lambda w, d: Case(["models", "--bogus"], 2, "no such option"))
na("models", "models takes no input and writes nothing", *[c for c in CONDITIONS if c != "bad-option"])


# fit / sweep ---------------------------------------------------------------------------------
def _fit(src: object, tgt: object, out: Path, *extra: object) -> list[object]:
    # --overwrite: a failed fit leaves an earlier map alone even when told it may replace it.
    return ["fit", src, tgt, "-o", out, "--overwrite", "--method", "orthogonal", *extra]


def _sweep(src: object, tgt: object, out: Path, *extra: object) -> list[object]:
    return ["sweep", src, tgt, "-o", out, "--plot", out.with_suffix(".png"), "--n-anchors", "20",
            "--seeds", "0", "--methods", "orthogonal", *extra]


for name, build, limit in (("fit", _fit, STORE_LIMIT), ("sweep", _sweep, TEXT_LIMIT)):
    out_name = "o.map" if name == "fit" else "o.csv"

    def _cells(name: str = name, build: Callable[..., list[object]] = build, limit: int = limit,
               out_name: str = out_name) -> None:
        cell(name, "missing")(lambda w, d: Case(build(w.missing, w.lite0, d / out_name), 2, "no such file", d / out_name))
        cell(name, "directory")(lambda w, d: Case(build(w.folder, w.lite0, d / out_name), 2, DIRECTORY, d / out_name))
        cell(name, "empty")(lambda w, d: Case(build(w.empty, w.lite0, d / out_name), 2, "not an HDF5 file", d / out_name))
        cell(name, "corrupt")(lambda w, d: Case(build(w.corrupt, w.lite0, d / out_name), 2, "truncated", d / out_name))
        cell(name, "no-datasets")(lambda w, d: Case(build(w.no_datasets, w.lite0, d / out_name), 2, "no 'embeddings' dataset", d / out_name))
        cell(name, "nan")(lambda w, d: Case(build(w.nan, w.lite0, d / out_name), 2, "NaN or Inf", d / out_name))
        cell(name, "duplicate-ids")(lambda w, d: Case(build(w.dup, w.lite0, d / out_name), 2, "repeat", d / out_name))
        cell(name, "ids-mismatch")(lambda w, d: Case(build(w.lite2, w.minilm, d / out_name), 2, "share", d / out_name))
        cell(name, "read-only")(lambda w, d: Case(build(w.lite2, w.lite0, ro(w, out_name)), 2, "writ"))
        cell(name, "disk-full")(lambda w, d: Case(build(w.lite2, w.lite0, d / out_name), 1, "file too large", d / out_name, fsize=limit))
        cell(name, "bad-option")(lambda w, d: Case(build(w.lite2, w.lite0, d / out_name, "--bogus"), 2, "no such option", d / out_name))

    _cells()
    na(name, f"{name} maps between spaces of any widths and models by design", "dim-mismatch", "provenance")
    na(name, f"{name} reads stores only", "truncated-image", "text-png", "unknown-model", "bad-prompts")


# apply ---------------------------------------------------------------------------------------
def _apply(m: object, store: object, out: Path, *extra: object) -> list[object]:
    return ["apply", m, store, "-o", out, *extra]


cell("apply", "missing")(lambda w, d: Case(_apply(w.missing, w.lite2, d / "o.h5"), 2, "no such file", d / "o.h5"))
cell("apply", "directory")(lambda w, d: Case(_apply(w.map, w.folder, d / "o.h5"), 2, DIRECTORY, d / "o.h5"))
cell("apply", "empty")(lambda w, d: Case(_apply(w.map, w.empty, d / "o.h5"), 2, "not an HDF5 file", d / "o.h5"))
cell("apply", "corrupt")(lambda w, d: Case(_apply(w.map, w.corrupt, d / "o.h5"), 2, "truncated", d / "o.h5"))
cell("apply", "no-datasets")(lambda w, d: Case(_apply(w.map, w.no_datasets, d / "o.h5"), 2, "no 'embeddings' dataset", d / "o.h5"))
cell("apply", "text-png")(lambda w, d: Case(_apply(w.notes_png, w.lite2, d / "o.h5"), 2, "not a stitchkit map", d / "o.h5"))
cell("apply", "nan")(lambda w, d: Case(_apply(w.map, w.nan, d / "o.h5"), 2, "NaN or Inf", d / "o.h5"))
cell("apply", "dim-mismatch")(lambda w, d: Case(_apply(w.map, w.minilm, d / "o.h5"), 2, "384-d", d / "o.h5"))
cell("apply", "provenance")(lambda w, d: Case(_apply(w.map, w.lite0, d / "o.h5"), 2, "--force", d / "o.h5"))
cell("apply", "read-only")(lambda w, d: Case(_apply(w.map, w.lite2, ro(w, "o.h5")), 2, "not writable"))
cell("apply", "disk-full")(lambda w, d: Case(_apply(w.map, w.lite2, d / "o.h5"), 1, "file too large", d / "o.h5", fsize=STORE_LIMIT))
cell("apply", "bad-option")(lambda w, d: Case(_apply(w.map, w.lite2, d / "o.h5", "--bogus"), 2, "no such option", d / "o.h5"))
na("apply", "apply maps every row and keeps ids as they are; it looks none up (test_not_applicable_claims)",
   "duplicate-ids", "ids-mismatch")
na("apply", "apply reads a map and a store only", "truncated-image", "unknown-model", "bad-prompts")


# anchors select ------------------------------------------------------------------------------
def _anchors(store: object, out: Path, *extra: object) -> list[object]:
    return ["anchors", "select", store, "-o", out, "-n", "5", "--strategy", "farthest", *extra]


cell("anchors select", "missing")(lambda w, d: Case(_anchors(w.missing, d / "a.txt"), 2, "no such file", d / "a.txt"))
cell("anchors select", "directory")(lambda w, d: Case(_anchors(w.folder, d / "a.txt"), 2, DIRECTORY, d / "a.txt"))
cell("anchors select", "empty")(lambda w, d: Case(_anchors(w.empty, d / "a.txt"), 2, "not an HDF5 file", d / "a.txt"))
cell("anchors select", "corrupt")(lambda w, d: Case(_anchors(w.corrupt, d / "a.txt"), 2, "truncated", d / "a.txt"))
cell("anchors select", "no-datasets")(lambda w, d: Case(_anchors(w.no_datasets, d / "a.txt"), 2, "no 'embeddings' dataset", d / "a.txt"))
cell("anchors select", "nan")(lambda w, d: Case(_anchors(w.nan, d / "a.txt"), 2, "NaN or Inf", d / "a.txt"))
cell("anchors select", "duplicate-ids")(lambda w, d: Case(_anchors(w.dup, d / "a.txt"), 2, "repeat", d / "a.txt"))
cell("anchors select", "read-only")(lambda w, d: Case(_anchors(w.lite2, ro(w, "a.txt")), 2, "not writable"))
cell("anchors select", "disk-full")(lambda w, d: Case(_anchors(w.lite2, d / "a.txt"), 1, "file too large", d / "a.txt", fsize=TEXT_LIMIT))
cell("anchors select", "bad-option")(lambda w, d: Case(_anchors(w.lite2, d / "a.txt", "--bogus"), 2, "no such option", d / "a.txt"))
na("anchors select", "anchors select reads one store", "truncated-image", "text-png", "ids-mismatch",
   "dim-mismatch", "provenance", "unknown-model", "bad-prompts")


# head captions -------------------------------------------------------------------------------
def _captions(images: object, out: Path, prompts: object = "pneumonia", model: str = "minilm") -> list[object]:
    return ["head", "captions", images, "--from-labels", prompts, "-m", model, "-o", out]


cell("head captions", "missing")(lambda w, d: Case(_captions(w.missing, d / "c.h5"), 2, "no such file", d / "c.h5"))
cell("head captions", "directory")(lambda w, d: Case(_captions(w.folder, d / "c.h5"), 2, DIRECTORY, d / "c.h5"))
cell("head captions", "empty")(lambda w, d: Case(_captions(w.empty, d / "c.h5"), 2, "not an HDF5 file", d / "c.h5"))
cell("head captions", "corrupt")(lambda w, d: Case(_captions(w.corrupt, d / "c.h5"), 2, "truncated", d / "c.h5"))
cell("head captions", "no-datasets")(lambda w, d: Case(_captions(w.no_datasets, d / "c.h5"), 2, "no 'embeddings' dataset", d / "c.h5"))
cell("head captions", "duplicate-ids")(lambda w, d: Case(_captions(w.dup, d / "c.h5"), 2, "repeat", d / "c.h5"))
cell("head captions", "unknown-model")(lambda w, d: Case(_captions(w.lite2, d / "c.h5", model="no-such-model"), 2, "unknown model spec", d / "c.h5"))
cell("head captions", "bad-prompts")(lambda w, d: Case(_captions(w.lite2, d / "c.h5", prompts=w.bad_prompts), 2, "not valid YAML", d / "c.h5"))
cell("head captions", "text-png")(lambda w, d: Case(_captions(w.lite2, d / "c.h5", prompts=w.truncated_png), 2, "prompt", d / "c.h5"))
cell("head captions", "read-only")(lambda w, d: Case(_captions(w.lite2, ro(w, "c.h5")), 2, "not writable"))
cell("head captions", "disk-full")(lambda w, d: Case(_captions(w.lite2, d / "c.h5"), 1, "file too large", d / "c.h5", fsize=STORE_LIMIT))
cell("head captions", "bad-option")(lambda w, d: Case([*_captions(w.lite2, d / "c.h5"), "--bogus"], 2, "no such option", d / "c.h5"))
na("head captions", "captions come from labels or texts; embeddings are not read", "nan", "dim-mismatch", "provenance")
na("head captions", "head captions reads one store (ids are copied)", "truncated-image", "ids-mismatch")


# head train ----------------------------------------------------------------------------------
def _train(images: object, texts: object, out: Path, *extra: object) -> list[object]:
    return ["head", "train", images, texts, "-o", out, "--epochs", "1", "--min-steps", "0", "--batch-size", "16",
            "--width", "8", "--no-plot", *extra]


cell("head train", "missing")(lambda w, d: Case(_train(w.missing, w.captions, d / "h.st"), 2, "no such file", d / "h.st"))
cell("head train", "directory")(lambda w, d: Case(_train(w.folder, w.captions, d / "h.st"), 2, DIRECTORY, d / "h.st"))
cell("head train", "empty")(lambda w, d: Case(_train(w.empty, w.captions, d / "h.st"), 2, "not an HDF5 file", d / "h.st"))
cell("head train", "corrupt")(lambda w, d: Case(_train(w.corrupt, w.captions, d / "h.st"), 2, "truncated", d / "h.st"))
cell("head train", "no-datasets")(lambda w, d: Case(_train(w.no_datasets, w.captions, d / "h.st"), 2, "no 'embeddings' dataset", d / "h.st"))
cell("head train", "nan")(lambda w, d: Case(_train(w.nan, w.captions, d / "h.st"), 2, "NaN or Inf", d / "h.st"))
cell("head train", "duplicate-ids")(lambda w, d: Case(_train(w.dup, w.captions, d / "h.st"), 2, "repeat", d / "h.st"))
cell("head train", "ids-mismatch")(lambda w, d: Case(_train(w.lite2, w.minilm, d / "h.st"), 2, "share no ids", d / "h.st"))
cell("head train", "read-only")(lambda w, d: Case(_train(w.lite2, w.captions, ro(w, "h.st")), 2, "not writable"))
cell("head train", "disk-full")(lambda w, d: Case(_train(w.lite2, w.captions, d / "h.st"), 1, "file too large", d / "h.st", fsize=STORE_LIMIT))
cell("head train", "bad-option")(lambda w, d: Case(_train(w.lite2, w.captions, d / "h.st", "--bogus"), 2, "no such option", d / "h.st"))
na("head train", "a head pairs spaces of any widths and models by design", "dim-mismatch", "provenance")
na("head train", "head train reads two stores only", "truncated-image", "text-png", "unknown-model", "bad-prompts")


# classify ------------------------------------------------------------------------------------
def _classify(w: World, query: object, out: Path, *extra: object, prompts: object = "pneumonia",
              model: str = "minilm") -> list[object]:
    # The world's head trained on every row of lite2: these cells test other things (the overlap
    # cell below leaves the flag out).
    return ["classify", query, "--prompts", prompts, "--text-model", model, "--head", w.head,
            "-o", out, "--bootstrap", "0", "--allow-overlap", *extra]


cell("classify", "missing")(lambda w, d: Case(_classify(w, w.missing, d / "s.csv"), 2, "no such file", d / "s.csv"))
cell("classify", "directory")(lambda w, d: Case(_classify(w, w.folder, d / "s.csv"), 2, DIRECTORY, d / "s.csv"))
cell("classify", "empty")(lambda w, d: Case(_classify(w, w.empty, d / "s.csv"), 2, "not an HDF5 file", d / "s.csv"))
cell("classify", "corrupt")(lambda w, d: Case(_classify(w, w.corrupt, d / "s.csv"), 2, "truncated", d / "s.csv"))
cell("classify", "no-datasets")(lambda w, d: Case(_classify(w, w.no_datasets, d / "s.csv"), 2, "no 'embeddings' dataset", d / "s.csv"))
cell("classify", "text-png")(lambda w, d: Case(_classify(w, w.lite2, d / "s.csv", prompts=w.notes_png), 2, "prompt", d / "s.csv"))
cell("classify", "nan")(lambda w, d: Case(_classify(w, w.nan, d / "s.csv"), 2, "NaN or Inf", d / "s.csv"))
cell("classify", "duplicate-ids")(lambda w, d: Case(_classify(w, w.dup, d / "s.csv"), 2, "repeat", d / "s.csv"))


@cell("classify", "ids-mismatch")
def _(w: World, d: Path) -> Case:
    (d / "ids.txt").write_text("no/such/id-1\nno/such/id-2\n")
    return Case(_classify(w, w.lite2, d / "s.csv", "--ids", d / "ids.txt"), 2, "not found", d / "s.csv")


cell("classify", "dim-mismatch")(lambda w, d: Case(_classify(w, w.minilm, d / "s.csv"), 2, "384", d / "s.csv"))
cell("classify", "provenance")(lambda w, d: Case(_classify(w, w.lite0, d / "s.csv"), 2, "--force", d / "s.csv"))
cell("classify", "unknown-model")(lambda w, d: Case(_classify(w, w.lite2, d / "s.csv", model="no-such-model"), 2, "unknown model spec", d / "s.csv"))
cell("classify", "bad-prompts")(lambda w, d: Case(_classify(w, w.lite2, d / "s.csv", prompts=w.bad_prompts), 2, "not valid YAML", d / "s.csv"))
cell("classify", "read-only")(lambda w, d: Case(_classify(w, w.lite2, ro(w, "s.csv")), 2, "writ"))
@cell("classify", "disk-full")
def _(w: World, d: Path) -> Case:
    # A few ids: the whole table stays in the write buffer, so the write fails only on close.
    from stitchkit.store import EmbeddingStore

    with EmbeddingStore(w.lite2) as s:  # 6 of each label: a class without a positive is refused first
        ids, labels = list(s.ids), list(s.labels)
    few = [i for lab in sorted(set(labels)) for i in [i for i, x in zip(ids, labels, strict=True) if x == lab][:6]]
    (d / "ids.txt").write_text("\n".join(few) + "\n")
    return Case(_classify(w, w.lite2, d / "s.csv", "--ids", d / "ids.txt"), 1, "file too large", d / "s.csv",
                fsize=TEXT_LIMIT)
cell("classify", "bad-option")(lambda w, d: Case(_classify(w, w.lite2, d / "s.csv", "--bogus"), 2, "no such option", d / "s.csv"))
na("classify", "classify reads stores, a head and prompts", "truncated-image")
# The world's head trained on every row of lite2: scoring them is not a held-out result.
cell("classify", "overlap")(lambda w, d: Case([a for a in _classify(w, w.lite2, d / "s.csv") if a != "--allow-overlap"],
                                              2, "--allow-overlap", d / "s.csv"))
for _command in COMMANDS:
    if _command not in ("classify", "benchmark", "models", "demo"):
        na(_command, "scores no rows through a trained head", "overlap")
na("demo", "the demo scores each head on rows it did not train on (test_demo.py runs it)", "overlap")



# benchmark -----------------------------------------------------------------------------------
def _benchmark(w: World, d: Path, store: object, *extra: object, out: Path | None = None,
               model: str = "minilm", **entry: object) -> list[object]:
    """A suite of one data set (store k: pneumonia against normal) scored through the world's
    head, which trained on every row of lite2 (--allow-overlap, as for classify); ``entry``
    adds or replaces the data set's keys."""
    suite = d / "suite.yaml"
    suite.write_text(json.dumps({"name": "bad", "datasets": [{
        "name": "k", "store": "k", "task": "multiclass", "prompts": "pneumonia",
        "findings": ["normal", "pneumonia"], **{k: str(v) for k, v in entry.items()}}]}))  # JSON is YAML
    return ["benchmark", suite, "--store", f"k={store}", "--text-model", model, "--head", w.head,
            "-o", out or d / "bench", "--bootstrap", "0", "--allow-overlap", *extra]


# A suite's problem: its data set's ids file is found neither beside the suite nor here.
cell("benchmark", "missing")(lambda w, d: Case(_benchmark(w, d, w.lite2, ids="held-out-ids.txt"), 2,
                                               "no such file beside the suite", d / "bench" / "table.md"))
cell("benchmark", "directory")(lambda w, d: Case(_benchmark(w, d, w.folder), 2, DIRECTORY, d / "bench" / "table.md"))
cell("benchmark", "empty")(lambda w, d: Case(_benchmark(w, d, w.empty), 2, "not an HDF5 file", d / "bench" / "table.md"))
cell("benchmark", "corrupt")(lambda w, d: Case(_benchmark(w, d, w.corrupt), 2, "truncated", d / "bench" / "table.md"))
cell("benchmark", "no-datasets")(lambda w, d: Case(_benchmark(w, d, w.no_datasets), 2, "no 'embeddings' dataset",
                                                   d / "bench" / "table.md"))
cell("benchmark", "text-png")(lambda w, d: Case(_benchmark(w, d, w.lite2, prompts=w.notes_png), 2, "prompt",
                                                d / "bench" / "table.md"))
cell("benchmark", "nan")(lambda w, d: Case(_benchmark(w, d, w.nan), 2, "NaN or Inf", d / "bench" / "table.md"))
cell("benchmark", "duplicate-ids")(lambda w, d: Case(_benchmark(w, d, w.dup), 2, "repeat", d / "bench" / "table.md"))


@cell("benchmark", "ids-mismatch")
def _(w: World, d: Path) -> Case:
    (d / "ids.txt").write_text("no/such/id-1\nno/such/id-2\n")
    return Case(_benchmark(w, d, w.lite2, ids=d / "ids.txt"), 2, "not found", d / "bench" / "table.md")


cell("benchmark", "dim-mismatch")(lambda w, d: Case(_benchmark(w, d, w.minilm), 2, "384", d / "bench" / "table.md"))
cell("benchmark", "provenance")(lambda w, d: Case(_benchmark(w, d, w.lite0), 2, "--force", d / "bench" / "table.md"))
cell("benchmark", "unknown-model")(lambda w, d: Case(_benchmark(w, d, w.lite2, model="no-such-model"), 2,
                                                     "unknown model spec", d / "bench" / "table.md"))
cell("benchmark", "bad-prompts")(lambda w, d: Case(_benchmark(w, d, w.lite2, prompts=w.bad_prompts), 2, "not valid YAML",
                                                   d / "bench" / "table.md"))
cell("benchmark", "read-only")(lambda w, d: Case(_benchmark(w, d, w.lite2, out=ro(w, "bench")), 2, "writ"))
cell("benchmark", "disk-full")(lambda w, d: Case(_benchmark(w, d, w.lite2), 1, "file too large", d / "bench" / "table.md",
                                                 fsize=TEXT_LIMIT))
cell("benchmark", "bad-option")(lambda w, d: Case(_benchmark(w, d, w.lite2, "--bogus"), 2, "no such option",
                                                  d / "bench" / "table.md"))
cell("benchmark", "overlap")(lambda w, d: Case([a for a in _benchmark(w, d, w.lite2) if a != "--allow-overlap"], 2,
                                               "--allow-overlap", d / "bench" / "table.md"))
na("benchmark", "benchmark reads stores, a head, prompts and a suite: never an image", "truncated-image")


# report / demo -------------------------------------------------------------------------------
def _report_folder(w: World, d: Path) -> Path:
    folder = d / "run"
    folder.mkdir()
    shutil.copy(w.map, folder / "m.map")
    return folder


cell("report", "missing")(lambda w, d: Case(["report", d / "nowhere", "-o", d / "r"], 2, "does not exist"))
cell("report", "directory")(lambda w, d: Case(["report", w.map, "-o", w.lite2], 2, "is a file"))
cell("report", "empty")(lambda w, d: Case(["report", w.empty, "-o", d / "r"], 2, "not a stitchkit file"))
cell("report", "corrupt")(lambda w, d: Case(["report", w.corrupt, "-o", d / "r"], 2, "not a stitchkit file"))
cell("report", "no-datasets")(lambda w, d: Case(["report", w.no_datasets, "-o", d / "r"], 2, "not a stitchkit file"))
cell("report", "text-png")(lambda w, d: Case(["report", w.notes_png, "-o", d / "r"], 2, "not a stitchkit file"))


@cell("report", "read-only")
def _(w: World, d: Path) -> Case:
    return Case(["report", _report_folder(w, d), "-o", ro(w, "r")], 2, "writ")


@cell("report", "disk-full")
def _(w: World, d: Path) -> Case:
    (d / "r").mkdir()
    return Case(["report", _report_folder(w, d), "-o", d / "r"], 1, "file too large", d / "r" / "index.html", fsize=TEXT_LIMIT)


cell("report", "bad-option")(lambda w, d: Case(["report", d, "--bogus"], 2, "no such option"))
na("report", "report draws stores only beside a map of their spaces over shared ids; other stores "
   "(NaN rows, repeated or foreign ids, other widths or models) are left out and it exits 0 "
   "(test_not_applicable_claims)", "nan", "duplicate-ids", "ids-mismatch", "dim-mismatch", "provenance")
na("report", "report reads what commands wrote: never an image, a model spec or a prompt file",
   "truncated-image", "unknown-model", "bad-prompts")

cell("demo", "missing")(lambda w, d: Case(["demo", "--data", d / "nowhere", "-o", d / "out", "--limit", "4"], 2, "nowhere"))
cell("demo", "directory")(lambda w, d: Case(["demo", "--data", w.lite2, "-o", d / "out", "--limit", "4"], 2, "is a file"))


@cell("demo", "empty")
def _(w: World, d: Path) -> Case:
    (d / "data").mkdir()
    return Case(["demo", "--data", d / "data", "-o", d / "out", "--limit", "4"], 2, "data")


cell("demo", "read-only")(lambda w, d: Case(["demo", "-o", ro(w, "demo"), "--limit", "4"], 2, "writ"))
cell("demo", "bad-option")(lambda w, d: Case(["demo", "--bogus"], 2, "no such option"))
na("demo", "demo runs the commands above on the shared data; each is covered there",
   "corrupt", "no-datasets", "truncated-image", "text-png", "nan", "duplicate-ids", "ids-mismatch",
   "dim-mismatch", "provenance", "unknown-model", "bad-prompts", "disk-full")


# Cells that fail today because of a bug in a module another engineer owns: expected to fail
# (strict, so a fix shows up as XPASS and the entry must go). Each names where to fix it.
KNOWN_BUGS: dict[tuple[str, str], str] = {}  # all fixed on 2026-11-22 (see docs/bad-inputs.md)


# -- running the cells -------------------------------------------------------------------------
@dataclass
class Outcome:
    code: int
    message: str
    ok: bool
    problems: list[str] = field(default_factory=list)


RESULTS: dict[tuple[str, str], Outcome] = {}


def run_case(case: Case, d: Path) -> Outcome:
    """Run one cell and check the contract; returns what happened and what was wrong."""
    if case.setup:
        case.setup()
    before = None
    if case.output is not None:
        case.output.parent.mkdir(parents=True, exist_ok=True)
        before = case.existing if case.existing is not None else SENTINEL
        case.output.write_bytes(before)
    res = run_inprocess(*case.args, fsize=case.fsize)
    return judge(case, res, before)


def judge(case: Case, res: Result, before: bytes | None) -> Outcome:
    lines = res.message_lines
    message = lines[0] if lines else ""
    problems = []
    if res.code != case.code:
        problems.append(f"exit {res.code}, expected {case.code}")
    if len(lines) != 1:
        problems.append(f"{len(lines)} lines on stderr, expected 1: {lines[:6]}")
    elif not message.startswith("error: "):
        problems.append(f"the line does not start with 'error: ': {message!r}")
    if not re.search(case.needle, res.stderr, re.IGNORECASE):
        problems.append(f"{case.needle!r} not in the message")
    if "Traceback" in res.stderr:
        problems.append("a traceback was printed")
    if case.output is not None and before is not None:
        if not case.output.exists():
            problems.append(f"{case.output.name} was removed")
        elif case.output.read_bytes() != before:
            problems.append(f"{case.output.name} was changed")
    return Outcome(res.code, message, not problems, problems)


@pytest.fixture(scope="module")
def world(lite0_store: Path, lite2_store: Path, minilm_store: Path, kermany_manifest: Path,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = make_world(tmp_path_factory.mktemp("bad-inputs"), lite0_store, lite2_store, minilm_store,
                   kermany_manifest)
    yield w


ALL = [(c, k) for c in COMMANDS for k in CONDITIONS]


@pytest.mark.parametrize(("command", "condition"), ALL, ids=[f"{c}-{k}".replace(" ", "_") for c, k in ALL])
def test_bad_input(command: str, condition: str, world: World, tmp_path: Path,
                   request: pytest.FixtureRequest) -> None:
    key = (command, condition)
    if key in NOT_APPLICABLE:
        pytest.skip(f"n/a: {NOT_APPLICABLE[key]}")
    if key in KNOWN_BUGS:
        request.applymarker(pytest.mark.xfail(reason=KNOWN_BUGS[key], strict=True))
    assert key in CELLS, f"{command} × {condition}: add a cell or say why it does not apply"
    case = CELLS[key](world, tmp_path)
    outcome = run_case(case, tmp_path)
    RESULTS[key] = outcome
    assert outcome.ok, f"{command} × {CONDITIONS[condition]}: {'; '.join(outcome.problems)}\n{outcome.message}"


def test_debug_shows_the_traceback(world: World, tmp_path: Path) -> None:
    res = run_inprocess("--debug", "fit", world.missing, world.lite0, "-o", tmp_path / "m.map")
    assert res.code != 0 and "Traceback" in res.stderr


@pytest.mark.slow
def test_disk_full_in_a_real_process(world: World, tmp_path: Path) -> None:
    """The preexec_fn way: the child's RLIMIT_FSIZE, SIGXFSZ ignored, writes fail with EFBIG."""
    out = tmp_path / "o.h5"
    out.write_bytes(SENTINEL)
    res = run_subprocess("apply", world.map, world.lite2, "-o", out, fsize=STORE_LIMIT)
    assert res.code == 1, res.stderr
    assert len(res.message_lines) == 1 and "file too large" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    assert out.read_bytes() == SENTINEL


# -- "not applicable" cells that are claims about behaviour, checked ---------------------------
@pytest.mark.parametrize("claim", ["info-nan", "info-dup", "apply-dup", "report-foreign-stores"])
def test_not_applicable_claims(claim: str, world: World, tmp_path: Path) -> None:
    import subprocess

    def run_stitch(*args: object) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "stitchkit.cli.main", *map(str, args)],
                              capture_output=True, text=True, timeout=600)

    w = world
    if claim in ("info-nan", "info-dup"):
        res = run_stitch("info", w.nan if claim == "info-nan" else w.dup)
        assert res.returncode == 0, res.stderr
    elif claim == "apply-dup":
        res = run_stitch("apply", w.map, w.dup, "-o", tmp_path / "o.h5")
        assert res.returncode == 0, res.stderr
        from stitchkit.store import EmbeddingStore

        with EmbeddingStore(w.dup) as src, EmbeddingStore(tmp_path / "o.h5") as out:
            assert list(out.ids) == list(src.ids)  # every row mapped, the repeated id kept
    else:
        res = run_stitch("report", w.map, w.nan, w.dup, w.minilm, "-o", tmp_path / "r")
        assert res.returncode == 0, res.stderr
        figures = sorted(p.name for p in (tmp_path / "r").glob("*.png"))
        assert figures == ["maps.png"]  # no pair of stores in the map's spaces over shared ids


# -- the table in docs/bad-inputs.md -----------------------------------------------------------
DOC = Path(__file__).resolve().parents[1] / "docs" / "bad-inputs.md"
REGENERATE = "STITCHKIT_WRITE_MATRIX=1 pytest tests/test_bad_inputs.py"


def _short(message: str, w: World) -> str:
    text = message.removeprefix("error: ")
    # every test's folder sits beside the world's: the same "…" whatever the base temp folder
    text = re.sub(re.escape(str(w.root.parent)) + r"/[^/ )]+", "…", text)
    text = text.replace(str(w.root), "…")
    text = re.sub(r"/tmp/pytest-of-[^/]+/pytest-\d+/[^/ )]+", "…", text)
    if len(str(Path.cwd())) > 1:  # where the tests run from (a suite's ids are looked up there too)
        text = text.replace(str(Path.cwd()), ".")
    # click names the program after the runner in-process ("python -m pytest.stitch" under
    # `python -m pytest`, "stitch" under `pytest`): the page shows what a user types
    text = re.sub(r"`python -m [\w.]+\.stitch ", "`stitch ", text)
    # HDF5's byte offsets of a truncated file follow the size of the test's store, not the CLI
    text = re.sub(r"\b(eof|stored_eof) = \d+", r"\1 = …", text)
    return text.replace("|", "\\|")


KEPT_SECTION = "## Kill -9 and power cuts"  # written by hand below the tables; kept when regenerating


def render_matrix(w: World, old: str) -> str:
    """The page this run's RESULTS make, with ``old``'s hand-kept last section below them."""
    kept = old[old.index("\n" + KEPT_SECTION) + 1:] if "\n" + KEPT_SECTION in old else ""
    lines = [
        "# Bad inputs: what every command does",
        "",
        f"Generated by `{REGENERATE}`; do not edit by hand",
        f"(but for the last section, \"{KEPT_SECTION.removeprefix('## ')}\", which is kept as it is).",
        "The same test fails while this page differs from a fresh run of the matrix.",
        "Every cell was run against the real CLI: the exit code (2: usage, 1: runtime failure), one",
        "line on stderr, no traceback without `--debug`, and a file already at the output path left",
        "byte for byte as it was. `—`: the condition does not apply to the command (reason below).",
        "Read-only folder: `/proc/sys` (tests run as root, which ignores `chmod`). Disk full:",
        "`RLIMIT_FSIZE` with SIGXFSZ ignored, so writes fail with EFBIG.",
        "",
        "| command | " + " | ".join(CONDITIONS.values()) + " |",
        "|---|" + "---|" * len(CONDITIONS),
    ]
    for command in COMMANDS:
        cells = []
        for k in CONDITIONS:
            o = RESULTS.get((command, k))
            cells.append("—" if o is None else (f"{o.code}" if o.ok else f"**{o.code}** ✗"))
        lines.append(f"| `{command}` | " + " | ".join(cells) + " |")
    lines += ["", "## Messages", "", "| command | condition | exit | stderr |", "|---|---|---|---|"]
    for command in COMMANDS:
        for k, title in CONDITIONS.items():
            o = RESULTS.get((command, k))
            if o is not None:
                lines.append(f"| `{command}` | {title} | {o.code} | `{_short(o.message, w)}` |")
    bugs = [(k, why) for k, why in KNOWN_BUGS.items() if k in RESULTS and not RESULTS[k].ok]
    if bugs:
        lines += ["", "## Known bugs (✗ above)", "", "| command | condition | where and what |", "|---|---|---|"]
        lines += [f"| `{c}` | {CONDITIONS[k]} | {why} |" for (c, k), why in bugs]
    lines += ["", "## Conditions that do not apply", "", "| command | conditions | why |", "|---|---|---|"]
    for command in COMMANDS:
        reasons: dict[str, list[str]] = {}
        for k in CONDITIONS:
            if (command, k) in NOT_APPLICABLE:
                reasons.setdefault(NOT_APPLICABLE[(command, k)], []).append(CONDITIONS[k])
        for why, conds in reasons.items():
            lines.append(f"| `{command}` | {', '.join(conds)} | {why} |")
    return "\n".join(lines) + "\n" + ("\n" + kept if kept else "")


def first_difference(old: str, new: str) -> str:
    """The first line where two pages differ, both versions, for a failure message."""
    a, b = old.splitlines(), new.splitlines()
    for n, (x, y) in enumerate(zip(a, b, strict=False), 1):
        if x != y:
            return f"line {n}:\n  committed: {x}\n  fresh:     {y}"
    return f"the committed page has {len(a)} lines, a fresh run {len(b)}"


@pytest.mark.slow
def test_docs_match_the_matrix(world: World, tmp_path_factory: pytest.TempPathFactory) -> None:
    """docs/bad-inputs.md is the table a fresh run of the matrix writes (cells this session has
    not run, e.g. under -k, are run here)."""
    if os.geteuid() != 0:
        pytest.skip("docs/bad-inputs.md is generated as root (the read-only folder is /proc/sys)")
    for key in ALL:
        if key not in NOT_APPLICABLE and key not in RESULTS:
            d = tmp_path_factory.mktemp("cell")
            RESULTS[key] = run_case(CELLS[key](world, d), d)
    committed = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
    fresh = render_matrix(world, committed)
    rewritten = os.environ.get("STITCHKIT_WRITE_MATRIX") == "1" and fresh != committed
    if rewritten:
        DOC.write_text(fresh, encoding="utf-8")
    assert fresh == committed, (
        "docs/bad-inputs.md differs from a fresh run of the matrix at "
        f"{first_difference(committed, fresh)}\n"
        + ("it has been rewritten: review the diff and commit it" if rewritten
           else f"regenerate with `{REGENERATE}`, review the diff and commit it"))


def test_a_stale_matrix_page_is_detected(tmp_path: Path) -> None:
    """The comparison itself, without running the matrix: a page with a wrong cell or message
    differs from what the same results render, and only the hand-kept section is carried over."""
    w = World(*[tmp_path] * (len(fields(World)) - 1), "0" * 64)  # rendering reads .root only
    saved = dict(RESULTS)
    try:
        RESULTS.clear()
        RESULTS[("info", "missing")] = Outcome(2, f"error: {tmp_path}/missing.h5: no such file; check the path", True)
        RESULTS[("models", "bad-option")] = Outcome(
            2, "error: No such option '--bogus'. (see `python -m pytest.stitch models --help`)", True)
        kept = f"{KEPT_SECTION}\n\nWritten by hand.\n"
        page = render_matrix(w, "old generated part\n\n" + kept)
        assert page.endswith("\n" + kept) and "old generated part" not in page
        assert "| `info` | missing file | 2 | `…/missing.h5: no such file; check the path` |" in page
        assert "(see `stitch models --help`)" in page
        assert render_matrix(w, page) == page
        RESULTS[("info", "missing")] = Outcome(1, "error: something else", False)
        assert render_matrix(w, page) != page
        assert "committed:" in first_difference(page, render_matrix(w, page))
    finally:
        RESULTS.clear()
        RESULTS.update(saved)


@pytest.mark.slow
def test_embed_disk_full_while_assembling_then_resume(world: World, tmp_path: Path) -> None:
    """Parts fit, the final store does not: one line, no crash (HDF5 used to SIGSEGV on close
    here), the old output intact; with space again the same command finishes from the parts."""
    out = tmp_path / "o.h5"
    out.write_bytes(SENTINEL)
    args = ["embed", world.manifest, "-m", "lite0", "-o", out, "--overwrite", "--workers", "0",
            "--batch-size", "2"]
    res = run_subprocess(*args, fsize=256 * 1024)  # a part is ~12 KB, the store over 1 MB
    assert res.code == 1, res.stderr
    assert len(res.message_lines) == 1 and "file too large" in res.stderr, res.stderr
    assert out.read_bytes() == SENTINEL
    assert len(list(Path(f"{out}.parts").glob("part-*.h5"))) == 3
    done = run_inprocess(*args, "--json")
    assert done.code == 0, done.stderr
    assert json.loads(done.stdout)["batches_resumed"] == 3
