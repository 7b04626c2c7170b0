"""`stitch embed --runtime onnx`: ONNX Runtime gives what torch gives, on real Kermany images.

Globals and tokens of lite0 from both runtimes agree to cosine 0.99999 per row, the tokens'
mean is the global vector on both (the maps rely on mean pooling commuting with affine maps),
the export is cached per graph and a broken cache entry is re-exported, an unfinished run
continues on the runtime that started it, and what ONNX cannot run is one clear line.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from stitchkit.embed import embed_store, load_sample  # noqa: E402
from stitchkit.encoders import load_encoder  # noqa: E402
from stitchkit.encoders.registry import MODELS  # noqa: E402
from stitchkit.errors import UsageError  # noqa: E402
from stitchkit.inputs import read_inputs  # noqa: E402
from stitchkit.store import EmbeddingStore  # noqa: E402

pytestmark = pytest.mark.slow
N_IMAGES = 16  # both classes, train and test


def row_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


@pytest.fixture(scope="module")
def small_manifest(kermany_manifest: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    with open(kermany_manifest, newline="") as fh:
        rows = list(csv.DictReader(fh))
    by_key: dict[tuple[str, str], list[dict[str, str]]] = {}
    for row in rows:
        by_key.setdefault((row["id"].split("/")[0], row["label"]), []).append(row)
    chosen = [r for group in by_key.values() for r in group[: N_IMAGES // len(by_key)]]
    out = tmp_path_factory.mktemp("onnx") / "small.csv"
    with open(out, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(chosen[0]))
        writer.writeheader()
        writer.writerows(chosen)
    return out


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ONNX cache for the module, so each graph is exported once here."""
    folder = tmp_path_factory.mktemp("stitchkit-cache")
    old = os.environ.get("STITCHKIT_CACHE")
    os.environ["STITCHKIT_CACHE"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("STITCHKIT_CACHE", None)
    else:
        os.environ["STITCHKIT_CACHE"] = old


@pytest.fixture(scope="module")
def encoders(cache: Path) -> dict[str, object]:
    return {"torch": load_encoder("lite0", runtime="torch"), "onnx": load_encoder("lite0", runtime="onnx")}


@pytest.fixture(scope="module")
def batch(small_manifest: Path, encoders: dict[str, object]):
    enc = encoders["torch"]
    items = read_inputs(small_manifest).items
    return enc.collate([enc.prepare(load_sample(it, "image")[0]) for it in items])


def test_onnx_globals_and_tokens_equal_torch_on_kermany(encoders: dict[str, object], batch) -> None:
    import torch

    with torch.inference_mode():
        out = {name: enc.encode(batch, tokens=True) for name, enc in encoders.items()}
        plain = {name: enc.encode(batch).embeddings.numpy() for name, enc in encoders.items()}
    assert encoders["onnx"].runtime == "onnx" and encoders["torch"].runtime == "torch"
    g_onnx, g_torch = out["onnx"].embeddings.numpy(), out["torch"].embeddings.numpy()
    t_onnx, t_torch = out["onnx"].tokens.numpy(), out["torch"].tokens.numpy()
    assert g_onnx.shape == g_torch.shape == (len(batch), 1280)
    assert t_onnx.shape == t_torch.shape == (len(batch), 49, 1280)  # 7 x 7 map at 224 px
    assert out["onnx"].mask.all() and out["onnx"].mask.shape == (len(batch), 49)
    assert row_cosine(g_onnx, g_torch).min() >= 0.99999
    assert row_cosine(plain["onnx"], plain["torch"]).min() >= 0.99999
    # Tokens, per image (all its tokens as one row) and per token where the token is not zero.
    assert row_cosine(t_onnx.reshape(len(batch), -1), t_torch.reshape(len(batch), -1)).min() >= 0.99999
    live = np.linalg.norm(t_torch, axis=-1) > 1e-3
    assert row_cosine(t_onnx, t_torch)[live].min() >= 0.9999
    # Global-only runs give the tokens run's global vector (one graph serves both).
    np.testing.assert_allclose(plain["onnx"], g_onnx, rtol=1e-5, atol=1e-6)
    for g, t in ((g_onnx, t_onnx), (g_torch, t_torch)):
        np.testing.assert_allclose(t.mean(axis=1), g, rtol=1e-4, atol=1e-5)


def test_stitch_embed_runtime_onnx_store_matches_torch(small_manifest: Path, cache: Path, tmp_path: Path,
                                                       stitch) -> None:
    out = tmp_path / "onnx.h5"
    env = {**os.environ, "STITCHKIT_CACHE": str(cache)}
    run = stitch("embed", small_manifest, "-m", "lite0", "--tokens", "--runtime", "onnx", "-o", out,
                 "--batch-size", "8", "--json", env=env)
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["runtime"] == "onnx" and summary["samples"] == N_IMAGES
    ref = tmp_path / "torch.h5"
    embed_store(read_inputs(small_manifest), load_encoder("lite0", runtime="torch"), ref, tokens=True,
                batch_size=8, workers=0)
    with EmbeddingStore(out) as a, EmbeddingStore(ref) as b:
        assert list(a.ids) == list(b.ids)
        assert a.space() == b.space()  # the same embedding space: maps fitted on one apply to the other
        runtime = json.loads(a.attrs["runtime"])
        assert runtime["name"] == "onnx" and runtime["onnxruntime"] == "1.32.0"
        assert json.loads(b.attrs["runtime"])["name"] == "torch"
        ga, gb = a.read(np.arange(len(a))), b.read(np.arange(len(b)))
        assert row_cosine(ga, gb).min() >= 0.99999
        ta, _ = a.read_tokens(np.arange(len(a)))
        tb, _ = b.read_tokens(np.arange(len(b)))
        ta, tb = np.asarray(ta, np.float32), np.asarray(tb, np.float32)
        assert row_cosine(ta.reshape(len(ta), -1), tb.reshape(len(tb), -1)).min() >= 0.99999
        # float16 tokens: their mean is the float32 global to float16 precision
        np.testing.assert_allclose(ta.mean(axis=1), ga, rtol=2e-3, atol=2e-3)


def test_the_export_is_cached_per_graph_and_a_broken_entry_is_rebuilt(cache: Path, encoders: dict[str, object],
                                                                     batch) -> None:
    import torch

    graphs = sorted((cache / "onnx").glob("*.onnx"))
    assert [g.name for g in graphs] == [encoders["onnx"]._onnx.path.name]
    assert not list((cache / "onnx").glob(".*partial"))  # written atomically, nothing left over
    again = load_encoder("lite0", runtime="onnx")
    assert again.export_seconds is None and again.runtime == "onnx"  # from the cache
    # Another input size is another graph (timm: spec with the same weights, 192 px).
    spec = f"timm:efficientnet_lite0?weights={MODELS['lite0'].weights()}&bn_eps=0.001&img_size=192"
    small = load_encoder(spec, runtime="onnx")
    assert small.export_seconds is not None
    assert len(list((cache / "onnx").glob("*.onnx"))) == 2
    # A truncated cache entry (a disk that filled up under another tool) is exported again.
    graphs[0].write_bytes(graphs[0].read_bytes()[:1000])
    rebuilt = load_encoder("lite0", runtime="onnx")
    assert rebuilt.export_seconds is not None
    with torch.inference_mode():
        a = rebuilt.encode(batch).embeddings.numpy()
        b = encoders["torch"].encode(batch).embeddings.numpy()
    assert row_cosine(a, b).min() >= 0.99999


class _StopAfterFirstBatch:
    """A progress sink that interrupts the job once a batch is saved, as Ctrl-C would."""

    def start(self, total: int, done: int = 0) -> None:
        self.done = done

    def advance(self, n: int) -> None:
        raise KeyboardInterrupt


def test_an_unfinished_run_continues_on_the_runtime_that_started_it(
    small_manifest: Path, encoders: dict[str, object], tmp_path: Path
) -> None:
    inputs = read_inputs(small_manifest)
    uninterrupted = tmp_path / "full.h5"
    embed_store(inputs, encoders["torch"], uninterrupted, batch_size=4, workers=0)
    out = tmp_path / "resumed.h5"
    with pytest.raises(KeyboardInterrupt):
        embed_store(inputs, encoders["torch"], out, batch_size=4, workers=0, progress=_StopAfterFirstBatch())
    parts = out.with_name(out.name + ".parts")
    assert len(list(parts.glob("part-*.h5"))) == 1
    # An explicit other runtime would mix torch and ONNX batches: refused, naming the fix.
    with pytest.raises(UsageError, match=r"made with --runtime torch: re-run with --runtime torch \(or auto\)"):
        embed_store(inputs, encoders["onnx"], out, batch_size=4, workers=0)
    # auto continues on torch, and the result equals the uninterrupted torch run exactly.
    auto = load_encoder("lite0")
    assert auto.runtime == "onnx" and auto.runtime_requested == "auto"
    result = embed_store(inputs, auto, out, batch_size=4, workers=0)
    assert result.runtime == "torch" and result.batches_resumed == 1
    with EmbeddingStore(out) as a, EmbeddingStore(uninterrupted) as b:
        np.testing.assert_array_equal(a.read(np.arange(len(a))), b.read(np.arange(len(b))))
        assert json.loads(a.attrs["runtime"])["name"] == "torch"
    assert not parts.exists()


def test_what_onnx_cannot_run_is_one_clear_line(iu_manifest: Path, tmp_path: Path, stitch) -> None:
    run = stitch("embed", iu_manifest, "-m", "minilm", "--runtime", "onnx", "-o", tmp_path / "t.h5")
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "--runtime torch" in lines[0] and "Traceback" not in run.stderr
    assert not (tmp_path / "t.h5").exists()
    # auto: text models, other dtypes run on torch without a word
    assert load_encoder("minilm").runtime == "torch"
    with pytest.raises(UsageError, match="--dtype float32, or --runtime torch"):
        load_encoder("lite0", dtype="bfloat16", runtime="onnx")
    assert load_encoder("lite0", dtype="bfloat16").runtime == "torch"
    with pytest.raises(UsageError, match="unknown --runtime"):
        load_encoder("lite0", runtime="tensorrt")
