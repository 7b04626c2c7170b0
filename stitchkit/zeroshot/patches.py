"""Patch-level similarity: every image token compared with every class, then pooled.

The cosine route maps an image's global vector into the text space and takes its cosine with
each class's prompt ensemble. Patch scoring (``stitch classify --scoring patch``) takes the
same map to every patch token instead (:mod:`stitchkit.maps.tokens`: an affine map applied per
token, so the mapped tokens still average to the mapped global), computes each token's cosine
with each class, and pools the tokens into one similarity per class, after RadZero's VL-CABS
(Park et al., NeurIPS 2025). Poolings (``POOLINGS``), with ``s_t`` the cosine of token ``t``
and ``x_t`` the mapped token:

* ``attention`` (the default, VL-CABS): weights ``a_t = softmax_t(s_t / τ)``, and the class's
  similarity is the cosine of the weighted token ``Σ_t a_t x_t`` with the class. RadZero does
  exactly this with its [CLS] and patch tokens. As ``τ → ∞`` the weights are uniform, the
  weighted token is the mean of the mapped tokens, which *is* the mapped global vector (an
  affine map commutes with mean pooling), so the score is the cosine route's; as ``τ → 0`` it
  is the cosine of the single most similar token. ``τ`` moves between the two.
* ``lse``: ``τ · log mean_t exp(s_t / τ)``, a smooth maximum of the token cosines (the mean of
  the cosines as ``τ → ∞``, their maximum as ``τ → 0``); the mean over tokens, not the sum,
  so grids of 49 and 81 tokens score on one scale.
* ``max``: the largest token cosine; ``mean``: the mean token cosine (not the global cosine:
  the cosine of the mean is not the mean of the cosines).

``patch_weight`` ``w`` combines the pooled similarity with the global cosine:
``w · pooled + (1 − w) · cos(global, class)``; ``w = 1`` is patches alone, ``w = 0`` the
cosine route. Logits are that over the scorer's temperature, as for cosine scoring.

Everything here is a pure function over numpy arrays (tested against a hand-written reference
in ``tests/test_patches.py``); the scorer (:mod:`.scorers`) calls :func:`patch_similarity` on
each block of mapped tokens, and ``stitch explain`` draws :func:`token_similarities` and
:func:`attention_weights` over the patch grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UsageError
from ..settings import Range, check_settings, setting

POOLINGS = ("attention", "lse", "max", "mean")
#: The attention's temperature by default. RadZero learns its own from 0.07 (CLIP's), on tokens
#: trained for it; on frozen tokens carried by a map fitted on pooled vectors, 0.07 ranks far
#: worse than cosine (Kermany train images through the covid-notes map: AUC 0.52 against 0.76,
#: docs/head.md), the ranking rising with τ towards the cosine route's. 1.0 weighs the most
#: similar patch of a Lite2 image about 2.3 times the least (their cosines span about 0.85):
#: chosen on those train images, never on a test set.
DEFAULT_PATCH_TEMPERATURE = 1.0


@dataclass(frozen=True)
class PatchOptions:
    """How ``--scoring patch`` pools the token similarities (the settings of classify and
    benchmark)."""

    patch_pooling: str = setting(
        "attention", "Patch scoring: attention = the cosine of the tokens weighted by softmax(token cosine / "
        "--patch-temperature) (RadZero's VL-CABS); lse = a smooth maximum of the token cosines; max; mean.",
        choices=POOLINGS)
    patch_temperature: float = setting(
        DEFAULT_PATCH_TEMPERATURE, "Patch scoring: the temperature of attention and lse pooling (large: every "
        "token alike, attention then equals cosine scoring; small: the most similar token).",
        within=Range(1e-4))
    patch_weight: float = setting(
        1.0, "Patch scoring: weight of the pooled patch similarity against the global cosine (1: patches "
        "alone; 0: cosine scoring).", within=Range(0.0, 1.0))

    def __post_init__(self) -> None:
        check_settings(self)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _keep(tokens: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    n, t = tokens.shape[:2]
    keep = np.ones((n, t), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if keep.shape != (n, t):
        raise UsageError(f"token mask has shape {keep.shape}, the tokens {tokens.shape[:2]}")
    if not keep.any(axis=1).all():
        raise UsageError("a sample has no real token: patch scoring needs at least one")
    return keep


def token_similarities(tokens: np.ndarray, mask: np.ndarray | None, classes: np.ndarray) -> np.ndarray:
    """(N, T, C) cosine of each token (N, T, D) with each class vector (C, D); padded
    positions (``mask`` False) are 0."""
    tokens = np.asarray(tokens)
    classes = np.asarray(classes)
    if tokens.ndim != 3 or classes.ndim != 2 or tokens.shape[2] != classes.shape[1]:
        raise UsageError(f"tokens {tokens.shape} and classes {classes.shape} are not (N, T, D) and (C, D)")
    keep = _keep(tokens, mask)
    sims = np.einsum("ntd,cd->ntc", _unit(tokens), _unit(classes), optimize=True)
    sims[~keep] = 0.0
    return sims


def attention_weights(sims: np.ndarray, mask: np.ndarray | None, temperature: float) -> np.ndarray:
    """(N, T, C) ``softmax`` over the real tokens of ``sims / temperature``, per class; padded
    positions get 0."""
    keep = _keep(sims, mask)[..., None]
    z = np.where(keep, np.asarray(sims, dtype=np.float64) / temperature, -np.inf)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def pool(sims: np.ndarray, mask: np.ndarray | None, pooling: str, temperature: float,
         tokens: np.ndarray | None = None, classes: np.ndarray | None = None) -> np.ndarray:
    """(N, C) one similarity per class from the token similarities ``sims`` (N, T, C);
    ``attention`` needs the ``tokens`` and ``classes`` the similarities came from."""
    keep = _keep(sims, mask)[..., None]
    s = np.asarray(sims, dtype=np.float64)
    if pooling == "max":
        return np.where(keep, s, -np.inf).max(axis=1)
    if pooling == "mean":
        return (s * keep).sum(axis=1) / keep.sum(axis=1)
    if pooling == "lse":
        z = np.where(keep, s / temperature, -np.inf)
        top = z.max(axis=1)
        return temperature * (top + np.log(np.exp(z - top[:, None]).sum(axis=1) / keep.sum(axis=1)))
    if pooling == "attention":
        if tokens is None or classes is None:
            raise UsageError("attention pooling needs the tokens and the class vectors")
        weights = attention_weights(s, mask, temperature)
        tok = np.asarray(tokens, dtype=np.float64) * keep  # padded tokens are no part of the sum
        attended = np.einsum("ntc,ntd->ncd", weights, tok, optimize=True)  # one attended token per class
        return np.einsum("ncd,cd->nc", _unit(attended).astype(np.float64), _unit(classes).astype(np.float64))
    raise UsageError(f"patch_pooling takes one of {', '.join(POOLINGS)}, got {pooling!r}")


def patch_similarity(glob: np.ndarray, tokens: np.ndarray, mask: np.ndarray | None, classes: np.ndarray,
                     options: PatchOptions) -> np.ndarray:
    """(N, C) ``w · pooled token similarity + (1 − w) · cosine(global, class)`` of mapped
    globals (N, D) and tokens (N, T, D) with the class vectors (C, D)."""
    sims = token_similarities(tokens, mask, classes)
    pooled = pool(sims, mask, options.patch_pooling, options.patch_temperature, tokens, classes)
    w = options.patch_weight
    if w == 1.0:
        return pooled
    cos = _unit(glob).astype(np.float64) @ _unit(classes).astype(np.float64).T
    return w * pooled + (1.0 - w) * cos
