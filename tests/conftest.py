"""Shared fixtures: small real stores embedded once per test run from ../shared/data.

Kermany ids are the relative paths from labels.csv, so ``id.startswith("train/")`` gives the
split. Everything runs offline on the packaged models.

Three rules hold for the whole suite (docs/development.md):

* **Once per run.** Each real store is embedded once (:func:`built_once`): Lite0 and Lite2 of
  180 Kermany images with their patch tokens, MiniLM of 300 IU reports, and what tests need
  of them (stores without tokens, smaller subsets) is copied out of those, not embedded again.
  Under ``pytest -n`` the workers share them through a lock.
* **In-process.** ``stitch`` (:func:`run_stitch`) runs the command through the console script's
  own wrapper in this process (importing torch costs 5-15 s a process); :func:`run_process`
  starts the real entry point where a process is what the test is about (signals, exit of the
  interpreter, environment read at import).
* **Leave the user alone.** ONNX graphs, prompt caches and every other cache go to a temporary
  folder made once per run (``STITCHKIT_CACHE``, ``XDG_CACHE_HOME``, ``MPLCONFIGDIR``) and removed
  after it; a module whose tests or fixtures change torch's thread count, the environment or the
  working folder without restoring them fails at its last test's teardown.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# The first process of a run (the xdist controller, or the only process) makes the run's cache
# folder; xdist workers inherit its environment.
_RUN_CACHE: str | None = None
_USER_ENV = {k: os.environ.get(k) for k in ("STITCHKIT_CACHE", "XDG_CACHE_HOME", "MPLCONFIGDIR")}
if "PYTEST_XDIST_WORKER" not in os.environ:
    _RUN_CACHE = tempfile.mkdtemp(prefix="stitchkit-test-cache-")
    os.environ["STITCHKIT_CACHE"] = _RUN_CACHE
    os.environ["XDG_CACHE_HOME"] = os.path.join(_RUN_CACHE, "xdg")
    os.environ["MPLCONFIGDIR"] = os.path.join(_RUN_CACHE, "matplotlib")

from stitchkit.datasets import data_root, iu_reports, write_csv, write_jsonl  # noqa: E402
from tests.faults.helpers import run_inprocess  # noqa: E402

PER_CLASS = {"train": 60, "test": 30}  # 180 Kermany images: 120 train, 60 test
BASE_PER_CLASS = {"train": 350, "test": 30}  # 760: what the --help examples need (500 anchors)


_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def pytest_configure(config: pytest.Config) -> None:
    """Under ``pytest -n N`` each worker (and what it starts) computes on cores / N threads, so
    that N workers share the machine instead of each spinning threads for all of it."""
    workers = getattr(config.option, "numprocesses", None)
    if _RUN_CACHE is None or not isinstance(workers, int) or workers < 2:
        return
    _USER_ENV.update({k: os.environ.get(k) for k in _THREAD_VARS})
    for key in _THREAD_VARS:
        os.environ.setdefault(key, str(max(1, (os.cpu_count() or 1) // workers)))


def pytest_unconfigure(config: pytest.Config) -> None:
    if _RUN_CACHE is not None:
        shutil.rmtree(_RUN_CACHE, ignore_errors=True)
        for key, value in _USER_ENV.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# -- process-wide state: a test leaves it as it found it ----------------------------------------
# Set by pytest, or by a library on its first use (torch: the KMP_ pair at import, inductor's
# cache folder when it first compiles; ray: its client mode at import; open_clip: its
# tokenizers' parallelism at import), not by a test.
_ENV_NOT_OURS = {"PYTEST_CURRENT_TEST", "KMP_DUPLICATE_LIB_OK", "KMP_INIT_AT_FORK", "TORCHINDUCTOR_CACHE_DIR",
                 "RAY_CLIENT_MODE", "TOKENIZERS_PARALLELISM"}


def _state() -> dict[str, object]:
    torch = sys.modules.get("torch")
    return {
        "torch threads": torch.get_num_threads() if torch is not None else None,
        "environment": {k: v for k, v in os.environ.items() if k not in _ENV_NOT_OURS},
        "working folder": os.getcwd(),
    }


def _restore(before: dict[str, object]) -> None:
    torch = sys.modules.get("torch")
    if before["torch threads"] is not None and torch is not None:
        torch.set_num_threads(before["torch threads"])
    env = before["environment"]
    for key in set(os.environ) - set(env) - _ENV_NOT_OURS:
        del os.environ[key]
    os.environ.update(env)
    os.chdir(before["working folder"])


def changed_state(before: dict[str, object], after: dict[str, object]) -> list[str]:
    """What differs between two :func:`_state` snapshots, in words (empty when nothing)."""
    changes = []
    if before["torch threads"] is not None and before["torch threads"] != after["torch threads"]:
        changes.append(f"torch threads {before['torch threads']} -> {after['torch threads']}")
    env_a, env_b = before["environment"], after["environment"]
    for key in sorted(set(env_a) | set(env_b)):
        if env_a.get(key) != env_b.get(key):
            changes.append(f"${key} {env_a.get(key)!r} -> {env_b.get(key)!r}")
    if before["working folder"] != after["working folder"]:
        changes.append(f"working folder {before['working folder']} -> {after['working folder']}")
    return changes


_MODULE_START: dict[str, dict[str, object]] = {}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    _MODULE_START.setdefault(str(item.path), _state())
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """After a module's last test (its module fixtures torn down too), the state must be what it
    was before the module's first: a module fixture may set things for its tests and undo them."""
    result = yield
    if nextitem is not None and nextitem.path == item.path:
        return result
    before = _MODULE_START.pop(str(item.path), None)
    changes = changed_state(before, _state()) if before is not None else []
    if changes:
        _restore(before)
        raise AssertionError(f"{item.path.name} (its tests or fixtures) changed process-wide state and did "
                             f"not restore it: {'; '.join(changes)}")
    return result


# -- built once per run ---------------------------------------------------------------------------
def built_once(factory: pytest.TempPathFactory, name: str, build: Callable[[Path], object]) -> Path:
    """``folder/name`` made by ``build(path)`` once per run, shared by every xdist worker.

    The first worker to ask builds it under a lock; the others wait and reuse it. A build that
    fails leaves no mark, so the next asker tries again and reports its own error.
    """
    from filelock import FileLock

    root = factory.getbasetemp()
    if "PYTEST_XDIST_WORKER" in os.environ:
        root = root.parent  # the run's folder, above each worker's own
    shared = root / "built-once"
    shared.mkdir(exist_ok=True)
    path, done = shared / name, shared / f"{name}.done"
    with FileLock(str(shared / f"{name}.lock")):
        if not done.exists():
            if path.is_dir():
                shutil.rmtree(path)
            path.unlink(missing_ok=True)
            build(path)
            done.touch()
    return path


def copy_store(src: Path, out: Path, *, ids: list[str] | None = None, tokens: bool = True) -> Path:
    """``src`` rewritten with only ``ids`` (in the store's order) and, unless ``tokens``, no tokens.

    The store's own attributes (model, weights and ids fingerprints) are kept, so a copy reads as
    the embedding of those inputs; rows are the stored vectors, bit for bit.
    """
    import h5py
    import numpy as np

    from stitchkit.store import EmbeddingStore

    with EmbeddingStore(src) as s:
        rows = np.arange(len(s)) if ids is None else np.sort(s.index_of(ids))
    token_sets = {"tokens", "tokens_mask"}
    with h5py.File(src, "r") as a, h5py.File(out, "w") as b:
        b.attrs.update(dict(a.attrs))
        n = a["ids"].shape[0]
        for key, obj in a.items():
            if not tokens and key in token_sets:
                continue
            if isinstance(obj, h5py.Dataset) and obj.ndim and obj.shape[0] == n:
                b.create_dataset(key, data=obj[rows] if len(rows) else obj[:0], dtype=obj.dtype)
                for k, v in obj.attrs.items():
                    b[key].attrs[k] = v
            else:
                a.copy(obj, b, name=key)
    return out


def _split_ids(store: Path, split: str) -> list[str]:
    from stitchkit.store import EmbeddingStore

    with EmbeddingStore(store) as s:
        return [i for i in s.ids if i.startswith(f"{split}/")]


def kermany_rows(data: Path, per_class: dict[str, int]) -> list[dict[str, str]]:
    """The first ``per_class[split]`` images of each (split, label) of Kermany, in labels.csv's order."""
    root = data / "kermany-pneumonia-224"
    with open(root / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    chosen, counts = [], {}
    for row in rows:
        key = (row["split"], row["label"])
        if counts.get(key, 0) < per_class.get(row["split"], 0):
            counts[key] = counts.get(key, 0) + 1
            chosen.append({"id": row["path"], "path": str(root / row["path"]), "label": row["label"]})
    return chosen


@pytest.fixture(scope="session")
def data() -> Path:
    return data_root()


@pytest.fixture(scope="session")
def kermany_manifest(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A balanced Kermany subset as a CSV manifest with absolute paths."""
    return built_once(tmp_path_factory, "kermany.csv", lambda out: write_csv(kermany_rows(data, PER_CLASS), out))


def _embed(manifest: Path, model: str, out: Path, *extra: str) -> Path:
    from stitchkit.embed import embed_store
    from stitchkit.encoders import load_encoder
    from stitchkit.inputs import read_inputs

    tokens = "--tokens" in extra
    embed_store(read_inputs(manifest), load_encoder(model), out, tokens=tokens, workers=0)
    return out


@pytest.fixture(scope="session")
def kermany_base(data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The run's one embedding of real images: 760 Kermany images (350 train and 30 test per
    class, ``kermany.csv``) through Lite0 (7x7 patch tokens) and Lite2 (9x9), tokens in float16.
    Every image store of the suite is this one or a copy of some of its rows (:func:`copy_store`)."""
    def build(folder: Path) -> None:
        folder.mkdir()
        manifest = write_csv(kermany_rows(data, BASE_PER_CLASS), folder / "kermany.csv")
        for model in ("lite0", "lite2"):
            _embed(manifest, model, folder / f"{model}-tok.h5", "--tokens")

    folder = built_once(tmp_path_factory, "kermany-760", build)
    return {"manifest": folder / "kermany.csv", "lite0": folder / "lite0-tok.h5", "lite2": folder / "lite2-tok.h5"}


def _kermany_ids(data: Path) -> list[str]:
    return [r["id"] for r in kermany_rows(data, PER_CLASS)]


@pytest.fixture(scope="session")
def lite0_token_store(data: Path, kermany_base: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 180 Kermany images of ``kermany_manifest`` through Lite0 with their 49 patch tokens
    (7x7 x 1280, float16)."""
    return built_once(tmp_path_factory, "lite0-tok.h5",
                      lambda out: copy_store(kermany_base["lite0"], out, ids=_kermany_ids(data)))


@pytest.fixture(scope="session")
def lite2_token_store(data: Path, kermany_base: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 180 Kermany images of ``kermany_manifest`` through Lite2 with their 81 patch tokens
    (9x9 x 1280, float16)."""
    return built_once(tmp_path_factory, "lite2-tok.h5",
                      lambda out: copy_store(kermany_base["lite2"], out, ids=_kermany_ids(data)))


@pytest.fixture(scope="session")
def lite0_store(lite0_token_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``lite0_token_store`` without its tokens: the pooled vectors alone."""
    return built_once(tmp_path_factory, "lite0.h5", lambda out: copy_store(lite0_token_store, out, tokens=False))


@pytest.fixture(scope="session")
def lite2_store(lite2_token_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``lite2_token_store`` without its tokens: the pooled vectors alone."""
    return built_once(tmp_path_factory, "lite2.h5", lambda out: copy_store(lite2_token_store, out, tokens=False))


@pytest.fixture(scope="session")
def iu_manifest(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = iu_reports(data / "iu-xray-reports" / "NLMCXR_reports.tgz")[:300]
    return built_once(tmp_path_factory, "iu.jsonl", lambda out: write_jsonl(rows, out))


@pytest.fixture(scope="session")
def minilm_store(iu_manifest: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return built_once(tmp_path_factory, "minilm.h5", lambda out: _embed(iu_manifest, "minilm", out))


@pytest.fixture(scope="session")
def lite2_token_captions(lite2_token_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Label-derived MiniLM captions with word tokens, one per image of ``lite2_token_store``."""
    from stitchkit.zeroshot.captions import CaptionSource, make_captions
    from stitchkit.zeroshot.prompts import load_prompts

    def build(out: Path) -> None:
        make_captions(lite2_token_store, out=out, text_model="minilm",
                      source=CaptionSource(prompts=load_prompts("pneumonia")), tokens=True)

    return built_once(tmp_path_factory, "captions-minilm-tok.h5", build)


@pytest.fixture(scope="session")
def tok(data: Path, lite0_token_store: Path, lite2_token_store: Path, lite2_token_captions: Path,
        tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """40 of those images (10 per split and class) with tokens, their captions, and two maps:
    Lite0 → Lite2 on all 40, Lite2 → MiniLM captions on the 20 train images."""
    from stitchkit.maps import AnchorPlan, fit_map

    d = tmp_path_factory.mktemp("tokens")
    ids = [r["id"] for r in kermany_rows(data, {"train": 10, "test": 10})]
    out = {"dir": d}
    for name, src in (("lite0", lite0_token_store), ("lite2", lite2_token_store), ("captions", lite2_token_captions)):
        out[name] = copy_store(src, d / f"{name}.h5", ids=ids)
    out["map"] = d / "l0-l2.map"
    fit_map(out["lite0"], out["lite2"], "ridge", plan=AnchorPlan(metrics=False)).save(out["map"])
    out["text_map"] = d / "l2-minilm.map"
    plan = AnchorPlan(metrics=False, anchors=_split_ids(out["lite2"], "train"))
    fit_map(out["lite2"], out["captions"], "ridge", plan=plan).save(out["text_map"])
    return out


# -- running `stitch` -----------------------------------------------------------------------------
def run_process(*args: str, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    """Run the real `stitch` entry point in a process of its own, capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", "stitchkit.cli.main", *map(str, args)],
        capture_output=True, text=True, timeout=timeout, **kwargs,
    )


def run_stitch(*args: str, timeout: float = 600, cwd: str | os.PathLike | None = None,
               **kwargs) -> subprocess.CompletedProcess:
    """Run `stitch ARGS` as the console script would, through its wrapper, in this process.

    ``cwd`` is entered for the run and left after it. Anything else a process would take
    (``env``, ``input``) goes to :func:`run_process`: those are read when a process starts.
    """
    if kwargs:
        return run_process(*args, timeout=timeout, cwd=cwd, **kwargs)
    old = os.getcwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        res = run_inprocess(*args)
    finally:
        os.chdir(old)
    return subprocess.CompletedProcess(["stitch", *map(str, args)], res.code, res.stdout, res.stderr)


@pytest.fixture
def stitch():
    return run_stitch


@pytest.fixture(scope="session")
def pneumonia_head(lite2_store: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One small head for the tests of classification: label captions of the 120 train images of
    ``lite2_store`` (MiniLM, "There is pneumonia." and its kin), a head trained on them (width 32,
    2 heads, 15 epochs, seed 0), and the train and test ids as files. Label-supervised: a head
    that has learnt something, which is what a test of the plumbing needs."""
    from stitchkit.head import HeadConfig, TrainConfig, train_head
    from stitchkit.zeroshot.captions import CaptionSource, make_captions
    from stitchkit.zeroshot.prompts import load_prompts

    def build(folder: Path) -> None:
        folder.mkdir()
        made = make_captions(lite2_store, out=folder / "captions.h5", text_model="minilm",
                             source=CaptionSource(prompts=load_prompts("pneumonia")))
        (folder / "origin.txt").write_text(made.origin)
        for split in ("train", "test"):
            (folder / f"{split}.ids").write_text("\n".join(_split_ids(lite2_store, split)) + "\n")
        cfg = TrainConfig(min_steps=0, head=HeadConfig(width=32, heads=2), epochs=15, batch_size=32, lr=3e-3,
                          patience=15)
        train_head(lite2_store, folder / "captions.h5", out=folder / "head.st", config=replace(cfg, seed=0),
                   ids=_split_ids(lite2_store, "train"))

    folder = built_once(tmp_path_factory, "pneumonia-head", build)
    return {"dir": folder, "head": folder / "head.st", "captions": folder / "captions.h5",
            "origin": folder / "origin.txt", "train_ids": folder / "train.ids", "test_ids": folder / "test.ids"}


#: Fixtures that embed with a real model or train a head: a test that uses one is slow, and
#: `make test-fast` (``-m "not slow"``) leaves it to `make test`.
REAL_MODEL_FIXTURES = {"kermany_base", "lite0_token_store", "lite2_token_store", "lite0_store", "lite2_store",
                       "minilm_store", "lite2_token_captions", "tok", "pneumonia_head"}


#: The longest modules, longest first (`make test` prints the 15 slowest tests; re-rank from
#: there). Under ``pytest -n 2 --dist loadfile`` a module runs on one worker; starting the long
#: ones first lets the short ones fill in behind them, so both workers finish together; the
#: examples and the demo need no session store, so the second worker runs them while the first
#: embeds the one real store (``kermany_base``) for the --help examples.
LONGEST_FIRST = ["test_help_examples.py", "test_examples.py", "test_demo.py", "test_kill_more.py",
                 "test_cross_machine.py", "test_embed.py", "test_engine_ray.py", "test_fit_shards.py",
                 "test_kill_stream.py", "test_kill.py", "test_bad_inputs.py", "test_report.py",
                 "test_kill_tokens.py", "test_benchmarks_smoke.py", "test_token_fit.py", "test_xception.py",
                 "test_first_hour.py", "test_cxr_torchxrayvision.py"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if REAL_MODEL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: order within a module kept


@pytest.fixture
def torch_threads() -> Iterator[Callable[[int], None]]:
    """``torch_threads(n)`` sets torch's thread count for the test; the count is restored after it."""
    import torch

    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)
