"""What a classification scores with, opened and checked before any query is read.

:func:`plan_classification` turns :class:`ClassifyOptions` (the keyword arguments of
:func:`~stitchkit.zeroshot.scoring.classify_store`) into a :class:`ClassifyPlan`: the query
store, the map (optional), the head or head ensemble (optional), the prompts' embeddings and the
:class:`~stitchkit.zeroshot.scorers.Scorer` built on them. Every arrow of the composition
(query store → map → head image space; prompts' text model → head text space, or → the image
side itself for cosine scoring) is checked here, one line per mismatch unless ``force``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..devices import DEVICE_HELP, device_name, on_device
from ..errors import UsageError
from ..fileio import check_writable_dir
from ..label_use import record_label_use
from ..settings import Range, check_settings, setting
from ..store import EmbeddingStore, check_same_space
from ..store.pooling import check_pool_by
from .metrics import DEFAULT_BOOTSTRAP
from .patches import PatchOptions
from .prompt_cache import PromptEmbeddings, embed_prompts
from .prompts import PromptSet, check_for_mode
from .scorers import DEFAULT_TEMPERATURE, MULTILABEL_RULES, PRIORS, SCORINGS, Scorer

ProgressFn = Callable[[int, int], None]
PathLike = str | os.PathLike


def scoring_setting() -> Any:
    """The ``scoring`` setting (classify and benchmark)."""
    return setting(None, "Default: head when --head is given, else cosine. patch: the map applied to every "
                   "patch token of the query, token cosines pooled (--patch-pooling; needs a token store).",
                   choices=SCORINGS)


def multilabel_score_setting() -> Any:
    """The ``multilabel_score`` setting (classify and benchmark)."""
    return setting("contrast", "Multi-label prompts: a finding's positive prompt minus its negative one "
                   "(CARZero's form), or the positive prompt alone.", choices=MULTILABEL_RULES)


@dataclass
class ClassifyOptions:
    """Everything a classification takes besides the query and the prompts: the keyword
    arguments of :func:`~stitchkit.zeroshot.scoring.classify_store`, and the settings
    ``stitch classify`` generates its options from (:mod:`stitchkit.settings`)."""

    text_model: str | None = None
    prompt_store: PathLike | None = None
    map_path: PathLike | None = None
    adapt_path: PathLike | None = None  # an adaptation map (stitch adapt) in the scorer's image space
    head_path: PathLike | list[PathLike] | None = None  # several: an ensemble
    ids: list[str] | None = None
    progress: ProgressFn | None = None
    scoring: str | None = scoring_setting()
    patch: PatchOptions = field(default_factory=PatchOptions)  # --scoring patch: how tokens are pooled
    temperature: float = setting(
        DEFAULT_TEMPERATURE, "Cosine scoring: logits are cosine / temperature (0.05 keeps float32 "
        "probabilities off 0 and 1).")
    image_tokens: bool = setting(
        True, "Score with the query's image tokens where the head was trained with them; "
        "--no-image-tokens scores such a head on global vectors only (else a query without tokens is refused).")
    prior: str = setting(
        "none", "em: estimate the class priors of the unlabelled queries (Saerens et al. 2002) and "
        "decide by the adjusted posteriors; mixture (two classes): fit two Gaussians to the "
        "queries' log-odds by EM and decide by that posterior. Neither uses a label.", choices=PRIORS)
    multilabel_score: str = multilabel_score_setting()
    output: PathLike | None = setting(None, "Per-sample scores: .csv or .h5.")
    pool_by: str | None = setting(None, "Pool the views of one group (study) into one sample; "
                                  "scores are per group.", choices=("group",), none="none")
    bootstrap: int = setting(DEFAULT_BOOTSTRAP, "Bootstrap resamples for confidence intervals, of whole "
                             "groups (patients) where the store has groups (0: none).",
                             within=Range(0))
    seed: int = setting(0, "Seed of the bootstrap.")
    chunk_size: int = setting(8192, "Query rows per block (memory stays flat).", within=Range(1))
    force_space: bool = setting(
        False, "Proceed although map, head and prompts name different models (a real mismatch).")
    allow_missing_classes: bool = setting(
        False, "Score prompt classes that match no label of a labelled QUERY (their AUC is n/a); "
        "without it such a class (e.g. a misspelled label) stops the command.")
    allow_overlap: bool = setting(
        False, "Score rows that trained the head, or whose patients' images did (counted in the record as "
        "rows_in_head_training); without it such rows stop the command (exit 2).")
    device: str = setting("auto", DEVICE_HELP + " The map and the head run there; the CPU runs "
                          "exactly what it always ran.")


@dataclass
class ClassifyPlan:
    """The opened, checked composition of one classification."""

    store: EmbeddingStore
    prompts: PromptSet
    scoring: str  # "head" (one head or an ensemble), "cosine" or "patch"
    pool_by: str | None
    device: str  # where the map and the head run
    chunk_size: int  # rows per block, bounded further when tokens are mapped
    composition: dict[str, Any]  # what the score file and the result record
    image_space: dict[str, Any]  # the space the scorer sees images in (after the map)
    image_from: str  # that space's origin, as the mismatch messages name it
    notes: list[str] = field(default_factory=list)
    mapper: Any = None  # a fitted map (stitchkit.maps), on ``device``
    head: Any = None  # stitchkit.head.Head or scorers.HeadEnsemble, on ``device``
    head_name: str = ""  # the head file(s), as messages name them
    scorer: Scorer = field(init=False)


def plan_classification(query: PathLike | EmbeddingStore, prompts: PromptSet,
                        options: ClassifyOptions) -> ClassifyPlan:
    """Open and check every piece; the cheap checks of the options come first, before any
    file is opened, then the arrows of the composition in their order."""
    check_for_mode(prompts)
    pool_by = check_pool_by(options.pool_by)
    scoring = _check_options(options)
    dev = device_name(options.device)  # a GPU that is not there: one line, before any work
    store = query if isinstance(query, EmbeddingStore) else EmbeddingStore(query)
    store.check_unique_ids()  # scores are written and joined by id
    plan = ClassifyPlan(
        store=store, prompts=prompts, scoring=scoring, pool_by=pool_by, device=dev,
        chunk_size=options.chunk_size,
        composition={"query": {"path": str(store.path), **store.space()}},
        image_space=store.space(), image_from=f"query store {store.path}",
    )
    if options.map_path is not None:
        _open_map(plan, options.map_path, options.force_space)
    if options.adapt_path is not None:
        _open_adaptation(plan, options.adapt_path, options.force_space)
    if options.head_path is not None:
        _open_head(plan, options)
    if scoring == "patch":
        _check_patch_tokens(plan, options.patch)
    record_label_use(plan)  # which labels the map and the head used: composition and a note
    text = _embed_prompts(plan, options)
    patch = options.patch if scoring == "patch" else None
    plan.scorer = Scorer(prompts, text, plan.head, options.temperature, options.image_tokens,
                         options.multilabel_score, patch)
    if plan.scorer.uses_image_tokens:
        _bound_token_chunks(plan)
    return plan


def _check_options(options: ClassifyOptions) -> str:
    """The scoring to use, after the checks that need no file."""
    check_settings(options)
    scoring = options.scoring or ("head" if options.head_path else "cosine")
    if scoring == "head" and options.head_path is None:
        raise UsageError("head scoring needs --head HEAD (or use --scoring cosine)")
    if scoring in ("cosine", "patch") and options.head_path is not None:
        raise UsageError(f"--head and --scoring {scoring} exclude each other: choose one")
    if options.temperature <= 0:
        raise UsageError(f"temperature must be positive, got {options.temperature}")
    if options.output is not None:
        check_writable_dir(options.output)
    return scoring


def _check_patch_tokens(plan: ClassifyPlan, patch: PatchOptions) -> None:
    """Patch scoring reads the query's patch tokens: a store without them is one line."""
    if not plan.store.has_tokens:
        raise UsageError(f"--scoring patch compares each patch token with the prompts, but query store "
                         f"{plan.store.path} has no tokens: embed it with `stitch embed --tokens` (`stitch apply` "
                         "keeps them), or use --scoring cosine")
    plan.composition["patch"] = {"pooling": patch.patch_pooling, "temperature": patch.patch_temperature,
                                 "weight": patch.patch_weight, "tokens": int(plan.store.token_shape[0])}


def _open_map(plan: ClassifyPlan, map_path: PathLike, force: bool) -> None:
    """Query store → map: the map's source side must be the store's space."""
    from ..maps import load_map

    mapper = load_map(map_path)
    check_same_space(mapper.source_space_, plan.store.space(),
                     expected_what=f"the map's source side ({map_path})",
                     got_what=f"query store {plan.store.path}", force=force)
    plan.image_space = dict(mapper.target_space_)
    plan.image_from = "the map's target space"
    plan.composition["map"] = {"path": str(map_path), "source": mapper.source_space_,
                               "target": mapper.target_space_}
    plan.mapper = on_device(mapper, plan.device)


def _open_adaptation(plan: ClassifyPlan, adapt_path: PathLike, force: bool) -> None:
    """The adaptation map, where the scorer reads: after a map into the head's image space,
    before a map into a text space (cosine), or alone on the query's own space."""
    from ..maps import load_map
    from ..maps.adapt import MapChain, is_adaptation
    from ..store.checks import same_space

    adapt = load_map(adapt_path)
    if not is_adaptation(adapt):
        raise UsageError(f"--adapt {adapt_path} is a map between two spaces, not an adaptation map: "
                         "write one with `stitch adapt STORE -o DOMAIN.map`, or pass it as --map")
    stitched = plan.mapper is not None
    after = not stitched or same_space(adapt.source_space_, plan.image_space)
    if stitched and not after and same_space(adapt.source_space_, plan.store.space()):
        plan.mapper = MapChain([on_device(adapt, plan.device), plan.mapper])  # before the cosine map
        where = "before the map"
    else:
        check_same_space(adapt.source_space_, plan.image_space, expected_what=f"the adaptation map ({adapt_path})",
                         got_what=plan.image_from, force=force)
        steps = [plan.mapper] if stitched else []
        plan.mapper = MapChain([*steps, on_device(adapt, plan.device)])
        where = "after the map" if stitched else "on the query"
    plan.composition["adapt"] = {"path": str(adapt_path), "space": adapt.source_space_, "applied": where,
                                 "images": adapt.anchors_.get("n_fit"), "from": adapt.anchors_.get("from"),
                                 **adapt.anchors_["adaptation"]}


def _open_head(plan: ClassifyPlan, options: ClassifyOptions) -> None:
    """Image side → head: the head's image space, and its tokens where it was trained on them."""
    from .scorers import load_heads

    # Several head files: an ensemble scored by the mean of the heads' logits.
    head = load_heads(options.head_path).to(plan.device)
    head_path = options.head_path
    name = str(head_path) if isinstance(head_path, (str, os.PathLike)) else ", ".join(map(str, head_path))
    plan.head, plan.head_name = head, name
    plan.composition["head"] = {"path": name, "image": head.image_space_, "text": head.text_space_}
    check_same_space(head.image_space_, plan.image_space,
                     expected_what=f"the head's image space ({name})",
                     got_what=plan.image_from, force=options.force_space)
    if head.meta_.get("pool_by") and not plan.pool_by:
        plan.notes.append("the head was trained on pooled studies; consider --pool-by group")
    if head.uses_image_tokens_ and options.image_tokens and not plan.store.has_tokens:
        raise UsageError(
            f"head {name} was trained with image tokens but query store {plan.store.path} has "
            "none: embed it with `stitch embed --tokens` (and `stitch apply` keeps them), or "
            "pass --no-image-tokens to score on global vectors only"
        )
    if head.uses_image_tokens_ and not options.image_tokens:
        plan.notes.append("--no-image-tokens: the head was trained with image tokens and now scores "
                          "global vectors only")


def _embed_prompts(plan: ClassifyPlan, options: ClassifyOptions) -> PromptEmbeddings:
    """Prompts → text side: the head's text space, or (cosine) the image side's own space."""
    head = plan.head
    text_model = options.text_model
    if head is not None and text_model is None and options.prompt_store is None:
        text_model = head.text_space_.get("model_spec")  # the head knows the text space it was trained in
    text = embed_prompts(plan.prompts.texts(), text_model=text_model, prompt_store=options.prompt_store,
                         tokens=head is not None and head.uses_text_tokens_)
    plan.composition["prompts"] = {"source": text.source, **text.space}
    if head is not None:
        check_same_space(head.text_space_, text.space,
                         expected_what=f"the head's text space ({plan.head_name})",
                         got_what=f"the prompts' text model ({text.source})", force=options.force_space)
    else:
        check_same_space(text.space, plan.image_space,
                         expected_what=f"the prompts' text space ({text.source})",
                         got_what=plan.image_from, force=options.force_space)
    return text


def _bound_token_chunks(plan: ClassifyPlan) -> None:
    """Tokens are read (and mapped) per block: fewer rows a block, so a block stays bounded."""
    from ..maps import tokens as T

    store, mapper = plan.store, plan.mapper
    if mapper is None:
        plan.chunk_size = T.rows_per_chunk(store.token_shape, store.token_shape[1], plan.chunk_size)
        return
    T.check_token_width(mapper, store.token_shape, f"query store {store.path}")
    probe = np.arange(min(len(store), 16))
    plan.notes.append(T.token_note(mapper, T.pooling_relation(store.read(probe),
                                                              *store.read_tokens(probe))))
    plan.chunk_size = T.rows_per_chunk(store.token_shape, mapper.n_features_out_, plan.chunk_size)
