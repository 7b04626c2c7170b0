"""The cross-attention head as a module: shapes, both directions, masks, blocking."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stitchkit.errors import UsageError
from stitchkit.head.model import CrossAttentionHead, HeadConfig, score_matrix


@pytest.fixture
def head() -> CrossAttentionHead:
    torch.manual_seed(0)
    h = CrossAttentionHead(24, 16, HeadConfig(width=16, heads=2, layers=2))
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
    i2t, t2i = head(ig, tg, it * 2.0, im, tt, tm, directions=True)
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
    blocked = score_matrix(head, ig, tg, it, im, image_block=8, text_block=3)
    with torch.inference_mode():
        one = head(torch.from_numpy(ig), torch.from_numpy(tg), torch.from_numpy(it),
                   torch.from_numpy(im)).numpy()
    assert blocked.shape == (37, 11)
    np.testing.assert_allclose(blocked, one, rtol=1e-5, atol=1e-5)


def test_bad_config_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="divisible"):
        HeadConfig(width=30, heads=4)
    with pytest.raises(UsageError, match="at least 1"):
        HeadConfig(layers=0)
