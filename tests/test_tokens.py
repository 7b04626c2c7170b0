"""Tokens end to end on the real packaged models: embed --tokens, apply through a map,
token heads in training and classification, and score files that keep their ranking.

The stores are small (40 Kermany images, 20 per split, balanced): the session's ``tok``
fixture copies them out of the run's Lite0 and Lite2 token stores (tests/conftest.py).
"""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from stitchkit.errors import UsageError
from stitchkit.head import Head, HeadConfig, TrainConfig, train_head
from stitchkit.head.data import LazyTokens, read_side
from stitchkit.maps import apply_map, load_map
from stitchkit.maps import tokens as T
from stitchkit.store import EmbeddingStore, StoreWriter
from stitchkit.store.store import base_attrs
from stitchkit.zeroshot.prompts import load_prompts
from stitchkit.zeroshot.scoring import classify_store

pytestmark = pytest.mark.slow


def _ids(store: Path, split: str) -> list[str]:
    with EmbeddingStore(store) as s:
        return [i for i in s.ids if i.startswith(f"{split}/")]


def test_embed_tokens_are_the_last_feature_map(tok: dict[str, Path]) -> None:
    for model, side in (("lite0", 7), ("lite2", 9)):  # 224 / 32 and 260 / 32, rounded up
        with EmbeddingStore(tok[model]) as s:
            assert s.token_shape == (side * side, 1280)
            with h5py.File(s.path) as f:
                assert f["tokens"].dtype == np.float16  # half the disk of float32
            glob = s.read(np.arange(len(s)))
            toks, mask = s.read_tokens(np.arange(len(s)))
        assert mask.all()
        # Global average pooling: the global vector is the mean of the patch tokens.
        np.testing.assert_allclose(toks.mean(axis=1), glob, rtol=0, atol=2e-3 * np.abs(glob).max())
        assert T.pooling_relation(glob, toks, mask) == "mean"


def test_text_tokens_have_a_mask(tok: dict[str, Path]) -> None:
    with EmbeddingStore(tok["captions"]) as s:
        toks, mask = s.read_tokens(np.arange(len(s)))
        assert s.token_shape[1] == 384 and toks.shape[1] == mask.shape[1]
    lengths = mask.sum(axis=1)
    assert lengths.min() >= 3 and lengths.max() <= mask.shape[1]
    # Padding is really padding: nothing beyond a caption's length holds a token.
    assert not mask[np.arange(len(mask)), np.minimum(lengths, mask.shape[1] - 1)][lengths < mask.shape[1]].any()


def test_apply_maps_tokens_and_commutes_with_mean_pooling(tok: dict[str, Path], stitch) -> None:
    out = tok["dir"] / "mapped.h5"
    r = stitch("apply", tok["map"], tok["lite0"], "-o", out, "--chunk-size", "7")
    assert r.returncode == 0, r.stderr
    assert "mean of the mapped tokens equals the mapped global" in r.stdout
    with EmbeddingStore(out) as s, EmbeddingStore(tok["lite0"]) as src:
        assert s.token_shape == (49, 1280) and s.model_spec == "lite2"
        glob = s.read(np.arange(len(s)))
        toks, mask = s.read_tokens(np.arange(len(s)))
        src_tokens, src_mask = src.read_tokens(np.arange(len(src)))
        assert s.attrs["tokens_mapping"].startswith("tokens mapped per token")
    # Affine maps commute with the mean: mean of mapped tokens == mapped global (float16 on disk).
    scale = np.abs(glob).max()
    np.testing.assert_allclose(toks.mean(axis=1), glob, rtol=0, atol=5e-3 * scale)
    # The chunked path equals mapping everything at once.
    m = load_map(tok["map"])
    direct = T.map_tokens(m, src_tokens, src_mask, max_vectors=100)
    np.testing.assert_allclose(toks, direct, rtol=0, atol=2e-3 * scale)
    # --no-tokens leaves them out.
    r = stitch("apply", tok["map"], tok["lite0"], "-o", tok["dir"] / "plain.h5", "--no-tokens")
    assert r.returncode == 0, r.stderr
    with EmbeddingStore(tok["dir"] / "plain.h5") as s:
        assert not s.has_tokens


def test_cls_pooled_store_is_flagged(tok: dict[str, Path], tmp_path: Path) -> None:
    """A ViT pools by its CLS token: the globals are not the mean of the patches, and apply
    says a pooled map is not guaranteed to hold for the tokens."""
    with EmbeddingStore(tok["lite0"]) as s:
        ids, glob = list(s.ids), s.read(np.arange(len(s)))
        toks, mask = s.read_tokens(np.arange(len(s)))
    rng = np.random.default_rng(0)
    cls = glob + rng.normal(scale=glob.std(), size=glob.shape).astype(np.float32)  # a CLS token
    attrs = base_attrs(modality="image", model_spec="lite0")
    with EmbeddingStore(tok["lite0"]) as s:
        attrs["weights_sha256"] = s.attrs.get("weights_sha256")
    with StoreWriter(tmp_path / "vit.h5", dim=1280, attrs=attrs, token_shape=(49, 1280)) as w:
        w.append(ids, cls, tokens=toks, tokens_mask=mask)
    result = apply_map(tok["map"], tmp_path / "vit.h5", tmp_path / "out.h5")
    assert "not the mean of its tokens" in result["tokens_note"] and "ViT" in result["tokens_note"]


def test_token_width_other_than_the_map_is_one_line(tok: dict[str, Path], tmp_path: Path, stitch) -> None:
    with EmbeddingStore(tok["lite0"]) as s:
        ids, glob = list(s.ids), s.read(np.arange(len(s)))
        attrs = {**base_attrs(modality="image", model_spec="lite0"),
                 "weights_sha256": s.attrs.get("weights_sha256")}
    with StoreWriter(tmp_path / "narrow.h5", dim=1280, attrs=attrs, token_shape=(4, 192)) as w:
        w.append(ids, glob, tokens=np.zeros((len(ids), 4, 192), np.float32),
                 tokens_mask=np.ones((len(ids), 4), bool))
    r = stitch("apply", tok["map"], tmp_path / "narrow.h5", "-o", tmp_path / "o.h5")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "192 wide" in r.stderr and "--no-tokens" in r.stderr


def test_rows_per_chunk_bounds_memory() -> None:
    # Lite2 tokens into Lite2: however many rows are asked for, a chunk stays under the bound.
    rows = T.rows_per_chunk((81, 1280), 1280, 1_000_000)
    assert rows * 81 * (1280 + 1280) * 4 <= T.CHUNK_BYTES and rows >= 1
    assert T.rows_per_chunk((1, 8), 8, 5) == 5


@pytest.fixture(scope="module")
def token_head(tok: dict[str, Path]) -> Path:
    cfg = TrainConfig(min_steps=0, head=HeadConfig(width=16, heads=2), epochs=6, batch_size=10, lr=3e-3,
                      patience=10, val_fraction=0.0)
    path = tok["dir"] / "token.head"
    train_head(tok["lite2"], tok["captions"], out=path, config=replace(cfg, seed=0), ids=_ids(tok["lite2"], "train"))
    return path


def test_token_head_reads_tokens_lazily_and_uses_them(tok: dict[str, Path], token_head: Path) -> None:
    head = Head.load(token_head)
    assert head.uses_image_tokens_ and head.uses_text_tokens_
    with EmbeddingStore(tok["lite2"]) as s:
        side = read_side(s, tokens=True)
        assert isinstance(side.tokens, LazyTokens) and side.tokens.shape == (40, 81, 1280)
        rows = np.array([5, 1, 5])
        np.testing.assert_array_equal(side.tokens[rows], s.read(rows, tokens=True).astype(np.float16))
        glob = s.read(np.arange(4))
        toks, mask = s.read_tokens(np.arange(4))
    # The attention over tokens matters: scores change when the tokens change.
    text = np.random.default_rng(1).normal(size=(3, 384)).astype(np.float32)
    a = head.score(glob, text, toks, mask)
    b = head.score(glob, text, toks[:, ::-1] * 0 + toks.mean(axis=1, keepdims=True), mask)
    assert np.abs(a - b).max() > 1e-4


def test_token_head_needs_query_tokens(tok: dict[str, Path], token_head: Path, stitch) -> None:
    plain = tok["dir"] / "lite2-plain.h5"
    if not plain.exists():
        r = stitch("apply", tok["map"], tok["lite0"], "-o", plain, "--no-tokens")
        assert r.returncode == 0, r.stderr
    r = stitch("classify", plain, "--prompts", "pneumonia", "--text-model", "minilm", "--head", token_head)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "trained with image tokens" in r.stderr and "--no-image-tokens" in r.stderr
    r = stitch("classify", plain, "--prompts", "pneumonia", "--text-model", "minilm", "--head", token_head,
               "--no-image-tokens", "--bootstrap", "0", "--allow-overlap")
    assert r.returncode == 0, r.stderr
    assert "scores global vectors only" in r.stdout


def _auc_from_file(path: Path, cls: str = "pneumonia") -> float:
    rows = list(csv.DictReader(path.open()))
    y = np.array([r["label"] == cls for r in rows])
    return float(roc_auc_score(y, [float(r[f"score:{cls}"]) for r in rows]))


def test_every_route_writes_the_ranking_it_reports(tok: dict[str, Path], token_head: Path) -> None:
    """AUC recomputed from the written file equals the reported one: cosine, global head,
    token head, native and through the map; probabilities never saturate in float32."""
    d = tok["dir"]
    test = _ids(tok["lite2"], "test")
    cfg = TrainConfig(min_steps=0, head=HeadConfig(width=16, heads=2), epochs=4, batch_size=10, val_fraction=0.0,
                      image_tokens=False, text_tokens=False)
    glob_head = d / "global.head"
    train_head(tok["lite2"], tok["captions"], out=glob_head, config=replace(cfg, seed=0), ids=_ids(tok["lite2"], "train"))
    text_map = tok["text_map"]
    routes = {
        "token": dict(query=tok["lite2"], head_path=token_head),
        "global": dict(query=tok["lite2"], head_path=glob_head),
        "token-mapped": dict(query=tok["lite0"], head_path=token_head, map_path=tok["map"]),
        "cosine": dict(query=tok["lite2"], map_path=text_map, scoring="cosine"),
        "cosine-em": dict(query=tok["lite2"], map_path=text_map, scoring="cosine", prior="em"),
        "token-mixture": dict(query=tok["lite2"], head_path=token_head, prior="mixture"),
    }
    for name, kw in routes.items():
        out = d / f"{name}.csv"
        res = classify_store(prompts=load_prompts("pneumonia"), text_model="minilm", ids=test,
                             output=out, bootstrap=0, **kw)
        assert res.metrics["auc"]["pneumonia"] == pytest.approx(_auc_from_file(out), abs=1e-9), name
        rows = list(csv.DictReader(out.open()))
        p = np.array([float(r["pneumonia"]) for r in rows], dtype=np.float32)
        assert (p > 0).all() and (p < 1).all(), name
    # Cosine at the old temperature (0.01) saturates probabilities; the log-odds still rank.
    out = d / "cold.csv"
    res = classify_store(tok["lite2"], load_prompts("pneumonia"), text_model="minilm", ids=test,
                         map_path=text_map, scoring="cosine", temperature=0.001, output=out, bootstrap=0)
    rows = list(csv.DictReader(out.open()))
    assert any(float(r["pneumonia"]) in (0.0, 1.0) for r in rows)
    assert res.metrics["auc"]["pneumonia"] == pytest.approx(_auc_from_file(out), abs=1e-9)


def test_the_decision_rule_named_is_the_one_the_prior_used(tok: dict[str, Path], stitch, tmp_path: Path) -> None:
    """--prior mixture / em predict the argmax of the posterior they adjust: the console, the
    record and the report's confusion matrix (from the score file alone) name that rule."""
    common = (tok["lite2"], "--map", tok["text_map"], "--scoring", "cosine", "--prompts", "pneumonia",
              "--text-model", "minilm", "--bootstrap", "0")
    for prior, words in (("mixture", "argmax of the mixture posterior"), ("em", "argmax of the EM-adjusted posterior")):
        scores = tmp_path / f"{prior}.csv"
        r = stitch("classify", *common, "--prior", prior, "-o", scores)
        assert r.returncode == 0, r.stderr
        assert f"threshold: {words} (" in r.stdout and "argmax over classes" not in r.stdout
        page = stitch("report", scores, "-o", tmp_path / f"report-{prior}", "--markdown")
        assert page.returncode == 0, page.stderr
        assert f"Confusion matrix ({words} (" in page.stdout
    r = stitch("classify", *common, "--prior", "mixture", "--json")
    record = json.loads(r.stdout)
    assert record["metrics"]["threshold"].startswith("argmax of the mixture posterior")
    assert record["composition"]["prior"]["name"] == "mixture"


def test_prior_em_is_label_free_and_keeps_the_ranking(tok: dict[str, Path]) -> None:
    from stitchkit.zeroshot.scoring import em_priors

    # Posteriors from a known prior mix: EM recovers the shift without labels.
    rng = np.random.default_rng(0)
    y = rng.random(4000) < 0.8
    z = np.where(y, 1.0, -1.0) + rng.normal(size=4000)
    logits = np.stack([np.zeros(4000), 2 * z], axis=1)  # log-likelihood ratio of N(±1, 1)
    est, _ = em_priors(logits)
    assert est[1] == pytest.approx(0.8, abs=0.03)
    # The mixture recovers prior and decision from uncalibrated, shifted scores.
    from stitchkit.zeroshot.scoring import mixture_calibration

    a, b, pi, _ = mixture_calibration(np.stack([np.zeros(4000), 3 * z + 7], axis=1))
    assert a > 0 and pi[1] == pytest.approx(0.8, abs=0.05)
    bayes = ((2 * z + np.log(0.8 / 0.2) > 0) == y).mean()  # the true posterior's decision
    assert ((a * (3 * z + 7) + b > 0) == y).mean() >= bayes - 0.01
    assert ((3 * z + 7 > 0) == y).mean() < bayes - 0.05  # the uncalibrated argmax is worse
    with pytest.raises(UsageError, match="multi-class"):
        classify_store(tok["lite2"], load_prompts("pneumonia", mode="multilabel"), text_model="minilm",
                       map_path=tok["text_map"], scoring="cosine", prior="em")


@pytest.fixture(scope="module")
def grid4(data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """24 Kermany images (6 per split and class) through Lite0 twice: full 7x7 tokens and
    `--token-grid 4x4`, and label captions with word tokens."""
    from stitchkit.embed import embed_store
    from stitchkit.encoders import load_encoder
    from stitchkit.inputs import read_inputs
    from stitchkit.zeroshot.captions import CaptionSource, make_captions
    from tests.conftest import kermany_rows, write_csv

    d = tmp_path_factory.mktemp("grid4")
    inputs = read_inputs(write_csv(kermany_rows(data, {"train": 6, "test": 6}), d / "m.csv"))
    encoder = load_encoder("lite0")
    out = {"dir": d, "full": d / "full.h5", "4x4": d / "4x4.h5", "captions": d / "captions.h5"}
    embed_store(inputs, encoder, out["full"], tokens=True, workers=0)
    embed_store(inputs, encoder, out["4x4"], tokens=True, token_grid="4x4", workers=0)
    make_captions(out["full"], out=out["captions"], text_model="minilm",
                  source=CaptionSource(prompts=load_prompts("pneumonia")), tokens=True)
    return out


def test_token_heads_and_token_maps_work_on_a_4x4_store(grid4: dict[str, Path]) -> None:
    """A store pooled at embed time is an ordinary token store: a token head trains and scores
    on its 16 tokens, a token map fits on it against 7x7 (resampled as any two grids) and
    between equal 4x4 grids, and `apply` keeps its grid."""
    from stitchkit.maps import AnchorPlan, TokenGrid, fit_token_map

    d = grid4["dir"]
    cfg = TrainConfig(min_steps=0, head=HeadConfig(width=16, heads=2), epochs=3, batch_size=6, val_fraction=0.0)
    head_path = d / "4x4.head"
    train_head(grid4["4x4"], grid4["captions"], out=head_path, config=replace(cfg, seed=0),
               ids=_ids(grid4["4x4"], "train"))
    head = Head.load(head_path)
    assert head.uses_image_tokens_ and head.image_token_count_ == 16
    res = classify_store(grid4["4x4"], load_prompts("pneumonia"), text_model="minilm", head_path=head_path,
                         ids=_ids(grid4["4x4"], "test"), bootstrap=0, output=d / "scores.csv")
    assert 0.0 <= res.metrics["auc"]["pneumonia"] <= 1.0
    assert np.isfinite([float(r["pneumonia"]) for r in csv.DictReader((d / "scores.csv").open())]).all()

    plan = AnchorPlan(holdout=0.25, refit=False)
    m = fit_token_map(grid4["4x4"], grid4["full"], plan=replace(plan, metrics=False),  # 18 images: no metrics
                      tokens=TokenGrid(token_grid="target"))
    rec = m.anchors_["tokens"]
    assert rec["source_grid"] == [4, 4] and rec["grid"] == [7, 7] and rec["resample"]["source"] == "bilinear"
    map_path = d / "4x4-to-7x7.map"
    m.save(map_path)
    mapped = d / "mapped-4x4.h5"
    apply_map(map_path, grid4["4x4"], mapped)
    with EmbeddingStore(mapped) as s:
        assert s.token_shape == (16, 1280) and s.attrs["token_grid"] == "4x4"
    same = fit_token_map(grid4["4x4"], mapped, plan=plan)
    rec = same.anchors_["tokens"]
    assert rec["grid"] == [4, 4] and rec["resample"] == {"source": "none", "target": "none"}
    assert same.metrics_["token_cosine_mean"] > 0.99  # the 4x4 tokens of a store and their own map
