"""The cross-attention head as a module: shapes, both directions, masks, blocking."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stitchkit.errors import UsageError
from stitchkit.head.config import HeadConfig
from stitchkit.head.model import CrossAttentionHead, ScoreBlocks, score_matrix


@pytest.fixture
def head() -> CrossAttentionHead:
    torch.manual_seed(0)
    # Without the residual: these tests look at the attention itself, which a fresh residual
    # head's zero-initialised correction hides.
    h = CrossAttentionHead(24, 16, HeadConfig(width=16, heads=2, layers=2, residual=False))
    return h.eval()


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(size=shape).astype(np.float32))


def test_global_only_shape_and_directions(head: CrossAttentionHead) -> None:
    ig, tg = _rand(5, 24), _rand(3, 16, seed=1)
    out = head(ig, tg)
    assert out.shape == (5, 3)
    i2t, t2i = head(ig, tg, directions=True)
    assert i2t.shape == t2i.shape == (5, 3)
    # The score is the mean of two different directions, not one of them twice.
    assert not torch.allclose(i2t, t2i)
    torch.testing.assert_close(out, 0.5 * (i2t + t2i))


def test_tokens_are_used_and_padding_is_ignored(head: CrossAttentionHead) -> None:
    ig, tg = _rand(4, 24), _rand(3, 16, seed=1)
    it, tt = _rand(4, 6, 24, seed=2), _rand(3, 5, 16, seed=3)
    im = torch.ones(4, 6, dtype=torch.bool)
    tm = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    base_i2t, base_t2i = head(ig, tg, it, im, tt, tm, directions=True)
    # Image tokens enter the image→text direction only (text globals query them).
    i2t, t2i = head(ig, tg, it + _rand(4, 6, 24, seed=9), im, tt, tm, directions=True)
    assert not torch.allclose(i2t, base_i2t)
    torch.testing.assert_close(t2i, base_t2i)
    # Padded text tokens (mask False) can hold anything without changing a score.
    tt2 = tt.clone()
    tt2[0, 3:] = 100.0
    tt2[2, 1:] = -50.0
    torch.testing.assert_close(head(ig, tg, it, im, tt2, tm), 0.5 * (base_i2t + base_t2i))


def test_pair_score_does_not_depend_on_batch(head: CrossAttentionHead) -> None:
    ig, tg = _rand(6, 24), _rand(4, 16, seed=1)
    it = _rand(6, 3, 24, seed=4)
    full = head(ig, tg, it)
    alone = head(ig[2:3], tg[1:2], it[2:3])
    torch.testing.assert_close(alone[0, 0], full[2, 1])


def test_score_matrix_blocks_match_one_pass(head: CrossAttentionHead) -> None:
    rng = np.random.default_rng(5)
    ig, tg = rng.normal(size=(37, 24)).astype(np.float32), rng.normal(size=(11, 16)).astype(np.float32)
    it = rng.normal(size=(37, 4, 24)).astype(np.float32)
    im = rng.random((37, 4)) > 0.3
    blocked = score_matrix(head, ig, tg, it, im, blocks=ScoreBlocks(image=8, text=3))
    with torch.inference_mode():
        one = head(torch.from_numpy(ig), torch.from_numpy(tg), torch.from_numpy(it),
                   torch.from_numpy(im)).numpy()
    assert blocked.shape == (37, 11)
    np.testing.assert_allclose(blocked, one, rtol=1e-5, atol=1e-5)


def test_bad_config_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="divisible"):
        HeadConfig(width=30, heads=4)
    with pytest.raises(UsageError, match="layers must be ≥ 1"):
        HeadConfig(layers=0)


def test_a_fresh_residual_head_is_the_cosine_route() -> None:
    """Before training, each direction's logit is s·cos(x A + c, y): the head ranks texts and
    images exactly as the cosine route through the map (A, c) does."""
    torch.manual_seed(0)
    h = CrossAttentionHead(24, 16, HeadConfig(width=16, heads=2)).eval()
    rng = np.random.default_rng(3)
    matrix, offset = rng.normal(size=(24, 16)), rng.normal(size=16)
    h.set_cosine_map(matrix, offset)
    ig, tg, it = _rand(7, 24), _rand(5, 16, seed=1), _rand(7, 4, 24, seed=2)
    mapped = ig.numpy() @ matrix + offset
    cos = (mapped / np.linalg.norm(mapped, axis=1, keepdims=True)) @ (
        tg.numpy() / np.linalg.norm(tg.numpy(), axis=1, keepdims=True)).T
    with torch.no_grad():
        i2t, t2i = h(ig, tg, it, directions=True)
    np.testing.assert_allclose(i2t.numpy(), t2i.numpy())
    np.testing.assert_allclose(i2t.numpy(), cos / 0.07, rtol=1e-4, atol=1e-4)


def test_carzero_init_and_legacy_settings() -> None:
    torch.manual_seed(0)
    h = CrossAttentionHead(256, 256, HeadConfig(width=256, heads=4, residual=False))
    assert float(h.image_proj.weight.std()) == pytest.approx(0.02, rel=0.05)
    assert float(h.image_proj.bias.abs().max()) == 0.0
    torch.manual_seed(0)
    default = CrossAttentionHead(256, 256, HeadConfig(width=256, heads=4, residual=False, init="torch"))
    assert float(default.image_proj.weight.std()) > 0.03  # PyTorch's U(±1/sqrt(256)): std 0.036
    # A head file written before these settings: no residual, PyTorch's initialisation.
    old = HeadConfig.from_dict({"width": 64, "layers": 1, "heads": 4, "ffn_mult": 2, "dropout": 0.0,
                                "logit_mlp": False})
    assert (old.residual, old.init) == (False, "torch")
    with pytest.raises(UsageError, match="init"):
        HeadConfig(init="xavier")


def test_a_fresh_residual_head_classifies_as_the_cosine_route() -> None:
    """With several prompts per class, a residual head's class logit takes its cosine term
    against the class's prompt ensemble, as the cosine scorer does: a head that kept its start
    gives the cosine route's log-odds, scaled by s·T (multi-class and multi-label alike)."""
    from stitchkit.head import Head
    from stitchkit.zeroshot.prompt_cache import PromptEmbeddings
    from stitchkit.zeroshot.prompts import load_prompts
    from stitchkit.zeroshot.scorers import Scorer

    torch.manual_seed(0)
    h = Head(CrossAttentionHead(24, 16, HeadConfig(width=16, heads=2)), image_space={}, text_space={})
    rng = np.random.default_rng(3)
    matrix, offset = rng.normal(size=(24, 16)), rng.normal(size=16)
    h.module_.set_cosine_map(matrix, offset)
    images = rng.normal(size=(9, 24)).astype(np.float32)
    for name in ("pneumonia", "cxr-findings"):
        prompts = load_prompts(name)
        texts = prompts.texts()
        text = PromptEmbeddings(texts, rng.normal(size=(len(texts), 16)).astype(np.float32), None, None, {}, "test")
        with_head, _ = Scorer(prompts, text, h)(images)
        cosine, _ = Scorer(prompts, text, temperature=1.0)((images @ matrix + offset).astype(np.float32))
        np.testing.assert_allclose(with_head, cosine / 0.07, rtol=1e-4, atol=1e-4)
