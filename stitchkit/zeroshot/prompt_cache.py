"""Prompt embeddings: embedded once per text model and cached in a store keyed by the texts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError
from ..fileio import cache_root
from ..store import EmbeddingStore


@dataclass
class PromptEmbeddings:
    texts: list[str]
    glob: np.ndarray
    tokens: np.ndarray | None
    mask: np.ndarray | None
    space: dict[str, Any]
    source: str


def cache_dir() -> Path:
    return cache_root() / "prompts"


def _read_prompt_store(path: Path, texts: list[str], tokens: bool) -> PromptEmbeddings | None:
    with EmbeddingStore(path) as store:
        have = store.texts if store.texts is not None else store.ids
        index = {t: i for i, t in enumerate(have)}
        missing = [t for t in texts if t not in index]
        if missing:
            return None
        rows = np.array([index[t] for t in texts], dtype=np.int64)
        glob = store.read(rows)
        tok = mask = None
        if tokens:
            if not store.has_tokens:
                return None
            tok, mask = store.read_tokens(rows)
        return PromptEmbeddings(texts, glob, tok, mask, store.space(), str(path))


def embed_prompts(
    texts: list[str],
    *,
    text_model: str | None = None,
    prompt_store: str | os.PathLike | None = None,
    tokens: bool = False,
    use_cache: bool = True,
) -> PromptEmbeddings:
    """Prompt embeddings: from ``prompt_store`` if it holds them all, else embedded with
    ``text_model`` and written to ``prompt_store`` (or a cache keyed by model and texts)."""
    if prompt_store is not None and Path(prompt_store).exists():
        found = _read_prompt_store(Path(prompt_store), texts, tokens)
        if found is not None:
            return found
        if text_model is None:
            raise UsageError(
                f"prompt store {prompt_store} lacks some prompts (or their tokens): give "
                "--text-model to embed them"
            )
    if text_model is None:
        raise UsageError("give --text-model (e.g. minilm) or a --prompt-store to embed the prompts")
    key = hashlib.sha256(json.dumps([text_model, tokens, texts]).encode()).hexdigest()[:20]
    target = Path(prompt_store) if prompt_store is not None else cache_dir() / f"{key}.h5"
    if prompt_store is None and use_cache and target.exists():
        found = _read_prompt_store(target, texts, tokens)
        if found is not None:  # the cache is an implementation detail: the source is the model
            return dataclasses.replace(found, source=text_model)
    from ..embed import embed_texts
    from ..encoders import load_encoder

    encoder = load_encoder(text_model, device="cpu")
    emb = embed_texts(encoder, texts, tokens=tokens)
    space = encoder.space()
    if prompt_store is not None or use_cache:
        _write_prompt_store(target, texts, emb, space)
        # What was written (word tokens as float16), so the run that fills the cache scores
        # exactly as the runs that read it (float32 tokens differed in the 6th digit).
        found = _read_prompt_store(target, texts, tokens)
        if found is not None:
            return dataclasses.replace(found, source=text_model)
    return PromptEmbeddings(texts, emb.embeddings, emb.tokens, emb.mask, space, text_model)


def _write_prompt_store(path: Path, texts: list[str], emb: Any, space: dict[str, Any]) -> None:
    from ..store import StoreWriter
    from ..store.store import base_attrs

    path.parent.mkdir(parents=True, exist_ok=True)
    shape = None if emb.tokens is None else (emb.tokens.shape[1], emb.tokens.shape[2])
    attrs = base_attrs(modality="text", model_spec=space.get("model_spec"),
                       weights_sha256=space.get("weights_sha256"), input="prompts")
    with StoreWriter(path, dim=emb.embeddings.shape[1], attrs=attrs, columns=["texts"],
                     token_shape=shape) as w:
        w.append([f"p{i}" for i in range(len(texts))], emb.embeddings, columns={"texts": texts},
                 tokens=emb.tokens, tokens_mask=emb.mask)
