"""`stitch explain` on the session's token stores: a token head natively and through a map, and
patch similarities through a map into the text space; the grids are what the inputs give."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stitchkit.explain import encoder_view, explain
from stitchkit.head import Head, HeadConfig, TrainConfig, train_head
from stitchkit.maps import load_map
from stitchkit.maps import tokens as T
from stitchkit.store import EmbeddingStore
from stitchkit.zeroshot import patches as P
from stitchkit.zeroshot.prompt_cache import embed_prompts
from stitchkit.zeroshot.prompts import load_prompts

pytestmark = pytest.mark.slow


def _ids(store: Path, split: str) -> list[str]:
    with EmbeddingStore(store) as s:
        return [i for i in s.ids if i.startswith(f"{split}/")]


@pytest.fixture(scope="module")
def token_head(tok: dict[str, Path]) -> Path:
    cfg = TrainConfig(min_steps=0, head=HeadConfig(width=16, heads=2), epochs=4, batch_size=10, lr=3e-3,
                      patience=10, val_fraction=0.0)
    path = tok["dir"] / "explain-token.head"
    train_head(tok["lite2"], tok["captions"], out=path, config=replace(cfg, seed=0), ids=_ids(tok["lite2"], "train"))
    return path


def _picked(tok: dict[str, Path]) -> list[str]:
    test = _ids(tok["lite2"], "test")
    return [test[0], test[-1], test[len(test) // 2]]  # both classes, not in store order


def _read(store: Path, ids: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with EmbeddingStore(store) as s:
        rows = s.index_of(ids)
        tok, mask = s.read_tokens(rows)
        return s.read(rows), tok, mask


def _head_reference(head_path: Path, glob: np.ndarray, tok: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(n, C, T): each class's mean attention over its prompts, straight from the head."""
    head = Head.load(head_path)
    prompts = load_prompts("pneumonia")
    text = embed_prompts(prompts.texts(), text_model="minilm")
    index = {t: i for i, t in enumerate(text.texts)}
    on_tokens, on_global = head.image_attention(glob, text.glob, tok, mask)
    np.testing.assert_allclose(on_tokens.sum(axis=2) + on_global, 1.0, atol=1e-5)  # a softmax over [global; tokens]
    return np.stack([on_tokens[:, [index[t] for t in c.positive]].mean(axis=1) for c in prompts.classes], axis=1)


def _grids(out: Path, ids: list[str]) -> tuple[dict, list[np.ndarray]]:
    summary = json.loads((out / "explain.json").read_text())
    assert [im["id"] for im in summary["images"]] == ids
    grids = []
    for im in summary["images"]:
        assert Path(im["png"]).is_file() and Path(im["png"]).stat().st_size > 5000
        with Image.open(im["png"]) as png:
            assert png.format == "PNG"
        record = json.loads(Path(im["json"]).read_text())
        assert record["id"] == im["id"] and record["classes"] == ["normal", "pneumonia"]
        grids.append(np.array([record["values"][c] for c in record["classes"]]))
    return summary, grids


def test_explain_a_token_head_natively_and_through_a_map(tok: dict[str, Path], token_head: Path,
                                                        tmp_path: Path) -> None:
    ids = _picked(tok)
    prompts = load_prompts("pneumonia")
    # Lite2 natively: the head's attention on its own 9x9 grid.
    res = explain(tok["lite2"], prompts, tmp_path / "native", head_path=token_head, ids=ids)
    summary, grids = _grids(tmp_path / "native", ids)
    assert res.grid == [9, 9] and summary["kind"].startswith("head attention") and summary["scoring"] == "head"
    glob, tokens, mask = _read(tok["lite2"], ids)
    want = _head_reference(token_head, glob, tokens, mask)
    for k, grid in enumerate(grids):
        assert grid.shape == (2, 9, 9)
        np.testing.assert_allclose(grid.reshape(2, 81), want[k], atol=1e-5)
    record = json.loads(Path(summary["images"][0]["json"]).read_text())
    assert set(record["global_weight"]) == {"normal", "pneumonia"}
    # Lite0 through the Lite0 -> Lite2 map: 7x7 tokens mapped per token, resampled onto the head's 9x9.
    res = explain(tok["lite0"], prompts, tmp_path / "mapped", head_path=token_head, map_path=tok["map"], ids=ids)
    _, grids = _grids(tmp_path / "mapped", ids)
    assert res.grid == [9, 9]
    glob0, tokens0, mask0 = _read(tok["lite0"], ids)
    assert tokens0.shape[1] == 49
    m = load_map(tok["map"])
    want = _head_reference(token_head, m.transform(glob0).astype(np.float32), T.map_tokens(m, tokens0, mask0), mask0)
    for k, grid in enumerate(grids):
        np.testing.assert_allclose(grid.reshape(2, 81), want[k], atol=1e-5)
    # `stitch report` shows an explain folder it is given: one section per image, its heatmaps.
    from stitchkit.report.build import build_report

    report = build_report([tmp_path / "mapped"], tmp_path / "report")
    shown = [f for f in report["figures"] if Path(f).name.startswith("explain-")]
    assert len(shown) == len(ids) and all(Path(f).stat().st_size for f in shown)
    page = (tmp_path / "report" / "index.html").read_text()
    assert all(f"Where it looks: {i}" in page for i in ids)


def test_explain_patch_similarities_through_a_text_map(tok: dict[str, Path], token_head: Path, tmp_path: Path,
                                                       stitch) -> None:
    ids = _picked(tok)
    prompts = load_prompts("pneumonia")
    common = dict(text_model="minilm", map_path=tok["text_map"], ids=ids)
    res = explain(tok["lite2"], prompts, tmp_path / "patch", scoring="patch", **common)
    _, grids = _grids(tmp_path / "patch", ids)
    assert res.grid == [9, 9] and res.kind == "token cosine with the class" and res.scoring == "patch"
    glob, tokens, mask = _read(tok["lite2"], ids)
    text = embed_prompts(prompts.texts(), text_model="minilm")
    index = {t: i for i, t in enumerate(text.texts)}
    unit = text.glob / np.linalg.norm(text.glob, axis=1, keepdims=True)
    classes = np.stack([unit[[index[t] for t in c.positive]].mean(axis=0) for c in prompts.classes])
    mapped = T.map_tokens(load_map(tok["text_map"]), tokens, mask)
    sims = P.token_similarities(mapped, mask, classes)  # (n, 81, 2)
    for k, grid in enumerate(grids):
        np.testing.assert_allclose(grid.reshape(2, 81), sims[k].T, atol=1e-5)
        assert np.abs(grid).max() <= 1.0
    # the weights patch pooling gives each token: a softmax over the grid, per class
    explain(tok["lite2"], prompts, tmp_path / "weights", scoring="patch", show="attention", **common)
    _, grids = _grids(tmp_path / "weights", ids)
    for k, grid in enumerate(grids):
        np.testing.assert_allclose(grid.reshape(2, 81).sum(axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(grid.reshape(2, 81), P.attention_weights(sims, mask, 1.0)[k].T, atol=1e-5)
    # The command line, with the images read from --source; what cannot be drawn is one line.
    ids_file = tmp_path / "few.ids"
    ids_file.write_text("\n".join(ids) + "\n")
    with EmbeddingStore(tok["lite2"]) as s:
        manifest = Path(s.attrs["input"])
    r = stitch("explain", tok["lite0"], "--ids", ids_file, "--map", tok["map"], "--head", token_head,
               "--prompts", "pneumonia", "--source", manifest, "-o", tmp_path / "cli", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["n"] == 3 and out["grid"] == [9, 9] and len(list((tmp_path / "cli").glob("*.png"))) == 3
    from stitchkit import formats
    from stitchkit.inspect import identify

    assert identify(tmp_path / "cli" / "explain.json").format is formats.EXPLAIN
    assert identify(Path(out["images"][0]["json"])).format is formats.EXPLAIN
    assert json.loads(stitch("info", tmp_path / "cli" / "explain.json", "--json").stdout)["kind"] == "explain grids"
    r = stitch("explain", tok["lite2"], "--ids", ids_file, "--map", tok["text_map"], "--scoring", "patch",
               "--prompts", "pneumonia", "-t", "minilm", "--source", tmp_path / "nowhere.csv", "-o", tmp_path / "x")
    assert r.returncode == 2 and r.stderr.count("\n") == 1


def test_encoder_view_is_the_centre_crop_the_encoder_saw() -> None:
    wide = Image.fromarray(np.tile(np.arange(300, dtype=np.uint8)[None, :], (200, 1)))  # 300 wide, 200 high
    view = encoder_view(wide, {"input_size": [3, 100, 100], "crop_pct": 1.0})
    assert view.shape == (100, 100)
    # shorter side 200 -> 100 (x0.5): 150 wide, the centre 100 columns kept: 25 cut each side
    assert abs(int(view[0, 0]) - 50) <= 2 and abs(int(view[0, -1]) - 248) <= 3
    assert encoder_view(wide, {}).shape == (200, 300)
