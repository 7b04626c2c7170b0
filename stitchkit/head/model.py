"""The cross-attention head (after CARZero's similarity representation) and its scoring.

For an image i and a text j the head builds two similarity representations:

* image→text: text j's global feature (the query) attends over image i's ``[global; tokens]``;
* text→image: image i's global feature attends over text j's ``[global; tokens]``.

Each runs through the same stack of cross-attention-only decoder layers (no self-attention:
a query never sees other queries, so scoring one pair does not depend on which other pairs
share the batch); a linear layer per direction turns the representation into one logit and
the score is the mean of both. Global-only stores work too: the memory is then the global
vector alone.

**Residual to cosine** (``HeadConfig.residual``, the default): each direction's logit is
``s · cos(x A + c, y)`` plus the attention's correction, where ``(A, c)`` is a ridge map from
the image space into the text space fitted in closed form on all the head's pairs
(:meth:`CrossAttentionHead.set_cosine_map`) and the correction's last layer starts at zero. A
fresh head therefore ranks exactly as the closed-form cosine route of its pairs does; training
can only add to it (and :mod:`stitchkit.head.train` keeps the start when validation says the
correction does not help). With few pairs this is what a head needs: it no longer has to learn
a similarity from scratch.

**Initialisation** (``HeadConfig.init``): ``"carzero"`` draws linear and attention weights from
N(0, 0.02) with zero biases, as CARZero's decoder does; ``"torch"`` keeps PyTorch's defaults
(heads written before the option existed).

Batching is arranged so that no (n_images × n_texts × tokens) tensor ever exists: in the
image→text direction the batch axis runs over images and the query axis over texts, so each
image's tokens are projected once and attended by all texts at once; the other direction is
the transpose. :func:`score_matrix` walks blocks of both axes to keep memory bounded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UsageError
from .config import HeadConfig


class CrossAttentionLayer(nn.Module):
    """A transformer decoder layer with cross-attention only (pre-norm)."""

    def __init__(self, width: int, heads: int, ffn_mult: int, dropout: float) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.norm_ff = nn.LayerNorm(width)
        self.ff = nn.Sequential(
            nn.Linear(width, ffn_mult * width),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(ffn_mult * width, width),
        )
        self.drop = nn.Dropout(dropout)

    def forward(
        self, query: torch.Tensor, memory: torch.Tensor, pad: torch.Tensor | None
    ) -> torch.Tensor:
        attended, _ = self.attn(
            self.norm_q(query), memory, memory, key_padding_mask=pad, need_weights=False
        )
        query = query + self.drop(attended)
        return query + self.drop(self.ff(self.norm_ff(query)))


class CrossAttentionHead(nn.Module):
    """Scores every (image, text) pair of two batches; see the module docstring."""

    def __init__(self, image_dim: int, text_dim: int, config: HeadConfig | None = None) -> None:
        super().__init__()
        self.config = config or HeadConfig()
        self.image_dim = int(image_dim)
        self.text_dim = int(text_dim)
        cfg = self.config
        self.image_proj = nn.Linear(self.image_dim, cfg.width)
        self.text_proj = nn.Linear(self.text_dim, cfg.width)
        # One LayerNorm for both modalities after projection: both sides land on one scale,
        # which is what lets a query from one modality attend over keys of the other.
        self.norm = nn.LayerNorm(cfg.width)
        self.layers = nn.ModuleList(
            CrossAttentionLayer(cfg.width, cfg.heads, cfg.ffn_mult, cfg.dropout)
            for _ in range(cfg.layers)
        )
        self.out_norm = nn.LayerNorm(cfg.width)
        self.i2t_logit = self._logit_layer(cfg)
        self.t2i_logit = self._logit_layer(cfg)
        if cfg.init == "carzero":
            self.apply(_carzero_init)
        if cfg.residual:
            # The cosine route's map (set from the training pairs before training) and CLIP's
            # starting temperature; the corrections start at zero, so the head starts as cosine.
            self.register_buffer("map_matrix", torch.zeros(self.image_dim, self.text_dim))
            self.register_buffer("map_offset", torch.zeros(self.text_dim))
            self.logit_scale = nn.Parameter(torch.full((1,), math.log(1 / 0.07)))
            for logit in (self.i2t_logit, self.t2i_logit):
                last = logit[-1] if isinstance(logit, nn.Sequential) else logit
                nn.init.zeros_(last.weight)
                nn.init.zeros_(last.bias)

    @staticmethod
    def _logit_layer(cfg: HeadConfig) -> nn.Module:
        if cfg.logit_mlp:
            return nn.Sequential(nn.Linear(cfg.width, cfg.width), nn.GELU(), nn.Linear(cfg.width, 1))
        return nn.Linear(cfg.width, 1)

    def set_cosine_map(self, matrix: np.ndarray, offset: np.ndarray) -> None:
        """The residual's map into the text space: ``x @ matrix + offset`` (a fitted map's
        ``matrix_`` and ``offset_``)."""
        if not self.config.residual:
            raise UsageError("this head has no cosine residual (trained with residual=False)")
        self.map_matrix.copy_(torch.as_tensor(np.asarray(matrix, dtype=np.float32)))
        self.map_offset.copy_(torch.as_tensor(np.asarray(offset, dtype=np.float32)))

    def cosine_logits(self, image_global: torch.Tensor, text_global: torch.Tensor) -> torch.Tensor:
        """``s · cos(x A + c, y)`` (n_images, n_texts): the residual's starting point.

        The map and the cosines are computed in float64, then rounded: float32 sums over 1,280
        inputs come out in another order under another thread count, and training would carry
        those last-bit differences into another head."""
        mapped = image_global.double() @ self.map_matrix.double() + self.map_offset.double()
        cos = F.normalize(mapped, dim=-1) @ F.normalize(text_global.double(), dim=-1).T
        return self.logit_scale.exp() * cos.float()

    # -- pieces --------------------------------------------------------------------------
    def encode(
        self,
        glob: torch.Tensor,
        tokens: torch.Tensor | None,
        mask: torch.Tensor | None,
        proj: nn.Module,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Projected global (B, W), memory [global; tokens] (B, 1+T, W) and its padding mask."""
        g = self.norm(proj(glob))
        if tokens is None:
            return g, g[:, None, :], None
        t = self.norm(proj(tokens))
        memory = torch.cat([g[:, None, :], t], dim=1)
        if mask is None:
            return g, memory, None
        keep = torch.cat([torch.ones_like(mask[:, :1], dtype=torch.bool), mask.bool()], dim=1)
        return g, memory, ~keep

    def attend(
        self, query: torch.Tensor, memory: torch.Tensor, pad: torch.Tensor | None
    ) -> torch.Tensor:
        for layer in self.layers:
            query = layer(query, memory, pad)
        return self.out_norm(query)

    def forward(
        self,
        image_global: torch.Tensor,
        text_global: torch.Tensor,
        image_tokens: torch.Tensor | None = None,
        image_mask: torch.Tensor | None = None,
        text_tokens: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
        *,
        directions: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits (n_images, n_texts): the mean of both directions (or both, ``directions``)."""
        ig, imem, ipad = self.encode(image_global, image_tokens, image_mask, self.image_proj)
        tg, tmem, tpad = self.encode(text_global, text_tokens, text_mask, self.text_proj)
        n_img, n_txt = ig.shape[0], tg.shape[0]
        # image→text: batch over images, every text's global is one query of each image.
        rep_i2t = self.attend(tg[None].expand(n_img, n_txt, -1), imem, ipad)
        i2t = self.i2t_logit(rep_i2t).squeeze(-1)
        # text→image: batch over texts, every image's global queries each text; transpose back.
        rep_t2i = self.attend(ig[None].expand(n_txt, n_img, -1), tmem, tpad)
        t2i = self.t2i_logit(rep_t2i).squeeze(-1).transpose(0, 1)
        if self.config.residual:
            base = self.cosine_logits(image_global, text_global)
            i2t, t2i = base + i2t, base + t2i
        if directions:
            return i2t, t2i
        return 0.5 * (i2t + t2i)

    def image_attention(self, image_global: torch.Tensor, text_global: torch.Tensor,
                        image_tokens: torch.Tensor, image_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(n_images, n_texts, 1 + T): in the image→text direction, the attention of each text's
        global (the query) over each image's ``[global; tokens]``, averaged over the attention
        heads and the layers (what the head looks at; ``stitch explain`` draws it)."""
        _, imem, ipad = self.encode(image_global, image_tokens, image_mask, self.image_proj)
        tg, _, _ = self.encode(text_global, None, None, self.text_proj)
        query = tg[None].expand(imem.shape[0], tg.shape[0], -1)
        maps = []
        for layer in self.layers:
            _, weights = layer.attn(layer.norm_q(query), imem, imem, key_padding_mask=ipad, need_weights=True,
                                    average_attn_weights=True)
            maps.append(weights)
            query = layer(query, imem, ipad)
        return torch.stack(maps).mean(dim=0)


def _carzero_init(module: nn.Module) -> None:
    """CARZero's decoder initialisation: N(0, 0.02) weights, zero biases (LayerNorms as built)."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.MultiheadAttention):
        nn.init.normal_(module.in_proj_weight, std=0.02)
        nn.init.zeros_(module.in_proj_bias)


# -- state dict as plain numpy (for safetensors via stitchkit.artifacts) ---------------------
def state_to_numpy(module: nn.Module, prefix: str = "") -> dict[str, np.ndarray]:
    return {prefix + k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def load_numpy_state(module: nn.Module, tensors: dict[str, np.ndarray], prefix: str = "") -> None:
    state = {k[len(prefix):]: torch.from_numpy(np.asarray(v)) for k, v in tensors.items()
             if k.startswith(prefix)}
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise UsageError(
            f"head tensors do not fit the head shape (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}): the file was written by another stitchkit version or is damaged"
        )


# -- scoring in blocks ---------------------------------------------------------------------
def _t(x: np.ndarray | None, dtype: torch.dtype = torch.float32,
       device: torch.device | None = None) -> torch.Tensor | None:
    """``x`` as a tensor of ``dtype`` on ``device``: moved as stored (float16 tokens cross to a
    GPU at half the bytes), then converted there."""
    if x is None:
        return None
    return torch.as_tensor(np.ascontiguousarray(x)).to(device).to(dtype)


def module_device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


@dataclass(frozen=True)
class ScoreBlocks:
    """How many images and texts :func:`score_matrix` scores at once.

    The two sizes are one setting, the memory bound of scoring (``image × text × width`` floats
    plus one image block of tokens), whatever the number of pairs; ``image`` is lowered further
    where the images' tokens are large. Smaller blocks change the memory, never the logits.
    """

    image: int = 2048
    text: int = 256


def score_matrix(
    head: CrossAttentionHead,
    image_global: np.ndarray,
    text_global: np.ndarray,
    image_tokens: np.ndarray | None = None,
    image_mask: np.ndarray | None = None,
    text_tokens: np.ndarray | None = None,
    text_mask: np.ndarray | None = None,
    *,
    blocks: ScoreBlocks = ScoreBlocks(),
) -> np.ndarray:
    """Logits (n_images, n_texts) in evaluation mode, computed block by block.

    Memory is bounded by ``blocks`` (:class:`ScoreBlocks`), whatever the number of images.
    Runs where the head's weights are (``Head.to``); the inputs and the returned logits are
    numpy arrays.
    """
    n_img, n_txt = len(image_global), len(text_global)
    image_block, text_block = blocks.image, blocks.text
    if image_tokens is not None:
        # One image block of tokens is converted to float32: keep it under about 128 MB.
        t, d = image_tokens.shape[1], image_tokens.shape[2]
        image_block = max(1, min(image_block, 2**27 // max(4 * t * d, 1)))
    out = np.empty((n_img, n_txt), dtype=np.float32)
    dev = module_device(head)
    was_training = head.training
    head.eval()
    try:
        with torch.inference_mode():
            for a in range(0, n_img, image_block):
                b = min(a + image_block, n_img)
                ig = _t(image_global[a:b], device=dev)
                it = _t(image_tokens[a:b], device=dev) if image_tokens is not None else None
                im = _t(image_mask[a:b], torch.bool, dev) if image_mask is not None else None
                for c in range(0, n_txt, text_block):
                    d = min(c + text_block, n_txt)
                    tt = _t(text_tokens[c:d], device=dev) if text_tokens is not None else None
                    tm = _t(text_mask[c:d], torch.bool, dev) if text_mask is not None else None
                    logits = head(ig, _t(text_global[c:d], device=dev), it, im, tt, tm)
                    out[a:b, c:d] = logits.float().cpu().numpy()
    finally:
        head.train(was_training)
    return out
