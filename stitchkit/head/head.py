"""A trained head as a file-backed object: ``Head.load(path).score(images, texts)``."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..artifacts import load_artifact, save_artifact
from ..errors import UsageError
from ..fitted_on import META_KEY, FittedOn, model_tensors
from .model import (
    CrossAttentionHead,
    HeadConfig,
    ScoreBlocks,
    load_numpy_state,
    module_device,
    score_matrix,
    state_to_numpy,
)

HEAD_KIND = "head"


class Head:
    """A cross-attention head with the spaces it was trained in.

    ``image_space_`` and ``text_space_`` are ``EmbeddingStore.space()`` dicts; classification
    checks that the (mapped) queries and the prompts live in exactly these spaces.
    ``fitted_on_`` (:class:`~stitchkit.fitted_on.FittedOn`): the images it trained on, hashed
    (unknown for a head trained before that was recorded); classification checks its queries
    against them.

    >>> head = Head.load("head.st")                              # doctest: +SKIP
    >>> logits = head.score(images, prompts)                     # doctest: +SKIP
    """

    def __init__(
        self,
        module: CrossAttentionHead,
        *,
        image_space: dict[str, Any],
        text_space: dict[str, Any],
        meta: dict[str, Any] | None = None,
        fitted_on: FittedOn | None = None,
    ) -> None:
        self.module_ = module
        self.image_space_ = dict(image_space)
        self.text_space_ = dict(text_space)
        self.meta_ = dict(meta or {})
        self.fitted_on_ = fitted_on or FittedOn(None)
        # Query patch tokens on another square grid are resampled onto the head's (set False
        # to score them as they come: a measured lever in docs/head.md).
        self.resample_tokens = True

    @property
    def config_(self) -> HeadConfig:
        return self.module_.config

    @property
    def uses_image_tokens_(self) -> bool:
        return bool(self.meta_.get("image_tokens", False))

    @property
    def image_token_count_(self) -> int | None:
        """Image tokens per sample the head was trained on (None for older heads)."""
        n = self.meta_.get("image_token_count")
        return int(n) if n else None

    def match_token_grid(self, tokens: np.ndarray | None, mask: np.ndarray | None
                         ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Query patch tokens on another square grid than the head's, resampled onto its grid.

        A token head attends over the token count and spacing it was trained on (Lite2 9×9);
        a query mapped from Lite0 brings 7×7. The resampling (bilinear up, area-weighted
        down: :func:`stitchkit.store.grid.resample_tokens`) is linear with rows summing
        to one, so it commutes with an affine map and keeps mean pooling's identities. Padded
        tokens (word tokens) and grids that are not square are left as they are.
        """
        want = self.image_token_count_ if self.resample_tokens else None
        if tokens is None or want is None or tokens.shape[1] == want:
            return tokens, mask
        from ..store.grid import resample_tokens

        side, have = math.isqrt(want), math.isqrt(tokens.shape[1])
        if side * side != want or have * have != tokens.shape[1] or (
                mask is not None and not np.asarray(mask, dtype=bool).all()):
            return tokens, mask
        out = resample_tokens(tokens, side)
        return out, np.ones(out.shape[:2], dtype=bool)

    @property
    def uses_text_tokens_(self) -> bool:
        return bool(self.meta_.get("text_tokens", False))

    # -- files ---------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        meta = {
            **self.meta_,
            "head_config": self.config_.to_dict(),
            "image_dim": self.module_.image_dim,
            "text_dim": self.module_.text_dim,
            "image_space": self.image_space_,
            "text_space": self.text_space_,
        }
        tensors = state_to_numpy(self.module_)
        if self.fitted_on_.known:
            meta[META_KEY] = self.fitted_on_.meta()
            tensors.update(self.fitted_on_.tensors())
        return save_artifact(path, HEAD_KIND, tensors, meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Head:
        tensors, meta = load_artifact(path, HEAD_KIND)
        try:
            config = HeadConfig.from_dict(meta["head_config"], where=path)
            module = CrossAttentionHead(int(meta["image_dim"]), int(meta["text_dim"]), config)
        except KeyError as exc:
            raise UsageError(f"{path}: head metadata lacks {exc}; train the head again") from exc
        load_numpy_state(module, model_tensors(tensors))
        module.eval()
        rest = {k: v for k, v in meta.items()
                if k not in ("head_config", "image_dim", "text_dim", "image_space", "text_space", META_KEY)}
        return cls(module, image_space=meta.get("image_space", {}), text_space=meta.get("text_space", {}),
                   meta=rest, fitted_on=FittedOn.read(tensors, meta.get(META_KEY)))

    def to(self, device: str | object) -> Head:
        """Score on ``device`` (a torch device or its name); returns the head itself."""
        self.module_.to(device)
        return self

    # -- scoring -------------------------------------------------------------------------
    def score(
        self,
        image_global: np.ndarray,
        text_global: np.ndarray,
        image_tokens: np.ndarray | None = None,
        image_mask: np.ndarray | None = None,
        text_tokens: np.ndarray | None = None,
        text_mask: np.ndarray | None = None,
        *,
        image_block: int = 2048,
    ) -> np.ndarray:
        """Logits (n_images, n_texts), the mean of both directions."""
        image_global = np.asarray(image_global, dtype=np.float32)
        text_global = np.asarray(text_global, dtype=np.float32)
        for name, x, dim in (("image", image_global, self.module_.image_dim),
                             ("text", text_global, self.module_.text_dim)):
            if x.ndim != 2 or x.shape[1] != dim:
                raise UsageError(
                    f"{name} embeddings have shape {x.shape} but the head expects width {dim}"
                )
        image_tokens, image_mask = self.match_token_grid(image_tokens, image_mask)
        return score_matrix(self.module_, image_global, text_global, image_tokens, image_mask,
                            text_tokens, text_mask, blocks=ScoreBlocks(image=image_block))

    def class_logits(
        self,
        image_global: np.ndarray,
        text_global: np.ndarray,
        classes: list[np.ndarray],
        image_tokens: np.ndarray | None = None,
        image_mask: np.ndarray | None = None,
        text_tokens: np.ndarray | None = None,
        text_mask: np.ndarray | None = None,
    ) -> np.ndarray:
        """Logits (n_images, n_classes): class ``c`` is the mean over its prompts (the rows
        ``classes[c]`` of the texts).

        A residual head's cosine term is taken once per class, against the class's prompt
        ensemble (the normalised mean of its normalised prompt embeddings, as the cosine route
        scores a class), and its correction is averaged over the prompts. So a head that kept
        its start ranks exactly as the cosine route of its own map, prompt set and all; the mean
        of per-prompt cosines would weigh each class by how tightly its prompts agree.
        """
        logits = self.score(image_global, text_global, image_tokens, image_mask, text_tokens, text_mask)
        per_class = np.stack([logits[:, rows].mean(axis=1) for rows in classes], axis=1)
        if not self.config_.residual:
            return per_class
        prompts = np.asarray(text_global, dtype=np.float64)
        prompts = prompts / np.linalg.norm(prompts, axis=1, keepdims=True)
        ensembles = np.stack([prompts[rows].mean(axis=0) for rows in classes])
        dev = module_device(self.module_)
        with torch.inference_mode():
            base = self.module_.cosine_logits(
                torch.as_tensor(np.asarray(image_global, dtype=np.float32), device=dev),
                torch.as_tensor(np.concatenate([prompts, ensembles]).astype(np.float32), device=dev),
            ).double().cpu().numpy()
        per_prompt, ensemble = base[:, : len(prompts)], base[:, len(prompts):]
        shift = ensemble - np.stack([per_prompt[:, rows].mean(axis=1) for rows in classes], axis=1)
        return (per_class + shift).astype(np.float32)

    def image_attention(self, image_global: np.ndarray, text_global: np.ndarray, image_tokens: np.ndarray,
                        image_mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """What each text attends to in each image (image→text direction, eval mode): the
        attention weights on the image tokens (n_images, n_texts, T) and on the image's global
        (n_images, n_texts), averaged over attention heads and layers; a row of both sums to 1.

        Query tokens on another square grid are first resampled onto the head's own, as
        :meth:`score` does, so T is the head's token count (Lite2's 81 for a Lite0 query mapped
        into Lite2)."""
        image_tokens, image_mask = self.match_token_grid(np.asarray(image_tokens), image_mask)
        dev = module_device(self.module_)
        was_training = self.module_.training
        self.module_.eval()
        try:
            with torch.inference_mode():
                weights = self.module_.image_attention(
                    torch.as_tensor(np.asarray(image_global, dtype=np.float32), device=dev),
                    torch.as_tensor(np.asarray(text_global, dtype=np.float32), device=dev),
                    torch.as_tensor(np.asarray(image_tokens, dtype=np.float32), device=dev),
                    None if image_mask is None else torch.as_tensor(np.asarray(image_mask, dtype=bool), device=dev),
                ).double().cpu().numpy()
        finally:
            self.module_.train(was_training)
        return weights[..., 1:], weights[..., 0]

    def __repr__(self) -> str:
        c = self.config_
        return (f"Head(image={self.image_space_.get('model_spec')}, "
                f"text={self.text_space_.get('model_spec')}, width={c.width}, layers={c.layers})")
