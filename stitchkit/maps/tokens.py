"""Applying a map fitted on pooled vectors to every token of a store, in bounded memory.

When is that sound? A map here is affine, ``y = A x + b`` (unless it L2-normalises its input,
``l2=True``). For a mean-pooled CNN (EfficientNet-Lite: global average pooling of the last
feature map) the pooled vector *is* the mean of the tokens, and an affine map commutes with
the mean: ``mean_t(A x_t + b) = A mean_t(x_t) + b``. So the mapped tokens average exactly to
the mapped global vector, and a head that attends over them sees tokens consistent with the
global it was trained beside. For a ViT pooled by its CLS token (or attention pooling), the
global is not the mean of the patch tokens, the identity does not hold, and a map fitted on
globals is only a guess for the patches: :func:`pooling_relation` detects which case a store
is in, and the commands say so.

Memory: :func:`map_tokens` maps at most ``max_vectors`` token vectors at a time (the affine
step runs in float64 inside the map), so peak memory does not grow with the number of rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import UsageError

#: Token vectors mapped per step: 8,192 × 1,280 float64 is 84 MB of intermediate.
MAX_VECTORS = 8192
#: Bytes of float32 tokens (in and out) a chunk of rows may hold.
CHUNK_BYTES = 128 * 2**20


def check_token_width(m: Any, token_shape: tuple[int, int] | None, what: str) -> None:
    """One clear line when the tokens are not as wide as the map's source side."""
    if token_shape is None:
        return
    width = int(token_shape[1])
    if width != int(m.n_features_in_):
        raise UsageError(
            f"{what} holds tokens {width} wide but the map's source side is {m.n_features_in_} "
            "wide (tokens taken before the model's final projection): a map fitted on pooled "
            "vectors cannot map them; drop the tokens (--no-tokens) or embed tokens at the "
            "pooled width"
        )


def rows_per_chunk(token_shape: tuple[int, int], dim_out: int, chunk_size: int) -> int:
    """Rows per chunk so that a chunk's float32 tokens, in and out, stay under CHUNK_BYTES."""
    t, d = token_shape
    per_row = 4 * t * (d + dim_out)
    return max(1, min(int(chunk_size), CHUNK_BYTES // max(per_row, 1)))


def map_tokens(m: Any, tokens: np.ndarray, mask: np.ndarray | None = None,
               *, max_vectors: int = MAX_VECTORS) -> np.ndarray:
    """``tokens`` (N, T, D) mapped to (N, T, D_out) float32; padded positions are zero.

    Only the real (unmasked) tokens are mapped, ``max_vectors`` at a time.
    """
    tokens = np.asarray(tokens)
    if tokens.ndim != 3:
        raise UsageError(f"tokens must be (N, T, D), got shape {tokens.shape}")
    n, t, _ = tokens.shape
    out = np.zeros((n, t, int(m.n_features_out_)), dtype=np.float32)
    keep = np.ones((n, t), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    rr, tt = np.nonzero(keep)
    for a in range(0, len(rr), max_vectors):
        r, c = rr[a:a + max_vectors], tt[a:a + max_vectors]
        out[r, c] = m.transform(tokens[r, c].astype(np.float32))
    return out


def commutes_with_mean(m: Any) -> bool:
    """True when the map is affine in its input (no L2 normalisation before it)."""
    return not bool(getattr(m, "l2", False))


def pooling_relation(glob: np.ndarray, tokens: np.ndarray, mask: np.ndarray,
                     *, rtol: float = 2e-2) -> str:
    """'mean' when the globals are the masked mean of the tokens (a mean-pooled CNN), else
    'other' (CLS token, attention pooling, a projection after pooling).

    The tolerance allows for tokens stored in float16 (relative error about 1e-3).
    """
    w = np.asarray(mask, dtype=np.float32)[..., None]
    mean = (np.asarray(tokens, dtype=np.float32) * w).sum(axis=1) / np.maximum(w.sum(axis=1), 1.0)
    if mean.shape != glob.shape:
        return "other"
    err = np.linalg.norm(mean - glob, axis=1) / np.maximum(np.linalg.norm(glob, axis=1), 1e-12)
    return "mean" if float(err.max()) <= rtol else "other"


def token_note(m: Any, relation: str) -> str:
    """What the user should know about mapping these tokens with this map (one line)."""
    if relation == "mean" and commutes_with_mean(m):
        return ("tokens mapped per token: the store's globals are the mean of its tokens and the "
                "map is affine, so the mean of the mapped tokens equals the mapped global")
    if relation == "mean":
        return ("tokens mapped per token, but the map L2-normalises its input, so it does not "
                "commute with mean pooling: mapped tokens need not average to the mapped global")
    return ("tokens mapped per token, but the store's globals are not the mean of its tokens "
            "(CLS token or attention pooling, e.g. a ViT): a map fitted on pooled vectors is not "
            "guaranteed to hold for the patch tokens")


def plan(m: Any, store: Any, what: str, chunk_size: int) -> dict[str, Any] | None:
    """How :func:`stitchkit.maps.api.apply_map` maps ``store``'s tokens, or None without any.

    Checks the token width, measures how the store pools (on its first rows) and bounds the
    rows per chunk.
    """
    if not getattr(store, "has_tokens", False):
        return None
    shape = store.token_shape
    check_token_width(m, shape, f"store {store.path}")
    probe = np.arange(min(len(store), 16))
    glob = store.read(probe)
    tok, mask = store.read_tokens(probe)
    note = token_note(m, pooling_relation(glob, tok, mask))
    return {"token_shape": (int(shape[0]), int(m.n_features_out_)), "note": note,
            "chunk_size": rows_per_chunk(shape, int(m.n_features_out_), chunk_size)}


def mapped_rows(m: Any, store: Any, rows: np.ndarray) -> dict[str, np.ndarray]:
    """``tokens`` and ``tokens_mask`` of ``rows`` mapped, for ``StoreWriter.append``."""
    tok, mask = store.read_tokens(rows)
    return {"tokens": map_tokens(m, tok, mask), "tokens_mask": mask}
