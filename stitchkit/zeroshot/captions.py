"""Text stores paired with an image store by id: the text side of head training.

Two sources, named in the store's ``captions`` attribute so every result built on them can say
what it used:

* ``labels``: captions derived from the image labels through a prompt file ("There is
  pneumonia."). Honest prompts, but a head trained on them has seen the evaluation labels'
  classes: results built on them are label-supervised, not zero-shot.
* ``reports``: the image store's own texts (reports, clinical notes) rewritten into standardised
  sentences by the rule-based standardiser or an external command (an LLM). This is the
  zero-shot route: no label is used.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError
from ..fileio import check_writable_dir
from ..store import EmbeddingStore, StoreWriter
from ..store.store import base_attrs
from .prompts import PromptSet
from .standardise import CommandStandardiser, RuleStandardiser, standardise


@dataclass
class CaptionResult:
    path: str
    origin: str
    n: int
    skipped: int
    distinct: int
    examples: list[tuple[str, str]]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def label_captions(labels: np.ndarray, prompts: PromptSet, ids: np.ndarray | None = None
                   ) -> list[str | None]:
    """One positive prompt of the class each label names; None where none matches.

    The prompt is chosen among the class's positives by a hash of the sample id (stable across
    runs), so the head sees every phrasing it will meet at classification time; the training
    loss treats all captions of one label as positives of each other.
    """
    import hashlib

    out: list[str | None] = []
    for n, lab in enumerate(labels):
        match = [c for c in prompts.classes if c.matches(str(lab))] if str(lab) else []
        if not match:
            out.append(None)
            continue
        key = str(ids[n]) if ids is not None else str(n)
        h = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=4).digest(), "little")
        out.append(" ".join(c.positive[h % len(c.positive)] for c in match))
    return out


def make_captions(
    image_store: str | os.PathLike | EmbeddingStore,
    *,
    out: str | os.PathLike,
    text_model: str,
    prompts: PromptSet | None = None,
    standardiser: RuleStandardiser | CommandStandardiser | None = None,
    raw: bool = False,
    tokens: bool = False,
    batch_size: int = 64,
) -> CaptionResult:
    """Write a text store with the image store's ids: label captions (``prompts``) or its texts
    standardised (default) or kept as they are (``raw``)."""
    check_writable_dir(out)
    store = image_store if isinstance(image_store, EmbeddingStore) else EmbeddingStore(image_store)
    store.check_unique_ids()  # the caption store is joined to the images by id
    if prompts is not None:
        labels = store.labels
        if labels is None:
            raise UsageError(f"{store.path} has no labels: captions from labels need a labelled store")
        captions = label_captions(labels, prompts, store.ids)
        origin = f"label-derived captions (prompts {prompts.source}); not zero-shot"
    else:
        texts = store.texts
        if texts is None:
            raise UsageError(
                f"{store.path} has no texts column: embed the images with --text-column naming "
                "the report or notes column, or use --from-labels"
            )
        if raw:
            captions = [str(t) if str(t).strip() else None for t in texts]
            origin = "report text as written"
        else:
            std = standardiser or RuleStandardiser()
            captions = [c or None for c in standardise([str(t) for t in texts], std)]
            origin = ("reports standardised by command " + std.command
                      if isinstance(std, CommandStandardiser) else
                      "reports standardised by the rule-based standardiser")
    keep = np.array([i for i, c in enumerate(captions) if c], dtype=np.int64)
    if len(keep) == 0:
        raise UsageError(f"{store.path}: no sample got a caption (no label matched, no finding found)")
    kept = [captions[i] for i in keep]
    distinct = list(dict.fromkeys(kept))

    from ..embed import embed_texts
    from ..encoders import load_encoder

    encoder = load_encoder(text_model, device="cpu")
    # Captions repeat a lot (label captions: a handful of sentences): embed each once.
    emb = embed_texts(encoder, distinct, tokens=tokens, batch_size=batch_size)
    where = {t: i for i, t in enumerate(distinct)}
    idx = np.array([where[c] for c in kept])
    space = encoder.space()
    attrs = base_attrs(modality="text", model_spec=space.get("model_spec"),
                       weights_sha256=space.get("weights_sha256"), captions=origin,
                       input=f"captions of {store.path}")
    columns = {"texts": kept}
    if store.labels is not None:
        columns["labels"] = list(store.labels[keep])
    if store.groups is not None:
        columns["groups"] = list(store.groups[keep])
    shape = None if emb.tokens is None else (emb.tokens.shape[1], emb.tokens.shape[2])
    with StoreWriter(out, dim=emb.embeddings.shape[1], attrs=attrs, columns=list(columns),
                     token_shape=shape, expected_rows=len(keep)) as w:
        for a in range(0, len(keep), 4096):
            sl = slice(a, a + 4096)
            w.append(list(store.ids[keep[sl]]), emb.embeddings[idx[sl]],
                     columns={k: v[sl] for k, v in columns.items()},
                     tokens=None if emb.tokens is None else emb.tokens[idx[sl]],
                     tokens_mask=None if emb.mask is None else emb.mask[idx[sl]])
    examples = [(str(store.ids[i]), captions[i]) for i in keep[:3]]
    return CaptionResult(str(Path(out)), origin, len(keep), len(captions) - len(keep), len(distinct),
                         examples)
