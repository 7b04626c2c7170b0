"""`stitch embed` and the store on real models and real chest X-rays."""

from __future__ import annotations

import csv
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from stitchkit.store import EmbeddingStore

pytestmark = pytest.mark.slow  # real models in every test (make test-fast leaves them out)


def test_packaged_lite_weights_classify_a_real_photo() -> None:
    """Weights mapped by position must still be ImageNet weights: a temple photo is a palace."""
    import timm
    from PIL import Image
    from sklearn.datasets import load_sample_image

    from stitchkit.encoders.packaged import lite_weights
    from stitchkit.encoders.weights import load_into

    model = timm.create_model("efficientnet_lite0")
    load_into(model, lite_weights("0"), "lite0")
    cfg = timm.data.resolve_model_data_config(model)
    x = timm.data.create_transform(**cfg)(Image.fromarray(load_sample_image("china.jpg")))
    with torch.inference_mode():
        top = model.eval()(x[None]).argmax().item()
    assert top == 698  # ImageNet class 698: palace


def test_store_holds_what_the_manifest_gave(lite0_store: Path, kermany_manifest: Path) -> None:
    with open(kermany_manifest, newline="") as fh:
        rows = list(csv.DictReader(fh))
    with EmbeddingStore(lite0_store) as store:
        assert len(store) == len(rows) == 180
        assert store.dim == 1280 and store.complete and store.is_stitchkit
        assert list(store.ids) == [r["id"] for r in rows]  # input order kept
        assert list(store.labels) == [r["label"] for r in rows]
        X = store.read()
        assert np.isfinite(X).all() and X.std() > 0
        attrs = store.attrs
        assert attrs["model_spec"] == "lite0" and len(attrs["weights_sha256"]) == 64
        assert json.loads(attrs["preprocessing"])["input_size"] == [3, 224, 224]
        # Normal and pneumonia images differ in this space: class means are far apart.
        lab = store.labels
        gap = X[lab == "normal"].mean(0) - X[lab == "pneumonia"].mean(0)
        assert np.linalg.norm(gap) > 0.1 * np.linalg.norm(X.mean(0))


def _image_folder(root: Path, data: Path, n: int = 4) -> Path:
    src = data / "kermany-pneumonia-224" / "test"
    for cls in ("NORMAL", "PNEUMONIA"):
        (root / cls).mkdir(parents=True)
        for f in sorted((src / cls).iterdir())[:n]:
            shutil.copy(f, root / cls / f.name)
    return root


def test_bad_inputs_are_recorded_and_the_run_goes_on(tmp_path: Path, data: Path, stitch) -> None:
    folder = _image_folder(tmp_path / "imgs", data)
    (folder / "NORMAL" / "empty.png").write_bytes(b"")
    (folder / "NORMAL" / "notes.png").write_text("this is a text file named .png")
    good = sorted((folder / "PNEUMONIA").iterdir())[0].read_bytes()
    (folder / "PNEUMONIA" / "truncated.jpeg").write_bytes(good[: len(good) // 3])
    out = tmp_path / "out.h5"
    res = stitch("embed", folder, "-m", "lite0", "-o", out, "--batch-size", "4", "--json")
    assert res.returncode == 0, res.stderr
    assert "warning: skipping" in res.stderr and "Traceback" not in res.stderr
    with EmbeddingStore(out) as store:
        assert len(store) == 8
        assert set(store.labels) == {"NORMAL", "PNEUMONIA"}
        failed = dict(store.failed)
        assert failed["NORMAL/empty.png"] == "empty file (0 bytes)"
        assert "not an image" in failed["NORMAL/notes.png"]
        assert "truncated" in failed["PNEUMONIA/truncated.jpeg"]

    strict = stitch("embed", folder, "-m", "lite0", "-o", tmp_path / "strict.h5", "--strict")
    assert strict.returncode == 2  # an unreadable input is bad input: a usage error
    assert strict.stderr.strip().count("\n") == 0 and "--strict" in strict.stderr
    assert not (tmp_path / "strict.h5").exists()


def test_kill_9_then_rerun_equals_an_uninterrupted_run(tmp_path: Path, kermany_manifest: Path, stitch) -> None:
    with open(kermany_manifest, newline="") as fh:
        rows = list(csv.DictReader(fh))[:64]
    manifest = tmp_path / "m.csv"
    with open(manifest, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "killed.h5"
    args = [sys.executable, "-m", "stitchkit.cli.main", "embed", str(manifest), "-m", "lite0",
            "-o", str(out), "--batch-size", "8"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = Path(str(out) + ".parts")
    deadline = time.time() + 300
    while len(list(parts.glob("part-*.h5"))) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists(), "a killed run must not leave a store behind"
    done_before = len(list(parts.glob("part-*.h5")))
    assert 3 <= done_before < 8

    res = stitch("embed", manifest, "-m", "lite0", "-o", out, "--batch-size", "8", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["batches_resumed"] == done_before
    ref = tmp_path / "ref.h5"
    assert stitch("embed", manifest, "-m", "lite0", "-o", ref, "--batch-size", "8").returncode == 0
    with EmbeddingStore(out) as a, EmbeddingStore(ref) as b:
        assert list(a.ids) == list(b.ids) == [r["id"] for r in rows]
        np.testing.assert_allclose(a.read(), b.read(), rtol=1e-5, atol=1e-6)
    assert not parts.exists()
    again = stitch("embed", manifest, "-m", "lite0", "-o", out, "--batch-size", "8")
    assert again.returncode == 0 and "already complete" in again.stdout


def test_a_second_writer_is_refused(tmp_path: Path, kermany_manifest: Path, stitch) -> None:
    out = tmp_path / "busy.h5"
    parts = Path(str(out) + ".parts")
    parts.mkdir()
    with open(parts / "lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.write("4242")
        fh.flush()
        res = stitch("embed", kermany_manifest, "-m", "lite0", "-o", out)
    assert res.returncode == 1
    assert "another process" in res.stderr and "Traceback" not in res.stderr


def _texts(tmp_path: Path, iu_manifest: Path, n: int = 30) -> Path:
    lines = [json.loads(line)["text"] for line in iu_manifest.read_text().splitlines()[:n]]
    path = tmp_path / "reports.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_texts_keep_input_order_and_match_direct_encoding(tmp_path: Path, iu_manifest: Path, stitch) -> None:
    from stitchkit.encoders import load_encoder

    texts = _texts(tmp_path, iu_manifest, 20)
    out = tmp_path / "t.h5"
    assert stitch("embed", texts, "-m", "minilm", "-o", out, "--batch-size", "6").returncode == 0
    lines = texts.read_text().splitlines()
    encoder = load_encoder("minilm")
    with torch.inference_mode():
        direct = np.stack([encoder.encode([t]).embeddings[0].numpy() for t in lines])
    with EmbeddingStore(out) as store:
        assert list(store.ids) == [str(i) for i in range(1, 21)]
        assert list(store.texts) == lines
        np.testing.assert_allclose(store.read(), direct, atol=2e-5)


def test_shards_merged_equal_one_run(tmp_path: Path, iu_manifest: Path, stitch) -> None:
    texts = _texts(tmp_path, iu_manifest, 30)
    shards = []
    for i in range(3):
        shard = tmp_path / f"s{i}.h5"
        res = stitch("embed", texts, "-m", "minilm", "-o", shard, "--shard", f"{i}/3")
        assert res.returncode == 0, res.stderr
        shards.append(shard)
    merged, whole = tmp_path / "merged.h5", tmp_path / "whole.h5"
    assert stitch("merge", *shards, "-o", merged).returncode == 0
    assert stitch("embed", texts, "-m", "minilm", "-o", whole).returncode == 0
    with EmbeddingStore(merged) as m, EmbeddingStore(whole) as w:
        assert sorted(m.ids) == sorted(w.ids) and len(set(m.ids)) == 30
        np.testing.assert_allclose(m.read(m.index_of(list(w.ids))), w.read(), atol=2e-5)

    overlap = stitch("merge", shards[0], shards[0], "-o", tmp_path / "bad.h5")
    assert overlap.returncode == 2 and "shards overlap" in overlap.stderr
    assert not (tmp_path / "bad.h5").exists()


def test_merge_refuses_mixed_models_and_unfinished_shards(tmp_path: Path, lite0_store: Path, minilm_store: Path, stitch) -> None:
    mixed = stitch("merge", lite0_store, minilm_store, "-o", tmp_path / "x.h5")
    assert mixed.returncode == 2 and "merge only shards of one model" in mixed.stderr
    unfinished = tmp_path / "unfinished.h5"
    shutil.copy(lite0_store, unfinished)
    with h5py.File(unfinished, "a") as h5:
        h5.attrs["complete"] = False
    res = stitch("merge", lite0_store, unfinished, "-o", tmp_path / "y.h5")
    assert res.returncode == 2 and "incomplete" in res.stderr


def test_tokens_are_kept_with_a_mask(tmp_path: Path, data: Path, iu_manifest: Path, stitch) -> None:
    folder = _image_folder(tmp_path / "imgs", data, n=2)
    out = tmp_path / "tok.h5"
    assert stitch("embed", folder, "-m", "lite0", "-o", out, "--tokens").returncode == 0
    with EmbeddingStore(out) as store:
        tok, mask = store.read_tokens(np.arange(len(store)))
        assert tok.shape == (4, 49, 1280) and mask.all()
        # The global vector is the mean of the final feature map (pooling), so it matches.
        np.testing.assert_allclose(tok.mean(1), store.read(), rtol=2e-2, atol=2e-3)
    texts = _texts(tmp_path, iu_manifest, 8)
    tout = tmp_path / "ttok.h5"
    assert stitch("embed", texts, "-m", "minilm", "-o", tout, "--tokens").returncode == 0
    with EmbeddingStore(tout) as store:
        tok, mask = store.read_tokens(np.arange(8))
        assert tok.shape[0] == 8 and tok.shape[2] == 384
        assert (mask.sum(1) > 5).all() and not mask.all()  # padded to the longest report


TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2},
}


def test_open_clip_towers_load_a_local_checkpoint(tmp_path: Path, data: Path, stitch) -> None:
    """Random weights (no CLIP weights can be had here): this proves the loading code."""
    import open_clip
    from safetensors.torch import save_file

    config = tmp_path / "tiny-clip.json"
    config.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(config)
    model = open_clip.create_model("tiny-clip")
    ckpt = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ckpt))

    folder = _image_folder(tmp_path / "imgs", data, n=2)
    out = tmp_path / "clip-img.h5"
    spec = f"open_clip:{config}?weights={ckpt}&tower=image"
    res = stitch("embed", folder, "-m", spec, "-o", out, "--tokens")
    assert res.returncode == 0, res.stderr
    texts = tmp_path / "p.txt"
    texts.write_text("There is pneumonia.\nThere is no pneumonia.\n")
    tout = tmp_path / "clip-txt.h5"
    res = stitch("embed", texts, "-m", spec.replace("tower=image", "tower=text"), "-o", tout)
    assert res.returncode == 0, res.stderr

    tokenizer = open_clip.get_tokenizer("tiny-clip")
    with torch.inference_mode():
        expected = model.eval().encode_text(tokenizer(texts.read_text().splitlines())).numpy()
    with EmbeddingStore(out) as img, EmbeddingStore(tout) as txt:
        assert img.dim == txt.dim == 32 and len(img) == 4
        assert img.read_tokens(np.arange(4))[0].shape == (4, 16, 64)
        np.testing.assert_allclose(txt.read(), expected, atol=1e-5)


def test_missing_weights_offline_is_one_clear_line(tmp_path: Path, stitch) -> None:
    texts = tmp_path / "t.txt"
    texts.write_text("hello\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    res = stitch("embed", texts, "-m", "hf:sentence-transformers/not-here", "-o", tmp_path / "o.h5", env=env)
    assert res.returncode == 2
    assert "not-here" in res.stderr and "local directory" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["embed", "nowhere/", "-m", "lite0", "-o", "o.h5"], "does not exist"),
        (["embed", "{texts}", "-m", "no-such-model", "-o", "o.h5"], "unknown model spec"),
        (["embed", "{texts}", "-m", "lite0", "-o", "o.h5"], "pick a model of the same modality"),
        (["embed", "{texts}", "-m", "minilm", "-o", "o.h5", "--shard", "3/2"], "--shard"),
        (["embed", "{texts}", "-m", "minilm", "-o", "o.h5", "--tokens", "--token-grid", "4x4"], "pools image patch grids"),
        (["info", "{texts}"], "not a stitchkit file"),
        (["info", "nowhere.h5"], "no such file"),
    ],
)
def test_usage_errors_exit_2_with_one_line(tmp_path: Path, stitch, args: list[str], needle: str) -> None:
    texts = tmp_path / "t.txt"
    texts.write_text("There is pneumonia.\n")
    args = [a.replace("{texts}", str(texts)) for a in args]
    res = stitch(*args, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert needle in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr


def test_info_reads_plain_hdf5_from_other_tools(tmp_path: Path, stitch) -> None:
    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as h5:
        h5["embeddings"] = np.ones((3, 4), dtype=np.float32)
        h5["ids"] = np.array([b"a", b"b", b"c"])
    res = stitch("info", path, "--json")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["samples"] == 3 and info["dim"] == 4 and "provenance unknown" in info["kind"]
    with EmbeddingStore(path) as store:
        assert list(store.ids) == ["a", "b", "c"]


def test_models_lists_the_packaged_models(stitch) -> None:
    res = stitch("models", "--json")
    rows = {r["name"]: r for r in json.loads(res.stdout)["models"]}
    assert rows["lite0"]["installed"] and rows["lite0"]["dim"] == 1280
    assert rows["minilm"]["modality"] == "text" and rows["minilm"]["dim"] == 384


class _StopAfter:
    """A progress sink that interrupts the run after ``n`` batches (a Ctrl-C mid-run)."""

    def __init__(self, n: int) -> None:
        self.left = n

    def start(self, total: int, done: int = 0) -> None: ...

    def advance(self, n: int) -> None:
        self.left -= 1
        if self.left <= 0:
            raise KeyboardInterrupt


def test_token_grid_pools_at_embed_time_as_pooling_the_full_store(tmp_path: Path, data: Path) -> None:
    """`--token-grid 4x4`: Lite0's 7x7 tokens averaged onto 4x4 as they are embedded equal the
    full store's tokens pooled afterwards (float16 apart); the globals are bit for bit those of
    an embed without it; the store records both grids; a resume refuses another grid."""
    from stitchkit.embed import embed_store
    from stitchkit.encoders import load_encoder
    from stitchkit.errors import UsageError
    from stitchkit.inputs import read_inputs
    from stitchkit.maps.tokens import pooling_relation
    from stitchkit.store.grid import resample_tokens

    inputs = read_inputs(_image_folder(tmp_path / "imgs", data, n=3))
    encoder = load_encoder("lite0")
    full, pooled, same = tmp_path / "full.h5", tmp_path / "4x4.h5", tmp_path / "7x7.h5"
    embed_store(inputs, encoder, full, tokens=True, workers=0)
    embed_store(inputs, encoder, pooled, tokens=True, token_grid="4x4", workers=0)
    embed_store(inputs, encoder, same, tokens=True, token_grid="7x7", workers=0)
    with EmbeddingStore(full) as f, EmbeddingStore(pooled) as p, EmbeddingStore(same) as s:
        rows = np.arange(len(f))
        assert np.array_equal(p.read(), f.read()) and np.array_equal(s.read(), f.read())
        assert p.token_shape == (16, 1280) and s.token_shape == (49, 1280)
        assert (p.attrs["token_grid"], p.attrs["model_token_grid"]) == ("4x4", "7x7")
        assert "token_grid" not in f.attrs
        toks, mask = p.read_tokens(rows)
        full_toks, _ = f.read_tokens(rows)
        np.testing.assert_array_equal(s.read_tokens(rows)[0], full_toks)  # 7x7 of 7x7: the tokens
        glob = p.read()
    assert mask.all()
    scale = np.abs(full_toks).max()
    np.testing.assert_allclose(toks, resample_tokens(full_toks, 4), rtol=0, atol=1e-3 * scale)
    # Area weights keep the grid's mean: the global is still the mean of the pooled tokens.
    assert pooling_relation(glob, toks, mask) == "mean"

    # An interrupted 4x4 run resumes only as 4x4; the same command finishes it unchanged.
    out = tmp_path / "resumed.h5"
    with pytest.raises(KeyboardInterrupt):
        embed_store(inputs, encoder, out, tokens=True, token_grid="4x4", workers=0, batch_size=2,
                    progress=_StopAfter(1))
    parts = Path(str(out) + ".parts")
    assert len(list(parts.glob("part-*.h5"))) == 1
    for grid in (None, "2x2"):
        with pytest.raises(UsageError, match=r"unfinished run with other settings \(token_grid\)"):
            embed_store(inputs, encoder, out, tokens=True, token_grid=grid, workers=0, batch_size=2)
    # A part of another grid slipped into the folder is refused when the store is assembled.
    with pytest.raises(KeyboardInterrupt):
        embed_store(inputs, encoder, tmp_path / "other.h5", tokens=True, workers=0, batch_size=2,
                    progress=_StopAfter(1))
    stray = parts / "part-000002.h5"
    shutil.copy(Path(str(tmp_path / "other.h5") + ".parts") / "part-000000.h5", stray)
    with pytest.raises(UsageError, match=r"tokens on other grids \(4x4, the model's\)"):
        embed_store(inputs, encoder, out, tokens=True, token_grid="4x4", workers=0, batch_size=2)
    stray.unlink()
    embed_store(inputs, encoder, out, tokens=True, token_grid="4x4", workers=0, batch_size=2)
    with EmbeddingStore(out) as r:
        assert np.array_equal(r.read(), glob)
        np.testing.assert_array_equal(r.read_tokens(rows)[0], toks)
        assert r.attrs["token_grid"] == "4x4"
    # A store on another grid (or without tokens) is not this run: never "already complete".
    with pytest.raises(UsageError, match="holds another embedding run"):
        embed_store(inputs, encoder, full, tokens=True, token_grid="4x4", workers=0)


@pytest.mark.parametrize(("grid", "tokens", "needle"), [
    ("8x8", True, "finer than lite0's 7x7 patch grid: choose at most 7x7"),
    ("4x3", True, "square grid"),
    ("four", True, "takes HxW"),
    ("4x4", False, "add --tokens"),
])
def test_token_grid_refusals_are_one_line(tmp_path: Path, data: Path, grid: str, tokens: bool, needle: str) -> None:
    from tests.faults.helpers import run_inprocess

    folder = _image_folder(tmp_path / "imgs", data, n=1)
    out = tmp_path / "o.h5"
    res = run_inprocess("embed", folder, "-m", "lite0", "-o", out, *(["--tokens"] if tokens else []),
                        "--token-grid", grid)
    assert res.code == 2, res.stderr
    assert needle in res.stderr and len(res.message_lines) == 1
    assert not out.exists() and not Path(str(out) + ".parts").exists()  # refused before any work


def test_decode_workers_give_bit_for_bit_what_the_main_process_gives(tmp_path: Path, data: Path) -> None:
    """`--workers auto` (decode workers at lower priority, batches stacked in shared memory,
    parts written on their own thread) writes exactly the store `--workers 0` writes."""
    from stitchkit.embed import auto_workers, decode_workers, embed_store
    from stitchkit.encoders import load_encoder
    from stitchkit.inputs import read_inputs

    # auto: the cores the forward leaves free (at most 8), at least one per 4 of its threads
    assert [auto_workers(c, t) for c, t in ((2, 2), (1, 1), (16, 16), (16, 4), (64, 1), (8, 12))] == [1, 1, 4, 8, 8, 3]
    folder = _image_folder(tmp_path / "imgs", data, n=3)
    (folder / "NORMAL" / "empty.png").write_bytes(b"")  # a failure in a batch changes nothing
    inputs = read_inputs(folder)
    encoder = load_encoder("lite0")
    assert decode_workers(None, encoder) >= 1
    seen: list[int] = []

    class Count:
        def start(self, total: int, done: int = 0) -> None: ...

        def advance(self, n: int) -> None:
            seen.append(n)

    stores = {w: tmp_path / f"w{w}.h5" for w in (0, None)}
    for workers, out in stores.items():
        embed_store(inputs, encoder, out, tokens=True, batch_size=2, workers=workers, progress=Count(),
                    on_failure=lambda *_: None)
    assert seen == [2, 2, 2, 1] * 2  # 7 inputs, each batch reported once it is on disk
    with EmbeddingStore(stores[0]) as a, EmbeddingStore(stores[None]) as b:
        rows = np.arange(len(a))
        assert len(a) == 6 and list(a.ids) == list(b.ids) and a.failed == b.failed
        assert np.array_equal(a.read(rows), b.read(rows))
        np.testing.assert_array_equal(a.read_tokens(rows)[0], b.read_tokens(rows)[0])


@pytest.mark.parametrize("model", ["lite0", "lite2"])  # lite2: a 224 -> 260 upscale before the crop
def test_eight_bit_pixels_are_the_transform_bit_for_bit(data: Path, model: str) -> None:
    """Decode workers send uint8 pixels and `encode` normalises them (stitchkit.encoders.pixels):
    the model's input is bit for bit what timm's whole transform gives, so its output is too,
    whether an RGB image's equal channels were resized as one (Kermany's) or not (colour)."""
    import torch
    from PIL import Image

    from stitchkit.encoders import load_encoder
    from stitchkit.inputs.pixels import load_image

    encoder = load_encoder(model, runtime="torch")
    files = sorted((data / "kermany-pneumonia-224" / "test" / "PNEUMONIA").iterdir())[:3]
    images = [load_image(f) for f in files]
    r, g, b = images[2].split()
    images += [images[0].convert("L").resize((301, 257)), images[1].crop((10, 0, 200, 224)),  # grey, not square
               Image.merge("RGB", (r, g.point(lambda v: v // 2), b))]  # colour: three channels resized
    prepared = [encoder.prepare(im) for im in images]
    assert all(p.dtype == torch.uint8 for p in prepared)
    batch = encoder.collate(prepared)
    whole = torch.stack([encoder._transform(im.convert("RGB")) for im in images])
    assert torch.equal(encoder.normalise(batch), whole)
    with torch.inference_mode():
        assert torch.equal(encoder.encode(batch).embeddings, encoder.encode(whole).embeddings)
    assert encoder.normalise(whole) is whole  # float batches pass as they are
