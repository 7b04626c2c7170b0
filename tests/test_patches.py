"""Patch scoring (``--scoring patch``): the pooling maths against a hand-written reference, the
scorer multi-class and multi-label, and the classify route on real token stores, block by block.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from stitchkit.errors import UsageError
from stitchkit.zeroshot import patches as P
from stitchkit.zeroshot.patches import PatchOptions
from stitchkit.zeroshot.prompt_cache import PromptEmbeddings
from stitchkit.zeroshot.prompts import from_classes
from stitchkit.zeroshot.scorers import Scorer


def _data(seed: int = 0, n: int = 3, t: int = 5, d: int = 4, c: int = 2):
    rng = np.random.default_rng(seed)
    tokens = rng.normal(size=(n, t, d)).astype(np.float32)
    mask = np.ones((n, t), dtype=bool)
    mask[1, 3:] = False  # a sample with two padded positions
    tokens[1, 3:] = 1e3  # garbage where padded: must not count
    classes = rng.normal(size=(c, d)).astype(np.float32)
    return tokens, mask, classes


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (math.sqrt(np.dot(a, a)) * math.sqrt(np.dot(b, b))))


def _reference(tokens, mask, classes, pooling: str, tau: float) -> np.ndarray:
    """Loops over samples, classes and tokens: what each pooling means, written out."""
    out = np.zeros((len(tokens), len(classes)))
    for n in range(len(tokens)):
        real = [tokens[n, t].astype(np.float64) for t in range(tokens.shape[1]) if mask[n, t]]
        for c, e in enumerate(classes.astype(np.float64)):
            s = [_cos(x, e) for x in real]
            if pooling == "max":
                out[n, c] = max(s)
            elif pooling == "mean":
                out[n, c] = sum(s) / len(s)
            elif pooling == "lse":
                out[n, c] = tau * math.log(sum(math.exp(v / tau) for v in s) / len(s))
            else:  # attention: softmax weights of the cosines, the cosine of the weighted token
                w = [math.exp(v / tau) for v in s]
                attended = sum(wi * x for wi, x in zip(w, real, strict=True)) / sum(w)
                out[n, c] = _cos(attended, e)
    return out


def test_token_similarities_are_each_tokens_cosine() -> None:
    tokens, mask, classes = _data()
    sims = P.token_similarities(tokens, mask, classes)
    assert sims.shape == (3, 5, 2)
    for n, t, c in [(0, 0, 0), (2, 4, 1), (1, 2, 1)]:
        assert sims[n, t, c] == pytest.approx(_cos(tokens[n, t].astype(np.float64), classes[c].astype(np.float64)),
                                              abs=1e-6)
    assert (sims[1, 3:] == 0).all()  # padded: 0


@pytest.mark.parametrize("pooling", P.POOLINGS)
@pytest.mark.parametrize("tau", [0.05, 0.5, 3.0])
def test_each_pooling_matches_the_written_out_reference(pooling: str, tau: float) -> None:
    tokens, mask, classes = _data(seed=1)
    sims = P.token_similarities(tokens, mask, classes)
    got = P.pool(sims, mask, pooling, tau, tokens, classes)
    np.testing.assert_allclose(got, _reference(tokens, mask, classes, pooling, tau), rtol=0, atol=1e-5)


def test_attention_weights_are_a_softmax_over_the_real_tokens() -> None:
    tokens, mask, classes = _data(seed=2)
    sims = P.token_similarities(tokens, mask, classes)
    w = P.attention_weights(sims, mask, 0.1)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)
    assert (w[1, 3:] == 0).all()
    expected = np.exp(sims[0, :, 1] / 0.1) / np.exp(sims[0, :, 1] / 0.1).sum()
    np.testing.assert_allclose(w[0, :, 1], expected, atol=1e-6)


def test_attention_interpolates_from_the_best_token_to_the_cosine_route() -> None:
    """τ large: uniform weights, the attended token is the mean token = the (mean-pooled)
    global, so the score is the global cosine; τ small: the cosine of the most similar token."""
    tokens, _, classes = _data(seed=3)
    mask = np.ones(tokens.shape[:2], dtype=bool)
    glob = tokens.mean(axis=1)
    cosine = P._unit(glob) @ P._unit(classes).T
    sims = P.token_similarities(tokens, mask, classes)
    np.testing.assert_allclose(P.pool(sims, mask, "attention", 1e6, tokens, classes), cosine, atol=1e-5)
    np.testing.assert_allclose(P.pool(sims, mask, "attention", 1e-4, tokens, classes), sims.max(axis=1), atol=1e-6)
    np.testing.assert_allclose(P.pool(sims, mask, "lse", 1e-4, tokens, classes), sims.max(axis=1), atol=1e-3)
    np.testing.assert_allclose(P.pool(sims, mask, "lse", 1e6, tokens, classes), sims.mean(axis=1), atol=1e-5)


def test_patch_weight_mixes_in_the_global_cosine() -> None:
    tokens, mask, classes = _data(seed=4)
    glob = np.random.default_rng(9).normal(size=(3, 4)).astype(np.float32)
    cosine = P._unit(glob).astype(np.float64) @ P._unit(classes).astype(np.float64).T
    pooled = P.patch_similarity(glob, tokens, mask, classes, PatchOptions("max", 0.07, 1.0))
    np.testing.assert_allclose(P.patch_similarity(glob, tokens, mask, classes, PatchOptions("max", 0.07, 0.0)),
                               cosine, atol=1e-7)
    np.testing.assert_allclose(P.patch_similarity(glob, tokens, mask, classes, PatchOptions("max", 0.07, 0.25)),
                               0.25 * pooled + 0.75 * cosine, atol=1e-7)


def test_bad_settings_and_inputs_are_one_line() -> None:
    with pytest.raises(UsageError, match="patch_pooling takes one of attention, lse, max, mean, got 'sum'"):
        PatchOptions(patch_pooling="sum")
    with pytest.raises(UsageError, match=r"patch_weight must be in \[0.0, 1.0\], got 1.5"):
        PatchOptions(patch_weight=1.5)
    with pytest.raises(UsageError, match="patch_temperature must be"):
        PatchOptions(patch_temperature=0.0)
    tokens, mask, classes = _data()
    mask[0] = False
    with pytest.raises(UsageError, match="no real token"):
        P.token_similarities(tokens, mask, classes)
    with pytest.raises(UsageError, match="not \\(N, T, D\\)"):
        P.token_similarities(tokens[:, :, :3], None, classes)


def _prompt_embeddings(prompts, d: int, seed: int) -> PromptEmbeddings:
    texts = prompts.texts()
    glob = np.random.default_rng(seed).normal(size=(len(texts), d)).astype(np.float32)
    return PromptEmbeddings(texts, glob, None, None, {"model_spec": "fake"}, "test")


def _class_vectors(text: PromptEmbeddings, rows: list[np.ndarray]) -> np.ndarray:
    unit = P._unit(text.glob)
    return P._unit(np.stack([unit[r].mean(axis=0) for r in rows]))


@pytest.mark.parametrize("mode", ["multiclass", "multilabel"])
def test_scorer_scores_patches_against_each_class_ensemble(mode: str) -> None:
    """Multi-class: log-odds of the patch logits; multi-label: positive minus negative, each
    class's prompt ensemble scored by the pooled token cosines over the temperature."""
    prompts = from_classes(["effusion", "pneumonia", "nodule"], mode=mode,
                           templates=["There is {finding}.", "{finding} is seen."])
    text = _prompt_embeddings(prompts, 6, seed=5)
    rng = np.random.default_rng(6)
    tokens = rng.normal(size=(4, 9, 6)).astype(np.float32)
    glob = tokens.mean(axis=1)
    patch = PatchOptions("attention", 0.2, 0.7)
    scorer = Scorer(prompts, text, temperature=0.05, patch=patch)
    assert scorer.uses_image_tokens
    scores, probs = scorer(glob, tokens, np.ones((4, 9), dtype=bool))
    index = {t: i for i, t in enumerate(text.texts)}
    pos = _class_vectors(text, [np.array([index[t] for t in c.positive]) for c in prompts.classes])
    want_pos = P.patch_similarity(glob, tokens, None, pos, patch) / 0.05
    if mode == "multilabel":
        neg = _class_vectors(text, [np.array([index[t] for t in c.negative]) for c in prompts.classes])
        want = want_pos - P.patch_similarity(glob, tokens, None, neg, patch) / 0.05
        np.testing.assert_allclose(scores, want, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(probs, 1 / (1 + np.exp(-want)), rtol=1e-4)
    else:
        z = want_pos
        others = np.log(np.exp(z[:, None, :]).repeat(3, axis=1).sum(axis=2) - np.exp(z))
        np.testing.assert_allclose(scores, z - others, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    # patch_weight 0 is the cosine scorer exactly
    cos_scores, _ = Scorer(prompts, text, temperature=0.05)(glob)
    zero, _ = Scorer(prompts, text, temperature=0.05, patch=PatchOptions(patch_weight=0.0))(glob, tokens)
    np.testing.assert_allclose(zero, cos_scores, rtol=1e-5, atol=1e-4)


# -- the classify route on real token stores (session fixtures) -----------------------------------
def _scores(path: Path) -> dict[str, float]:
    return {r["id"]: float(r["score:pneumonia"]) for r in csv.DictReader(path.open())}


@pytest.mark.slow
def test_classify_scores_patches_block_by_block(tok: dict[str, Path], tmp_path: Path, stitch) -> None:
    """Lite2 tokens through the Lite2 → MiniLM map: blocks of 7 rows score as one block does,
    patch_weight 0 ranks as cosine scoring, and a store without tokens is refused in one line."""
    from stitchkit.zeroshot.prompts import load_prompts
    from stitchkit.zeroshot.scoring import classify_store

    common = dict(prompts=load_prompts("pneumonia"), text_model="minilm", map_path=tok["text_map"], bootstrap=0)
    one = classify_store(tok["lite2"], scoring="patch", output=tmp_path / "one.csv", **common)
    seven = classify_store(tok["lite2"], scoring="patch", chunk_size=7, output=tmp_path / "seven.csv", **common)
    a, b = _scores(tmp_path / "one.csv"), _scores(tmp_path / "seven.csv")
    assert a.keys() == b.keys() and len(a) == 40
    np.testing.assert_allclose([a[k] for k in a], [b[k] for k in a], rtol=1e-6, atol=1e-6)
    assert one.scoring == "patch" and one.composition["patch"] == {
        "pooling": "attention", "temperature": P.DEFAULT_PATCH_TEMPERATURE, "weight": 1.0, "tokens": 81}
    assert one.metrics["auc"]["pneumonia"] == seven.metrics["auc"]["pneumonia"]
    cosine = classify_store(tok["lite2"], scoring="cosine", output=tmp_path / "cos.csv", **common)
    classify_store(tok["lite2"], scoring="patch", patch=PatchOptions(patch_weight=0.0), output=tmp_path / "w0.csv",
                   **common)
    c, w0 = _scores(tmp_path / "cos.csv"), _scores(tmp_path / "w0.csv")
    np.testing.assert_allclose([w0[k] for k in c], [c[k] for k in c], rtol=1e-5, atol=1e-5)
    assert cosine.metrics["auc"]["pneumonia"] == pytest.approx(
        classify_store(tok["lite2"], scoring="patch", patch=PatchOptions(patch_weight=0.0), **common
                       ).metrics["auc"]["pneumonia"], abs=1e-9)
    # the command line: the settings are flags, a store without tokens is one line (exit 2)
    r = stitch("classify", tok["lite2"], "--map", tok["text_map"], "--scoring", "patch", "--patch-pooling", "lse",
               "--patch-temperature", "0.5", "--prompts", "pneumonia", "--text-model", "minilm", "--bootstrap", "0",
               "--json")
    assert r.returncode == 0, r.stderr
    assert '"pooling": "lse"' in r.stdout and '"scoring": "patch"' in r.stdout
    plain = tmp_path / "plain.h5"
    from tests.conftest import copy_store

    copy_store(tok["lite2"], plain, tokens=False)
    r = stitch("classify", plain, "--map", tok["text_map"], "--scoring", "patch", "--prompts", "pneumonia",
               "--text-model", "minilm")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "has no tokens" in r.stderr and "stitch embed --tokens" in r.stderr
