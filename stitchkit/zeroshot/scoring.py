"""Zero-shot classification of a store through prompts: cosine or head scoring, streamed.

Composition: query store --(map, optional)--> image space of the head --(head)--> logits
against the prompts' text embeddings. Every arrow is checked: the query must be in the map's
source space, the map's target space must be the head's image space and the prompts' text
model the head's text space (with cosine scoring: the image side must be in the text space
itself, as the unimodal route of the second paper does). A mismatch is one line, unless
``force``; widths that differ can never be forced.

Scores per class:

* head, multi-class: each class's logit is the mean over its positive prompts (a residual
  head's cosine term against the class's prompt ensemble, as below: ``Head.class_logits``);
  softmax over classes. Multi-label: sigmoid(positive logit − negative logit) per finding.
* cosine: each class is the normalised mean of its normalised prompt embeddings (CLIP's
  prompt ensembling); logits are cosine / ``temperature``; then as above.
* patch: the same class vectors, compared with every mapped patch token of the query and pooled
  over the tokens (:mod:`~stitchkit.zeroshot.patches`: attention after RadZero by default);
  logits are that / ``temperature``; then as above.

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

Pieces, one step each: :func:`~stitchkit.zeroshot.classify_plan.plan_classification` opens and
checks the composition (a :class:`~stitchkit.zeroshot.classify_plan.ClassifyPlan`);
:func:`~stitchkit.zeroshot.query_blocks.read_blocks` reads the queries block by block; the
plan's :class:`~stitchkit.zeroshot.scorers.Scorer` (cosine, a head or a head ensemble) turns a
block into scores and probabilities; :class:`~stitchkit.zeroshot.score_writer.ScoreWriter`
writes them and :class:`~stitchkit.zeroshot.score_writer.ScoreSpill` keeps the metrics'
columns, which :func:`~stitchkit.zeroshot.metrics.evaluate_columns` reads. :func:`classify`
runs them with a :class:`~stitchkit.zeroshot.classify_plan.ClassifyOptions`;
:func:`classify_store` is the same with keyword arguments.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..devices import keep_freed_heap
from ..errors import UsageError, closest
from ..fitted_on import overlap_summary, record_overlap
from ..store import EmbeddingStore
from .classify_plan import ClassifyOptions, ClassifyPlan, ProgressFn, plan_classification
from .metrics import LabelTable, decision_rule, evaluate_columns, group_codes
from .prompts import PromptSet
from .query_blocks import (
    Float32Tokens,
    QueryBlock,
    QueryLabels,
    n_outputs,
    read_ahead,
    read_blocks,
    reads_ahead,
    tokens_as_stored,
)
from .score_writer import ScoreSpill, ScoreWriter
from .scorers import Scorer, em_priors, mixture_calibration

# em_priors and mixture_calibration: still importable from here, where they were first.
__all__ = ["ClassifyOptions", "ClassifyResult", "ProgressFn", "classify", "classify_store",
           "em_priors", "mixture_calibration", "require_positives"]


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
    # Scored rows that trained the head, patients shared with it, map anchors among them
    # (stitchkit.fitted_on; None: not recorded, or no such piece).
    overlap: dict[str, Any] = field(default_factory=dict)

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
        close = closest(name.lower(), [p.lower() for p in parts], cutoff=0.6)
        if close:
            hints.append(f"{name!r} is close to the store's {close!r}")
    raise UsageError(
        f"{len(missing)} class(es) of the prompts match no label of {where}: {', '.join(missing)} "
        f"(its labels: {', '.join(parts[:12])}{', ...' if len(parts) > 12 else ''}"
        f"{'; ' + '; '.join(hints) if hints else ''}): fix the prompt set's labels, or pass "
        "--allow-missing-classes to score classes without positives (their AUC is n/a)"
    )


def adjust_prior(plan: ClassifyPlan, prior: str, blocks: Callable[[], Iterator[QueryBlock]]) -> None:
    """Label-free prior adjustment of ``plan.scorer`` (``prior`` "em" or "mixture"): a first
    pass over the queries collects their class logits (N × C, small) and fits on them."""
    prompts = plan.prompts
    if prior == "none":
        return
    if prior == "em" and prompts.mode != "multiclass":
        raise UsageError("--prior em adjusts multi-class priors: use it with --mode multiclass")
    if prior == "mixture" and (prompts.mode != "multiclass" or len(prompts.names) != 2):
        raise UsageError("--prior mixture calibrates two classes: use it with two multi-class classes")
    as_float32 = Float32Tokens()
    with read_ahead(blocks(), reads_ahead(plan)) as ahead:
        z = np.concatenate([plan.scorer.class_logits(b.glob, as_float32(b.tokens), b.mask) for b in ahead])
    fit = _fit_em_priors if prior == "em" else _fit_mixture
    record, note = fit(plan.scorer, z, prompts.names)
    plan.composition["prior"] = {"name": prior, **record}  # the name: a score file's decision rule
    plan.notes.append(note)


def _per_class(names: list[str], priors: np.ndarray) -> str:
    return ", ".join(f"{c} {p:.3f}" for c, p in zip(names, priors, strict=True))


def _fit_em_priors(scorer: Scorer, z: np.ndarray, names: list[str]) -> tuple[dict[str, Any], str]:
    """Saerens' EM: the query set's class priors, added to the logits as log ratios."""
    est, iters = em_priors(z)
    scorer.shift = np.log(est * len(est))
    record = {"method": "em (Saerens et al. 2002), label-free",
              "priors": dict(zip(names, map(float, est), strict=True)), "iterations": iters}
    return record, "class priors estimated on the unlabelled query set by EM: " + _per_class(names, est)


def _fit_mixture(scorer: Scorer, z: np.ndarray, names: list[str]) -> tuple[dict[str, Any], str]:
    """Two classes: the log-odds rescaled and shifted to a two-Gaussian mixture's posterior."""
    a, b, est, iters = mixture_calibration(z)
    scorer.scale, scorer.shift = a, np.array([0.0, b])
    record = {"method": "two-Gaussian mixture on the log-odds by EM, label-free",
              "priors": dict(zip(names, map(float, est), strict=True)),
              "scale": a, "offset": b, "iterations": iters}
    return record, ("scores calibrated on the unlabelled query set by a two-Gaussian mixture: "
                    "priors " + _per_class(names, est))


@dataclass
class ScoreSinks:
    """Where each scored block goes: the score file, the metrics' columns, the progress."""

    writer: ScoreWriter | None
    spill: ScoreSpill | None  # None: the queries have no label, so no metrics
    labels: LabelTable
    mode: str
    progress: ProgressFn | None
    n_total: int
    groups: list[np.ndarray] | None = field(default_factory=list)  # the spilled samples' groups; None: no groups

    def add(self, block: QueryBlock, logits: np.ndarray, probs: np.ndarray) -> None:
        if self.writer:
            self.writer.write(block.ids, block.labels, logits, probs)
        if self.spill is not None:
            # Per block: the pooled route codes new labels as it goes, so the table grows.
            keep = self.labels.usable(self.mode)[block.codes]
            if keep.all():
                self.spill.add(block.codes, logits, probs)
            elif keep.any():
                self.spill.add(block.codes[keep], logits[keep], probs[keep])
            if block.groups is None:
                self.groups = None
            elif self.groups is not None and keep.any():
                self.groups.append(block.groups if keep.all() else block.groups[keep])

    def sample_groups(self) -> np.ndarray | None:
        """Each spilled sample's group as a code (:func:`.metrics.group_codes`), or None."""
        if self.groups is None or self.spill is None:
            return None
        return group_codes(np.concatenate(self.groups) if self.groups else np.zeros(0, dtype=object))


def score_blocks(scorer: Scorer, blocks: Iterable[QueryBlock], sinks: ScoreSinks) -> int:
    """Score every block into ``sinks``; the number of samples scored."""
    n_done = 0
    as_float32 = Float32Tokens()  # float16 tokens as read for a head, converted into one buffer
    for block in blocks:
        logits, probs = scorer(block.glob, as_float32(block.tokens), block.mask)
        sinks.add(block, logits, probs)
        n_done += len(block.ids)
        if sinks.progress:
            sinks.progress(n_done, sinks.n_total)
    return n_done


def spilled_metrics(plan: ClassifyPlan, spill: ScoreSpill | None, n_done: int,
                    options: ClassifyOptions, groups: np.ndarray | None = None) -> dict[str, Any] | None:
    """The metrics of the spilled columns (None without labels), and a note on samples left out.
    ``groups``: each spilled sample's group: the intervals then resample whole groups."""
    if spill is None:
        return None
    spill.finish()
    spill.groups = groups
    if spill.n != n_done:
        plan.notes.append(f"{n_done - spill.n} samples have labels that match no single "
                          "class of the prompts and are left out of the metrics")
    if not spill.n:
        return None
    rule = decision_rule(plan.prompts.mode, options.prior, options.multilabel_score)
    return evaluate_columns(spill, plan.prompts.names, mode=plan.prompts.mode,
                            n_boot=options.bootstrap, seed=options.seed, rule=rule)


def _score_writer(plan: ClassifyPlan, out: str | os.PathLike | None, with_labels: bool
                  ) -> ScoreWriter | None:
    if out is None:
        return None
    meta = {"mode": plan.prompts.mode, "scoring": plan.scoring, "prompts": plan.prompts.source,
            "composition": plan.composition}  # the same dict: a prior fitted later is in it
    return ScoreWriter(Path(out), plan.prompts.names, meta, with_labels, plan.prompts.mode)


def classify(query: str | os.PathLike | EmbeddingStore, prompts: PromptSet,
             options: ClassifyOptions) -> ClassifyResult:
    """:func:`classify_store` with its keyword arguments in one :class:`ClassifyOptions`."""
    t0 = time.perf_counter()
    plan = plan_classification(query, prompts, options)
    store, ids, out = plan.store, options.ids, options.output
    rows = np.arange(len(store)) if ids is None else np.sort(store.index_of(ids))
    # Rows that trained the head: refused (unless allow_overlap) before anything is written.
    record_overlap(plan, rows, options.allow_overlap)
    labels = QueryLabels(store, rows, prompts, pooled=plan.pool_by is not None)
    if labels.any and not options.allow_missing_classes:
        require_positives(prompts, labels.distinct(), store.path)
    n_total = n_outputs(plan, rows)
    writer = _score_writer(plan, out, labels.any)

    def blocks() -> Iterator[QueryBlock]:
        return read_blocks(plan, rows, labels)

    if tokens_as_stored(plan):
        keep_freed_heap()  # a head's per-block intermediates are reused, not page-faulted in anew
    adjust_prior(plan, options.prior, blocks)
    if options.progress:
        options.progress(0, n_total)
    # The metrics' per-sample columns, beside the output (or in the system's temporary folder).
    spill = ScoreSpill(lambda: labels.table.table, len(prompts.names), prompts.mode, n_total,
                       Path(out).parent if out is not None else None) if labels.any else None
    sinks = ScoreSinks(writer, spill, labels.table, prompts.mode, options.progress, n_total)
    try:
        with writer if writer is not None else nullcontext(), \
                read_ahead(blocks(), reads_ahead(plan)) as ahead:
            n_done = score_blocks(plan.scorer, ahead, sinks)
        seconds = time.perf_counter() - t0
        metrics = spilled_metrics(plan, spill, n_done, options, sinks.sample_groups())
    finally:
        if spill is not None:
            spill.close()
    return ClassifyResult(
        n=n_done, classes=prompts.names, mode=prompts.mode, scoring=plan.scoring,
        output=str(out) if out is not None else None, composition=plan.composition, metrics=metrics,
        seconds=seconds, samples_per_s=n_done / max(seconds, 1e-9), notes=plan.notes, device=plan.device,
        overlap=overlap_summary(plan.composition),
    )


def classify_store(query: str | os.PathLike | EmbeddingStore, prompts: PromptSet,
                   options: ClassifyOptions | None = None, **settings: Any) -> ClassifyResult:
    """Score every sample of ``query`` against ``prompts``; metrics where labels exist.

    ``settings`` are :class:`ClassifyOptions` fields (``map_path``, ``head_path``, ``bootstrap``,
    ``device``, ...), applied over ``options`` (its defaults when None); an unknown name is a
    ``TypeError``, as for any keyword argument. ``device`` (auto, cpu, cuda[:N]:
    :mod:`stitchkit.devices`) runs the map and the head there; the CPU runs exactly what it
    always ran.

    >>> r = classify_store("k-lite0.h5", load_prompts("pneumonia"), text_model="minilm",
    ...                    map_path="lite0-to-lite2.map", head_path="head.st")  # doctest: +SKIP
    """
    return classify(query, prompts, replace(options or ClassifyOptions(), **settings))
