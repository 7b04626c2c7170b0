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
from ..store.format import IMAGE_COLUMN
from ..store.store import base_attrs
from .prompts import PromptSet
from .standardise import NORMAL_SENTENCE, CommandStandardiser, RuleStandardiser


@dataclass
class CaptionResult:
    path: str
    origin: str
    n: int
    skipped: int
    distinct: int
    examples: list[tuple[str, str]]
    rows: int = 0  # rows written: one per sample, or one per sentence

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


NO_FINDING = {"no finding", "no_finding", "normal"}


def finding_sentences(labels: np.ndarray, prompts: PromptSet, ids: np.ndarray) -> list[list[str]]:
    """Per sample, one sentence per finding its label names ("Effusion|Pneumonia" → "There is
    pleural effusion.", "There is pneumonia."; each a positive prompt of the finding's class,
    chosen by a hash of the sample id and finding); "No Finding" → the normal-chest sentence."""
    out = []
    for sample, label in zip(ids, labels, strict=True):
        parts = [x.strip() for x in str(label).split("|") if x.strip()]
        if parts and all(x.lower() in NO_FINDING for x in parts):
            out.append([NORMAL_SENTENCE])
            continue
        out.append([c for part in parts for c in label_captions(np.array([part]), prompts,
                                                                np.array([f"{sample}|{part}"])) if c])
    return out


@dataclass(frozen=True)
class CaptionSource:
    """Where each sample's sentences come from: one choice, made once, whose parts only mean
    something together (``raw`` and ``standardiser`` apply to the store's texts, not to labels).

    ``prompts``: a label caption per sample (label-derived, not zero-shot); ``findings``: a
    sentence per finding its labels name (taken over ``prompts`` when both are given); neither:
    the store's own texts, standardised by ``standardiser`` (default: the rule-based one) or
    kept as written under ``raw``. The default is the zero-shot route.
    """

    prompts: PromptSet | None = None
    findings: PromptSet | None = None
    standardiser: RuleStandardiser | CommandStandardiser | None = None
    raw: bool = False


def make_captions(
    image_store: str | os.PathLike | EmbeddingStore,
    *,
    out: str | os.PathLike,
    text_model: str,
    source: CaptionSource = CaptionSource(),
    tokens: bool = False,
    sentences: bool = False,
    ids: list[str] | None = None,
    batch_size: int = 64,
) -> CaptionResult:
    """Write a text store for the image store's samples, their sentences taken from ``source``
    (:class:`CaptionSource`: labels through prompts, findings, or the store's texts). One row
    per sample with the sample's id (its sentences joined), or with ``sentences`` one row per
    sentence (ids ``ID#k``, the sample's id in the ``image`` column: training draws one per
    sample per step). ``ids``: only those samples get captions."""
    check_writable_dir(out)
    store = image_store if isinstance(image_store, EmbeddingStore) else EmbeddingStore(image_store)
    store.check_unique_ids()  # the caption store is joined to the images by id
    per_sample, origin = sample_sentences(store, source)
    if ids is not None:
        wanted = set(ids)
        per_sample = [sent if str(k) in wanted else [] for k, sent in zip(store.ids, per_sample, strict=True)]
    if sentences:
        owner = np.array([i for i, sent in enumerate(per_sample) for _ in sent], dtype=np.int64)
        rows = [x for sent in per_sample for x in sent]
        ids = [f"{store.ids[i]}#{k}" for i, sent in enumerate(per_sample) for k in range(len(sent))]
    else:
        owner = np.array([i for i, sent in enumerate(per_sample) if sent], dtype=np.int64)
        rows = [" ".join(per_sample[i]) for i in owner]
        ids = [str(store.ids[i]) for i in owner]
    if len(owner) == 0:
        raise UsageError(f"{store.path}: no sample got a caption (no label matched, no finding found)")
    columns: dict[str, list[str]] = {"texts": rows}
    if sentences:
        columns[IMAGE_COLUMN] = [str(store.ids[i]) for i in owner]
    for name, values in (("labels", store.labels), ("groups", store.groups)):
        if values is not None:
            columns[name] = list(values[owner])
    attrs = {"captions": origin, "input": f"captions of {store.path}",
             **({"pairs_by": IMAGE_COLUMN} if sentences else {})}
    distinct = write_text_store(out, ids, rows, columns, attrs, text_model, tokens, batch_size)
    kept = len(np.unique(owner))
    examples = [(ids[i], rows[i]) for i in range(min(3, len(rows)))]
    return CaptionResult(str(Path(out)), origin, kept, len(per_sample) - kept, distinct, examples,
                         len(rows))


def sample_sentences(store: EmbeddingStore, source: CaptionSource) -> tuple[list[list[str]], str]:
    """Each sample's sentences (none where it gets no caption) and where they came from."""
    prompts, findings = source.prompts, source.findings
    if prompts is not None or findings is not None:
        labels = store.labels
        if labels is None:
            raise UsageError(f"{store.path} has no labels: captions from labels need a labelled store")
        if findings is not None:
            return (finding_sentences(labels, findings, store.ids),
                    f"finding sentences from labels (prompts {findings.source}); label-derived")
        return ([[c] if c else [] for c in label_captions(labels, prompts, store.ids)],
                f"label-derived captions (prompts {prompts.source}); not zero-shot")
    texts = store.texts
    if texts is None:
        raise UsageError(
            f"{store.path} has no texts column: embed the images with --text-column naming "
            "the report or notes column, or use --from-labels"
        )
    if source.raw:
        return [[str(t)] if str(t).strip() else [] for t in texts], "report text as written"
    std = source.standardiser or RuleStandardiser()
    origin = ("reports standardised by command " + std.command if isinstance(std, CommandStandardiser)
              else "reports standardised by the rule-based standardiser")
    return [list(std(str(t) or "")) for t in texts], origin


def write_text_store(out: str | os.PathLike, ids: list[str], rows: list[str], columns: dict[str, list[str]],
                     attrs: dict[str, str], text_model: str, tokens: bool, batch_size: int) -> int:
    """Embed ``rows`` with ``text_model`` (each distinct text once) into a text store; returns
    the number of distinct texts."""
    from ..embed import embed_texts
    from ..encoders import load_encoder

    distinct = list(dict.fromkeys(rows))
    encoder = load_encoder(text_model, device="cpu")
    # Captions repeat a lot (label captions: a handful of sentences): embed each once.
    emb = embed_texts(encoder, distinct, tokens=tokens, batch_size=batch_size)
    where = {t: i for i, t in enumerate(distinct)}
    idx = np.array([where[c] for c in rows])
    space = encoder.space()
    attrs = base_attrs(modality="text", model_spec=space.get("model_spec"),
                       weights_sha256=space.get("weights_sha256"), **attrs)
    shape = None if emb.tokens is None else (emb.tokens.shape[1], emb.tokens.shape[2])
    with StoreWriter(out, dim=emb.embeddings.shape[1], attrs=attrs, columns=list(columns),
                     token_shape=shape, expected_rows=len(rows)) as w:
        for a in range(0, len(rows), 4096):
            sl = slice(a, a + 4096)
            w.append(ids[sl], emb.embeddings[idx[sl]], columns={k: v[sl] for k, v in columns.items()},
                     tokens=None if emb.tokens is None else emb.tokens[idx[sl]],
                     tokens_mask=None if emb.mask is None else emb.mask[idx[sl]])
    return len(distinct)
