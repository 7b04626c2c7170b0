"""Zero-shot classification of a store through prompts: cosine or head scoring, streamed.

Composition: query store --(map, optional)--> image space of the head --(head)--> logits
against the prompts' text embeddings. Every arrow is checked: the query must be in the map's
source space, the map's target space must be the head's image space and the prompts' text
model the head's text space (with cosine scoring: the image side must be in the text space
itself, as the unimodal route of the second paper does). A mismatch is one line, unless
``force``; widths that differ can never be forced.

Scores per class:

* head, multi-class: each class's logit is the mean over its positive prompts; softmax over
  classes. Multi-label: sigmoid(positive logit − negative logit) per finding.
* cosine: each class is the normalised mean of its normalised prompt embeddings (CLIP's
  prompt ensembling); logits are cosine / ``temperature``; then as above.

Ranking: metrics rank by log-odds (multi-class) or logit differences (multi-label), which never
saturate; the per-sample file holds them beside the probabilities, so an AUC recomputed from
the file is the one reported. The default cosine temperature (0.05) keeps float32
probabilities off exactly 0 and 1 for cosine gaps up to 0.8.

Tokens: a head trained with image tokens needs a query store with tokens (one clear line
otherwise, or ``image_tokens=False`` to score on globals on purpose); through a map they are
mapped per token (:mod:`stitchkit.maps.tokens`), in chunks of bounded size.

Label-free prior adjustment (``prior="em"``, Saerens et al. 2002): the class priors of the
unlabelled query set are estimated by EM on the posteriors and the posteriors re-weighted by
them. It moves the decision (argmax) and calibration, never a sample's rank within a class
for two classes; no label is used.
"""

from __future__ import annotations

import difflib
import os
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..devices import device_name, on_device
from ..errors import UsageError
from ..fileio import check_writable_dir
from ..store import EmbeddingStore, check_same_space, require_finite
from ..store import format as fmt
from ..store.pooling import check_pool_by, group_blocks, group_rows, pool_views
from .metrics import LabelTable, evaluate_columns
from .prompt_cache import embed_prompts
from .prompts import PromptSet, check_for_mode
from .score_writer import ScoreSpill, ScoreWriter
from .scorers import (
    DEFAULT_TEMPERATURE,
    PRIORS,
    SCORINGS,
    Scorer,
    em_priors,
    mixture_calibration,
)

ProgressFn = Callable[[int, int], None]


# -- classification ------------------------------------------------------------------------
@dataclass
class ClassifyResult:
    n: int
    classes: list[str]
    mode: str
    scoring: str
    output: str | None
    composition: dict[str, Any]
    metrics: dict[str, Any] | None
    seconds: float
    samples_per_s: float
    notes: list[str] = field(default_factory=list)
    device: str = "cpu"  # where the map and the head ran

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def require_positives(prompts: PromptSet, labels: np.ndarray, where: object) -> None:
    """Every class of the prompts has a positive among the store's ``labels`` (distinct values):
    a misspelled prompt label would otherwise give AUC nan and metrics on a subset, silently."""
    labels = [str(v) for v in labels if str(v)]
    table = LabelTable([c.matches for c in prompts.classes])
    table.codes(labels)
    hit = table.table.any(axis=0) if labels else np.zeros(len(prompts.names), dtype=bool)
    missing = [name for name, ok in zip(prompts.names, hit, strict=True) if not ok]
    if not missing:
        return
    parts = sorted({p for v in labels for p in v.split("|") if p})
    hints = []
    for name in missing:
        close = difflib.get_close_matches(name.lower(), [p.lower() for p in parts], n=1, cutoff=0.6)
        if close:
            hints.append(f"{name!r} is close to the store's {close[0]!r}")
    raise UsageError(
        f"{len(missing)} class(es) of the prompts match no label of {where}: {', '.join(missing)} "
        f"(its labels: {', '.join(parts[:12])}{', ...' if len(parts) > 12 else ''}"
        f"{'; ' + '; '.join(hints) if hints else ''}): fix the prompt set's labels, or pass "
        "--allow-missing-classes to score classes without positives (their AUC is n/a)"
    )


def classify_store(
    query: str | os.PathLike | EmbeddingStore,
    prompts: PromptSet,
    *,
    text_model: str | None = None,
    prompt_store: str | os.PathLike | None = None,
    map_path: str | os.PathLike | None = None,
    head_path: str | os.PathLike | list[str | os.PathLike] | None = None,
    scoring: str | None = None,
    out: str | os.PathLike | None = None,
    ids: list[str] | None = None,
    pool_by: str | None = None,
    force: bool = False,
    chunk_size: int = 8192,
    n_boot: int = 1000,
    seed: int = 0,
    temperature: float = DEFAULT_TEMPERATURE,
    progress: ProgressFn | None = None,
    image_tokens: bool = True,
    prior: str = "none",
    allow_missing_classes: bool = False,
    device: str = "cpu",
) -> ClassifyResult:
    """Score every sample of ``query`` against ``prompts``; metrics where labels exist.

    ``device`` (auto, cpu, cuda[:N]: :mod:`stitchkit.devices`) runs the map and the head
    there; the CPU runs exactly what it always ran.

    >>> r = classify_store("k-lite0.h5", load_prompts("pneumonia"), text_model="minilm",
    ...                    map_path="lite0-to-lite2.map", head_path="head.st")  # doctest: +SKIP
    """
    t0 = time.perf_counter()
    check_for_mode(prompts)
    pool_by = check_pool_by(pool_by)
    scoring = scoring or ("head" if head_path else "cosine")
    if scoring not in SCORINGS:
        raise UsageError(f"scoring (--scoring) must be one of {', '.join(SCORINGS)}, got {scoring!r}")
    if scoring == "head" and head_path is None:
        raise UsageError("head scoring needs --head HEAD (or use --scoring cosine)")
    if scoring == "cosine" and head_path is not None:
        raise UsageError("--head and --scoring cosine exclude each other: choose one")
    if prior not in PRIORS:
        raise UsageError(f"prior (--prior) must be one of {', '.join(PRIORS)}, got {prior!r}")
    if temperature <= 0:
        raise UsageError(f"temperature (--temperature) must be positive, got {temperature}")
    if out is not None:
        check_writable_dir(out)
    dev = device_name(device)  # a GPU that is not there: one line, before any work
    store = query if isinstance(query, EmbeddingStore) else EmbeddingStore(query)
    store.check_unique_ids()  # scores are written and joined by id
    notes: list[str] = []

    mapper = None
    image_space = store.space()
    composition: dict[str, Any] = {"query": {"path": str(store.path), **store.space()}}
    if map_path is not None:
        from ..maps import load_map

        mapper = load_map(map_path)
        check_same_space(mapper.source_space_, store.space(), expected_what=f"the map's source side ({map_path})",
                    got_what=f"query store {store.path}", force=force)
        image_space = dict(mapper.target_space_)
        composition["map"] = {"path": str(map_path), "source": mapper.source_space_,
                              "target": mapper.target_space_}
        mapper = on_device(mapper, dev)

    head = None
    if head_path is not None:
        from .scorers import load_heads

        # Several head files: an ensemble scored by the mean of the heads' logits.
        head = load_heads(head_path).to(dev)
        if not isinstance(head_path, (str, os.PathLike)):
            head_path = ", ".join(map(str, head_path))
        composition["head"] = {"path": str(head_path), "image": head.image_space_, "text": head.text_space_}
        check_same_space(head.image_space_, image_space,
                    expected_what=f"the head's image space ({head_path})",
                    got_what="the map's target space" if mapper else f"query store {store.path}",
                    force=force)
        if head.meta_.get("pool_by") and not pool_by:
            notes.append("the head was trained on pooled studies; consider --pool-by group")
        if head.uses_image_tokens_ and image_tokens and not store.has_tokens:
            raise UsageError(
                f"head {head_path} was trained with image tokens but query store {store.path} has "
                "none: embed it with `stitch embed --tokens` (and `stitch apply` keeps them), or "
                "pass --no-image-tokens to score on global vectors only"
            )
        if head.uses_image_tokens_ and not image_tokens:
            notes.append("--no-image-tokens: the head was trained with image tokens and now scores "
                         "global vectors only")

    if head is not None and text_model is None and prompt_store is None:
        text_model = head.text_space_.get("model_spec")  # the head knows the text space it was trained in
    text = embed_prompts(prompts.texts(), text_model=text_model, prompt_store=prompt_store,
                         tokens=head is not None and head.uses_text_tokens_)
    composition["prompts"] = {"source": text.source, **text.space}
    if head is not None:
        check_same_space(head.text_space_, text.space, expected_what=f"the head's text space ({head_path})",
                    got_what=f"the prompts' text model ({text.source})", force=force)
    else:
        check_same_space(text.space, image_space, expected_what=f"the prompts' text space ({text.source})",
                    got_what="the map's target space" if mapper else f"query store {store.path}",
                    force=force)
    scorer = Scorer(prompts, text, head, temperature, image_tokens)
    if scorer.uses_image_tokens:
        from ..maps import tokens as T

        if mapper is not None:
            T.check_token_width(mapper, store.token_shape, f"query store {store.path}")
            probe = np.arange(min(len(store), 16))
            notes.append(T.token_note(mapper, T.pooling_relation(store.read(probe),
                                                                  *store.read_tokens(probe))))
            chunk_size = T.rows_per_chunk(store.token_shape, mapper.n_features_out_, chunk_size)
        else:
            chunk_size = T.rows_per_chunk(store.token_shape, store.token_shape[1], chunk_size)

    rows = np.arange(len(store)) if ids is None else np.sort(store.index_of(ids))
    classes = prompts.names
    labels = LabelTable([c.matches for c in prompts.classes])
    # Labels as int32 codes where the store has them so (4 bytes a row, no str per row); the
    # pooled route pools strings per group, and a union of stores has only strings.
    coded = store.column_codes(fmt.LABELS) if pool_by is None and hasattr(store, "column_codes") else None
    if coded is not None:
        label_values, label_codes = coded
        remap = labels.remap(label_values)
        present = np.bincount(label_codes[rows], minlength=len(label_values)) > 0
        with_labels = bool((present & (label_values != "")).any())
        labels_all = None
    else:
        labels_all = store.labels
        with_labels = labels_all is not None and any(str(x) for x in labels_all[rows])
    if with_labels and not allow_missing_classes:
        distinct = label_values[present] if coded is not None else np.unique(labels_all[rows].astype(str))
        require_positives(prompts, distinct, store.path)
    n_done = 0
    n_total = len(rows) if pool_by is None else len(group_rows(store.groups[rows])[0]) if store.groups is not None else 0
    meta = {"mode": prompts.mode, "scoring": scoring, "prompts": prompts.source,
            "composition": composition}
    writer = ScoreWriter(Path(out), classes, meta, with_labels, prompts.mode) if out is not None else None

    def blocks() -> Iterator[tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray,
                                   np.ndarray | None, np.ndarray | None]]:
        """(ids, labels, label codes, image globals, tokens, mask) per block, mapped and pooled."""
        for block, members, group_keys in group_blocks(store, rows, pool_by, chunk_size):
            glob = store.read(block)
            tok = mask = None
            if scorer.uses_image_tokens:
                tok, mask = store.read_tokens(block)
            # A row sum is NaN or Inf where any entry is: one read of the block and (n,) values,
            # where an element-wise check writes (n, D); the message comes from the full check.
            if not np.isfinite(glob.sum(axis=1)).all():
                require_finite(glob, store.ids_at(block), store.path)
            if mapper is not None:
                glob = mapper.transform(glob).astype(np.float32, copy=False)
                if tok is not None:
                    tok = T.map_tokens(mapper, tok, mask)
            block_ids = store.ids_at(block)  # not store.ids: no decoded copy of all N ids
            block_codes = remap[label_codes[block]] if coded is not None and with_labels else None
            if not with_labels:
                block_labels = None
            elif coded is not None:
                block_labels = label_values[label_codes[block]]
            else:
                block_labels = labels_all[block]
            if members is not None:
                block_ids = group_keys
                glob, tok, mask, block_labels = pool_views(members, glob, tok, mask, block_labels)
            if with_labels and block_codes is None:
                block_codes = labels.codes(block_labels)
            yield block_ids, block_labels, block_codes, glob, tok, mask

    if prior == "em":
        if prompts.mode != "multiclass":
            raise UsageError("--prior em adjusts multi-class priors: use it with --mode multiclass")
        # First pass: the class logits of every query (N × C, small), then EM on them.
        z = np.concatenate([scorer.class_logits(g, t, mk) for _, _, _, g, t, mk in blocks()])
        est, iters = em_priors(z)
        scorer.shift = np.log(est * len(est))
        composition["prior"] = {"method": "em (Saerens et al. 2002), label-free",
                                "priors": dict(zip(prompts.names, map(float, est), strict=True)),
                                "iterations": iters}
        notes.append("class priors estimated on the unlabelled query set by EM: "
                     + ", ".join(f"{c} {p:.3f}" for c, p in zip(prompts.names, est, strict=True)))
    elif prior == "mixture":
        if prompts.mode != "multiclass" or len(prompts.names) != 2:
            raise UsageError("--prior mixture calibrates two classes: use it with two multi-class classes")
        z = np.concatenate([scorer.class_logits(g, t, mk) for _, _, _, g, t, mk in blocks()])
        a, b, est, iters = mixture_calibration(z)
        scorer.scale, scorer.shift = a, np.array([0.0, b])
        composition["prior"] = {"method": "two-Gaussian mixture on the log-odds by EM, label-free",
                                "priors": dict(zip(prompts.names, map(float, est), strict=True)),
                                "scale": a, "offset": b, "iterations": iters}
        notes.append("scores calibrated on the unlabelled query set by a two-Gaussian mixture: priors "
                     + ", ".join(f"{c} {p:.3f}" for c, p in zip(prompts.names, est, strict=True)))
    if progress:
        progress(0, n_total)
    # The metrics' per-sample columns, beside the output (or in the system's temporary folder).
    spill = ScoreSpill(lambda: labels.table, len(classes), prompts.mode, n_total,
                       Path(out).parent if out is not None else None) if with_labels else None
    try:
        with writer if writer is not None else nullcontext():
            for block_ids, block_labels, block_codes, glob, tok, mask in blocks():
                logits, probs = scorer(glob, tok, mask)
                if writer:
                    writer.write(block_ids, block_labels, logits, probs)
                if spill is not None:
                    keep = labels.usable(prompts.mode)[block_codes]
                    if keep.all():
                        spill.add(block_codes, logits, probs)
                    elif keep.any():
                        spill.add(block_codes[keep], logits[keep], probs[keep])
                n_done += len(block_ids)
                if progress:
                    progress(n_done, n_total)
        seconds = time.perf_counter() - t0

        metrics = None
        if spill is not None:
            spill.finish()
            if spill.n != n_done:
                notes.append(f"{n_done - spill.n} samples have labels that match no single "
                             "class of the prompts and are left out of the metrics")
            if spill.n:
                metrics = evaluate_columns(spill, classes, mode=prompts.mode, n_boot=n_boot, seed=seed)
    finally:
        if spill is not None:
            spill.close()
    return ClassifyResult(
        n=n_done, classes=classes, mode=prompts.mode, scoring=scoring,
        output=str(out) if out is not None else None, composition=composition, metrics=metrics,
        seconds=seconds, samples_per_s=n_done / max(seconds, 1e-9), notes=notes, device=dev,
    )

