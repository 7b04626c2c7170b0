"""`stitch fit --tokens`: a map fitted on spatially matched patch tokens of real Lite0 (7×7)
and Lite2 (9×9) stores, its resampling, its metadata, its refusals, and the token head that
resamples a query's grid onto its own.

16 Kermany train images (8 per class) with tokens, copied from the session's token stores.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stitchkit.errors import UsageError
from stitchkit.head import ComputeOptions, Head, HeadConfig, TrainConfig, train_head
from stitchkit.maps import AnchorPlan, ReadOptions, TokenGrid, load_map, make_map
from stitchkit.maps import token_pairs as TP
from stitchkit.maps import tokens as T
from stitchkit.store import EmbeddingStore, StoreWriter
from stitchkit.store import grid as G
from stitchkit.store.store import base_attrs
from stitchkit.zeroshot.captions import CaptionSource, make_captions
from stitchkit.zeroshot.prompts import load_prompts

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def st(data: Path, lite0_token_store: Path, lite2_token_store: Path,
       tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """16 Kermany train images (8 per class) with tokens, copied out of the session's stores."""
    from tests.conftest import copy_store, kermany_rows

    d = tmp_path_factory.mktemp("token-fit")
    ids = [r["id"] for r in kermany_rows(data, {"train": 8})]
    out = {"dir": d}
    for model, src in (("lite0", lite0_token_store), ("lite2", lite2_token_store)):
        out[model] = copy_store(src, d / f"{model}.h5", ids=ids)
    return out


def _copy(src: Path, out: Path, *, tokens: np.ndarray | None = None, mask: np.ndarray | None = None,
          keep_tokens: bool = True) -> Path:
    """``src`` rewritten, optionally without its tokens or with other tokens."""
    with EmbeddingStore(src) as s:
        ids, glob = list(s.ids), s.read(np.arange(len(s)))
        attrs = {**base_attrs(modality="image", model_spec=s.model_spec),
                 "weights_sha256": s.attrs.get("weights_sha256")}
        if keep_tokens and tokens is None:
            tokens, mask = s.read_tokens(np.arange(len(s)))
    extra = {} if not keep_tokens else {"tokens": tokens, "tokens_mask": mask}
    with StoreWriter(out, dim=glob.shape[1], attrs=attrs,
                     token_shape=tokens.shape[1:] if keep_tokens else None) as w:
        w.append(ids, glob, **extra)
    return out


# -- resampling ------------------------------------------------------------------------------
@pytest.mark.parametrize(("n_in", "n_out"), [(9, 7), (7, 9), (7, 7), (9, 3), (3, 9)])
def test_resampling_rows_sum_to_one(n_in: int, n_out: int) -> None:
    R = G.resample_matrix(n_in, n_out)
    assert R.shape == (n_out, n_in) and (R >= 0).all()
    assert np.allclose(R.sum(axis=1), 1.0)
    if n_out < n_in:  # area weights: every input cell counts n_out / n_in in total
        assert np.allclose(R.sum(axis=0), n_out / n_in)


def test_token_grid_pooling_is_adaptive_pooling_where_it_divides_and_keeps_the_mean_where_not() -> None:
    """`stitch embed --token-grid`: block means where the side divides the model's (what
    adaptive_avg_pool2d gives), overlap-weighted where it does not (the grid's mean kept, which
    adaptive_avg_pool2d's overlapping whole windows do not keep)."""
    import torch

    rng = np.random.default_rng(0)
    for s_in, s_out in ((14, 7), (9, 3), (9, 4), (37, 7), (7, 4)):
        x = rng.normal(size=(2, s_in * s_in, 5)).astype(np.float32)
        pooled, mask, side = G.pool_token_grid(x, np.ones(x.shape[:2], bool), s_out)
        assert side == s_in and pooled.shape == (2, s_out * s_out, 5) and mask.all()
        np.testing.assert_allclose(pooled.mean(axis=1), x.mean(axis=1), rtol=0, atol=1e-5)
        grid = torch.from_numpy(x).reshape(2, s_in, s_in, 5).permute(0, 3, 1, 2)
        adaptive = torch.nn.functional.adaptive_avg_pool2d(grid, s_out).permute(0, 2, 3, 1).reshape(2, -1, 5).numpy()
        if s_in % s_out == 0:
            np.testing.assert_allclose(pooled, adaptive, rtol=0, atol=1e-5)
        else:
            assert np.abs(adaptive.mean(axis=1) - x.mean(axis=1)).max() > 1e-3
    x = np.zeros((1, 50, 5), np.float32)
    with pytest.raises(UsageError, match="finer than the model's 7x7"):
        G.pool_token_grid(x[:, :49], None, 8)
    with pytest.raises(UsageError, match="50 tokens per image, not a square patch grid"):
        G.pool_token_grid(x, None, 4)
    with pytest.raises(UsageError, match="padded tokens"):
        G.pool_token_grid(x[:, :49], np.arange(49)[None] < 40, 4)


def test_area_resampling_keeps_the_mean_and_bilinear_hits_cell_centres(st: dict[str, Path]) -> None:
    with EmbeddingStore(st["lite2"]) as s:
        tok, _ = s.read_tokens(np.arange(4))
        glob = s.read(np.arange(4))
    down = G.resample_tokens(tok, 7)
    assert down.shape == (4, 49, 1280)
    # Lite2's global is the mean of its 81 tokens; the area-resampled 7×7 grid keeps that mean.
    np.testing.assert_allclose(down.mean(axis=1), tok.mean(axis=1), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(down.mean(axis=1), glob, rtol=2e-2, atol=2e-3)
    # 3×3 → 9×9 bilinear: the centre of output cell 4 is input cell 1's centre exactly.
    small = G.resample_tokens(tok, 3)
    up = G.resample_tokens(small, 9).reshape(4, 9, 9, -1)
    np.testing.assert_allclose(up[:, 4, 4], small.reshape(4, 3, 3, -1)[:, 1, 1], rtol=1e-5, atol=1e-6)


# -- fitting on matched tokens ---------------------------------------------------------------
def test_token_map_is_affine_commutes_with_pooling_and_records_itself(st: dict[str, Path]) -> None:
    m = TP.fit_token_map(st["lite0"], st["lite2"], plan=AnchorPlan(holdout=0.25, refit=False), tokens=TokenGrid(token_grid="target"))
    t = m.anchors_["tokens"]
    assert t["grid"] == [9, 9] and t["source_grid"] == [7, 7] and t["target_grid"] == [9, 9]
    assert t["resample"] == {"source": "bilinear", "target": "none"}
    assert t["n_token_pairs"] == m.anchors_["n_fit"] * 81 == m.n_anchors_
    # 12 images x 81 = 972 token pairs, fewer than 4 × the 1,280 dimensions: alpha by 5 folds of
    # whole images (GCV where the pairs outnumber the dimensions, RidgeMap.n_folds_for)
    assert t["alpha_folds"] == "by image" and m.alpha_selection_ == "5-fold" and t["affine"]
    assert 0.0 < m.metrics_["token_cosine_mean"] <= 1.0 and m.metrics_["token_n_heldout"] == 4 * 81
    assert "cosine_mean" in m.metrics_  # the held-out images' globals, as any fit reports
    with EmbeddingStore(st["lite0"]) as s:
        tok, mask = s.read_tokens(np.arange(len(s)))
        glob = s.read(np.arange(len(s)))
    # Affine: the mean of the mapped tokens is the mapped mean of the tokens (= the global).
    mapped = T.map_tokens(m, tok, mask)
    np.testing.assert_allclose(mapped.mean(axis=1), m.transform(tok.mean(axis=1)), rtol=1e-4, atol=1e-3)
    rel = np.linalg.norm(mapped.mean(axis=1) - m.transform(glob), axis=1) / np.linalg.norm(m.transform(glob), axis=1)
    assert rel.max() < 2e-2  # float16 storage of the tokens
    # ... and resampling the mapped grid is mapping the resampled grid (both linear, rows sum to 1).
    np.testing.assert_allclose(G.resample_tokens(mapped, 9),
                               T.map_tokens(m, G.resample_tokens(tok, 9)), rtol=1e-3, atol=1e-3)
    with pytest.raises(AssertionError):  # a real difference is caught by the tolerance above
        np.testing.assert_allclose(mapped.mean(axis=1), m.transform(glob) * 1.1, rtol=1e-4, atol=1e-3)


def test_streamed_blocks_equal_one_fit_on_all_pairs(st: dict[str, Path], monkeypatch) -> None:
    monkeypatch.setattr(TP, "BLOCK_BYTES", 1)  # one image per block
    m = TP.fit_token_map(st["lite0"], st["lite2"], make_map("ridge", alpha=10.0), plan=AnchorPlan(holdout=0.25, metrics=False, refit=False), read=ReadOptions(exact=True), tokens=TokenGrid(token_grid="coarser", pooled_weight=2))
    fit_ids = set(_fit_ids(st, holdout=0.25))
    with EmbeddingStore(st["lite0"]) as a, EmbeddingStore(st["lite2"]) as b:
        rows = np.array([i for i, k in enumerate(a.ids) if k in fit_ids])
        rows_b = b.index_of([a.ids[r] for r in rows])
        xs, ys = a.read_tokens(rows)[0], G.resample_tokens(b.read_tokens(rows_b)[0], 7)
        X = np.concatenate([xs.reshape(-1, 1280), np.repeat(a.read(rows), 2, axis=0)])
        Y = np.concatenate([ys.reshape(-1, 1280), np.repeat(b.read(rows_b), 2, axis=0)])
    ref = make_map("ridge", alpha=10.0).fit(X, Y)
    assert m.anchors_["tokens"]["resample"] == {"source": "none", "target": "area"}
    assert m.n_anchors_ == len(rows) * (49 + 2)
    np.testing.assert_allclose(m.transform(X[:200]), ref.transform(X[:200]), rtol=1e-4, atol=1e-4)
    assert not np.allclose(make_map("ridge", alpha=100.0).fit(X, Y).transform(X[:200]),
                           ref.transform(X[:200]), rtol=1e-4, atol=1e-4)


def test_token_refit_is_the_fit_on_every_anchor_image(st: dict[str, Path]) -> None:
    ridge, exact, coarser = make_map("ridge", alpha=10.0), ReadOptions(exact=True), TokenGrid(token_grid="coarser")
    refitted = TP.fit_token_map(st["lite0"], st["lite2"], ridge, AnchorPlan(holdout=0.25), exact, coarser)
    everything = TP.fit_token_map(st["lite0"], st["lite2"], ridge, AnchorPlan(holdout=0.0, metrics=False), exact,
                                  coarser)
    assert refitted.anchors_["n_refit"] == refitted.anchors_["n_fit"] + refitted.anchors_["n_heldout"]
    assert refitted.n_anchors_ == everything.n_anchors_ == refitted.anchors_["n_refit"] * 49
    assert "token_cosine_mean" in refitted.metrics_
    # Frobenius: near-constant Lite0 channels amplify the rounding of single entries
    assert np.linalg.norm(refitted.matrix_ - everything.matrix_) <= 1e-6 * np.linalg.norm(everything.matrix_)


def _fit_ids(st: dict[str, Path], holdout: float) -> list[str]:
    from stitchkit.maps.plan import plan_anchors

    with EmbeddingStore(st["lite0"]) as a, EmbeddingStore(st["lite2"]) as b:
        return [str(i) for i in plan_anchors(a, b, holdout=holdout, seed=0).fit_pool]


def test_cli_fit_tokens_as_the_readme_runs_it(st: dict[str, Path], stitch) -> None:
    out = st["dir"] / "l0-l2.tokens.map"
    r = stitch("fit", st["lite0"], st["lite2"], "--tokens", "-o", out)
    assert r.returncode == 0, r.stderr
    assert "matched token pairs on a 9x9 grid" in r.stdout and "commutes with mean pooling" in r.stdout
    m = load_map(out)
    assert m.anchors_["tokens"]["grid"] == [9, 9] and m.method == "ridge"
    assert m.matrix_.dtype == np.float32
    r = stitch("fit", st["lite0"], st["lite2"], "--tokens", "--token-grid", "coarser", "--json",
               "-o", st["dir"] / "c.map")
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)
    assert rec["anchors"]["tokens"]["grid"] == [7, 7] and "token_cosine_mean" in rec["metrics"]
    assert rec["anchors"]["tokens"]["alpha_folds"] == "by image"  # 13 x 49 pairs < 1,280 dimensions
    r = stitch("fit", st["lite0"], st["lite2"], "--tokens", "--cv", "3", "--json", "-o", st["dir"] / "f.map")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["anchors"]["tokens"]["alpha_folds"] == "by image"


def test_cli_refuses_what_cannot_be_matched(st: dict[str, Path], tmp_path: Path, stitch) -> None:
    bare = _copy(st["lite2"], tmp_path / "bare.h5", keep_tokens=False)
    with EmbeddingStore(st["lite2"]) as s:
        n = len(s)
    odd = _copy(st["lite2"], tmp_path / "odd.h5", tokens=np.ones((n, 5, 1280), np.float32),
                mask=np.ones((n, 5), bool))  # 5 tokens: no square grid (e.g. CLS + 4)
    pad = np.ones((n, 4), bool)
    pad[:, 3] = False
    padded = _copy(st["lite2"], tmp_path / "pad.h5", tokens=np.ones((n, 4, 1280), np.float32), mask=pad)
    cases = [
        ((st["lite0"], bare, "--tokens"), "has no tokens"),
        ((st["lite0"], odd, "--tokens"), "not a square grid"),
        ((st["lite0"], padded, "--tokens"), "padded tokens"),
        ((st["lite0"], st["lite2"], "--tokens", "--l2"), "does not combine with --l2"),
        ((st["lite0"], st["lite2"], "--tokens", "--pool-by", "group"), "does not combine with --pool-by"),
        ((st["lite0"], st["lite2"], "--pooled-weight", "2"), "with --tokens only"),
    ]
    for args, message in cases:
        r = stitch("fit", *args, "-o", tmp_path / "x.map")
        assert r.returncode == 2, (args, r.stderr)
        assert message in r.stderr and r.stderr.strip().count("\n") == 0, r.stderr
        assert not (tmp_path / "x.map").exists()
    with pytest.raises(UsageError, match="takes one of"):
        TP.fit_token_map(st["lite0"], st["lite2"], tokens=TokenGrid(token_grid="diagonal"))


# -- the head side: the query's grid resampled onto the head's --------------------------------
def test_token_head_resamples_a_query_grid_onto_its_own(st: dict[str, Path]) -> None:
    captions = st["dir"] / "captions.h5"
    make_captions(st["lite2"], out=captions, text_model="minilm",
                  source=CaptionSource(prompts=load_prompts("pneumonia")), tokens=True)
    cfg = TrainConfig(min_steps=0, head=HeadConfig(width=16, heads=2, residual=False, init="torch"), epochs=1, batch_size=8, val_fraction=0.0,
                      token_dropout=0.25, token_coarsen=1.0)
    train_head(st["lite2"], captions, out=st["dir"] / "h.head", config=cfg, run=ComputeOptions(threads=2))
    head = Head.load(st["dir"] / "h.head")
    assert head.image_token_count_ == 81
    assert head.meta_["config"]["token_dropout"] == 0.25 and head.meta_["config"]["token_coarsen"] == 1.0
    m = TP.fit_token_map(st["lite0"], st["lite2"], plan=AnchorPlan(metrics=False))
    with EmbeddingStore(st["lite0"]) as s, EmbeddingStore(captions) as c:
        tok, mask = s.read_tokens(np.arange(len(s)))
        glob = m.transform(s.read(np.arange(len(s))))
        tg = c.read(np.arange(2))
    mapped = T.map_tokens(m, tok, mask)  # 7×7, as a Lite0 query arrives
    auto = head.score(glob, tg, mapped, mask)
    by_hand = head.score(glob, tg, G.resample_tokens(mapped, 9), np.ones((len(glob), 81), bool))
    np.testing.assert_allclose(auto, by_hand, rtol=1e-5, atol=1e-5)
    head.resample_tokens = False
    assert not np.allclose(head.score(glob, tg, mapped, mask), auto, atol=1e-4)
    with pytest.raises(UsageError, match="token_dropout"):
        TrainConfig(token_dropout=1.0)
    with pytest.raises(UsageError, match="token_coarsen"):
        TrainConfig(token_coarsen=1.5)
