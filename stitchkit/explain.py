"""`stitch explain`: where a scorer looks in an image, one heatmap per class over its patch grid.

For each listed image of a token store, through the same composition `stitch classify` checks
(:func:`~stitchkit.zeroshot.classify_plan.plan_classification`: the query store, a map, a head
or the prompts' text space):

* **head** (a token head): the attention of each class's prompts (their text global, the query
  of the head's image→text direction) over the image's patch tokens, averaged over attention
  heads, layers and the class's prompts (:meth:`stitchkit.head.Head.image_attention`). A query
  on another grid is resampled onto the head's first, as scoring does (a Lite0 query mapped into
  Lite2: 7×7 → 9×9), so the grid is the head's. The weights of one image sum to 1 with the weight
  on its global vector, which the JSON gives beside them.
* **cosine** or **patch** (a map into the text space): every patch token carried by the map,
  and its cosine with each class's prompt ensemble (:func:`~stitchkit.zeroshot.patches.
  token_similarities`, RadZero's similarity map: a fixed scale, low where nothing matches);
  ``show="attention"`` draws the weights patch scoring's attention pooling gives each token
  instead. The grid is the store's own (Lite0 7×7 through a Lite0 → Lite2 → text map).

Each image is drawn as its encoder saw it (the store's ``preprocessing``: resized and centre
cropped, so the grid covers the picture) with one panel per class
(:func:`stitchkit.report.heatmaps.draw_heatmaps`), and its grid values are written as JSON
beside the PNG. The images are found from the store's ``input`` attribute (a derived store,
``stitch apply``'s output, names its ``source`` store), read by the same input formats `stitch
embed` uses; ``source`` reads another copy of them instead.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputFailure, UsageError
from .fileio import atomic_output, check_writable_dir
from .formats import EXPLAIN
from .settings import Range, check_settings, setting
from .store import EmbeddingStore
from .zeroshot.classify_plan import ClassifyOptions
from .zeroshot.patches import PatchOptions
from .zeroshot.prompts import PromptSet

SHOWS = ("similarity", "attention")
PathLike = str | os.PathLike


@dataclass
class ExplainOptions:
    """What `stitch explain` takes besides the store, the prompts and the output folder;
    ``classify`` holds the composition (map, head, text model, scoring and its settings)."""

    classify: ClassifyOptions = field(default_factory=ClassifyOptions)
    source: str | None = setting(
        None, "Where the images are (a folder or manifest as `stitch embed` reads them): default the input "
        "the store records (stitch info shows it).")
    show: str = setting(
        "similarity", "Cosine or patch scoring: each token's cosine with the class, or the attention weight "
        "patch pooling gives it (--patch-temperature). A head always shows its attention.", choices=SHOWS)
    limit: int = setting(100, "Draw at most this many images (the first of --ids).", within=Range(1))

    def __post_init__(self) -> None:
        check_settings(self)


@dataclass
class ExplainResult:
    n: int
    kind: str  # what the grids hold
    scoring: str
    grid: list[int]  # rows, columns of every image's grid
    classes: list[str]
    output: str
    images: list[dict[str, Any]]  # per image: id, label, png, json
    composition: dict[str, Any]
    seconds: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        lines = [f"explained: {self.n} images, {len(self.classes)} classes ({', '.join(self.classes)}), "
                 f"{self.kind} on a {self.grid[0]}×{self.grid[1]} grid, {self.seconds:.1f} s",
                 f"written: {self.output}/ (a PNG and a JSON per image, explain.json)"]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


# -- where the images are -------------------------------------------------------------------------
def _origin(store: EmbeddingStore) -> tuple[str | None, dict[str, Any], Path]:
    """The input the store's samples came from, the encoder's preprocessing and the folder a
    relative input is taken from: followed through derived stores (``source``) where needed."""
    attrs, folder = store.attrs, Path(store.path).parent
    found_input, prep = attrs.get("input"), attrs.get("preprocessing")
    seen = {str(Path(store.path).resolve())}
    while (not found_input or not prep) and attrs.get("source"):
        src = Path(str(attrs["source"]))
        if not src.is_file() or str(src.resolve()) in seen:
            break
        seen.add(str(src.resolve()))
        with EmbeddingStore(src) as parent:
            attrs, folder = parent.attrs, src.parent
        found_input = found_input or attrs.get("input")
        prep = prep or attrs.get("preprocessing")
    return found_input, (json.loads(prep) if isinstance(prep, str) and prep else {}), folder


def _items(store: EmbeddingStore, ids: list[str], source: PathLike | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Each id's input item (``stitchkit.inputs.Item``) and the encoder's preprocessing."""
    from .inputs import read_inputs

    recorded, prep, folder = _origin(store)
    given = source if source is not None else recorded
    if not given:
        raise UsageError(f"store {store.path} records no input it was embedded from: give --source FOLDER "
                         "or MANIFEST (as `stitch embed` read it)")
    where = str(given)
    if source is None and ":" not in where.split("/")[0] and not Path(where).exists() and (folder / where).exists():
        where = str(folder / where)  # a relative input, taken from beside the store
    if source is None and ":" not in where.split("/")[0] and not Path(where).exists():
        raise UsageError(f"store {store.path} was embedded from {given}, which is not here: give --source "
                         "with the images' folder or manifest")
    items = {it.id: it for it in read_inputs(where).items}
    missing = [i for i in ids if i not in items]
    if missing:
        raise UsageError(f"{len(missing)} of the ids are not among the images of {where} (e.g. {missing[0]!r}): "
                         "give --source with the images the store was embedded from")
    return {i: items[i] for i in ids}, prep


def encoder_view(image: Any, prep: dict[str, Any]) -> np.ndarray:
    """The picture the encoder saw, grey (H, W) uint8: the shorter side resized to the
    resolution / crop_pct, then the centre crop of the resolution (timm's and torchvision's eval
    transform); without a recorded preprocessing, the image as it is."""
    from PIL import Image

    grey = image.convert("L")
    size = prep.get("input_size")
    crop = [int(v) for v in size[1:]] if size else None
    pct = float(prep.get("crop_pct", 1.0) or 1.0)
    if crop is None and prep.get("crop_size"):
        value = prep["crop_size"]
        crop = [int(value[0]), int(value[-1])] if isinstance(value, list | tuple) else [int(value)] * 2
        resize = prep.get("resize_size")
        edge = resize[0] if isinstance(resize, list | tuple) else resize
        pct = min(crop) / float(edge) if edge else 1.0
    if not crop:
        return np.asarray(grey)
    scale = int(math.floor(min(crop) / pct))
    w, h = grey.size
    ratio = scale / min(w, h)
    grey = grey.resize((max(1, round(w * ratio)), max(1, round(h * ratio))), Image.BICUBIC)
    w, h = grey.size
    left, top = (w - crop[1]) // 2, (h - crop[0]) // 2
    return np.asarray(grey.crop((left, top, left + crop[1], top + crop[0])))


# -- the grids ------------------------------------------------------------------------------------
def _square(count: int, what: str) -> int:
    side = math.isqrt(count)
    if side * side != count:
        raise UsageError(f"{what} holds {count} tokens per sample, not a square grid of patches (a CLS token, "
                         "or word tokens?): there is no grid to draw")
    return side


def _grids(plan: Any, glob: np.ndarray, tokens: np.ndarray, mask: np.ndarray, show: str,
           ) -> tuple[np.ndarray, np.ndarray | None, str]:
    """(n, C, T) values per class and token, the weight on the global vector (heads), and what
    the values are."""
    from .zeroshot import patches as P

    scorer = plan.scorer
    if plan.head is not None:
        text = scorer.text.glob
        on_tokens, on_global = plan.head.image_attention(glob, text, tokens, mask)
        per_class = np.stack([on_tokens[:, rows].mean(axis=1) for rows in scorer.positive_rows], axis=1)
        glob_weight = np.stack([on_global[:, rows].mean(axis=1) for rows in scorer.positive_rows], axis=1)
        return per_class, glob_weight, "head attention (text query over the image tokens)"
    sims = P.token_similarities(tokens, mask, scorer.class_vectors)
    if show == "attention":
        tau = plan.composition.get("patch", {}).get("temperature", P.DEFAULT_PATCH_TEMPERATURE)
        weights = P.attention_weights(sims, mask, tau)
        return weights.transpose(0, 2, 1), None, f"patch attention weight (softmax of token cosine / {tau:g})"
    return sims.transpose(0, 2, 1), None, "token cosine with the class"


def _slug(sample_id: str, taken: set[str]) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", sample_id).strip("._") or "image"
    base, k = name, 1
    while name in taken:
        k += 1
        name = f"{base}-{k}"
    taken.add(name)
    return name


def _with_settings(options: ExplainOptions, settings: dict[str, Any]) -> ExplainOptions:
    """``options`` with ``settings``, each a field of :class:`ExplainOptions`, of its
    :class:`ClassifyOptions` or of their :class:`PatchOptions`; another name is a ``TypeError``."""
    own, composition, pooling = ({f.name for f in fields(c)} for c in (ExplainOptions, ClassifyOptions, PatchOptions))
    unknown = sorted(set(settings) - own - composition - pooling)
    if unknown:
        raise TypeError(f"explain() got an unexpected keyword argument {unknown[0]!r}")
    classify = replace(options.classify, **{k: v for k, v in settings.items() if k in composition})
    patch = {k: v for k, v in settings.items() if k in pooling}
    if patch:
        classify = replace(classify, patch=replace(classify.patch, **patch))
    return replace(options, classify=classify, **{k: v for k, v in settings.items() if k in own})


def explain(query: PathLike | EmbeddingStore, prompts: PromptSet, out: PathLike,
            options: ExplainOptions | None = None, **settings: Any) -> ExplainResult:
    """A PNG and a JSON per image of ``query`` (``options.classify.ids``, at most ``limit``) in
    folder ``out``, and ``out``/explain.json. ``settings`` are fields of :class:`ExplainOptions`,
    of its ``classify`` (:class:`ClassifyOptions`: ``map_path``, ``head_path``, ``ids``,
    ``text_model``, ``scoring``, ...) or of their :class:`PatchOptions`, applied over ``options``.

    >>> explain("k-test-lite2.h5", load_prompts("pneumonia"), "explain-head",
    ...         head_path="head-kermany-token.head", ids=["test/NORMAL/IM-0001-0001.jpeg"])  # doctest: +SKIP
    """
    from .maps import tokens as T
    from .report.heatmaps import draw_heatmaps
    from .zeroshot.classify_plan import plan_classification

    t0 = time.perf_counter()
    options = _with_settings(options or ExplainOptions(), settings)
    copts = replace(options.classify, bootstrap=0, output=None, prior="none", progress=None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    check_writable_dir(out / "explain.json")
    plan = plan_classification(query, prompts, copts)
    store, head = plan.store, plan.head
    if not store.has_tokens:
        raise UsageError(f"query store {store.path} has no patch tokens: embed it with `stitch embed --tokens` "
                         "(`stitch apply` keeps them) to see where the scorer looks")
    if head is not None and not (head.uses_image_tokens_ and copts.image_tokens):
        raise UsageError("the head was trained without image tokens (or --no-image-tokens): it attends over the "
                         "image's global vector alone, so there is no patch grid to draw; use a token head, "
                         "or --map into the text space with --scoring patch")
    ids = list(copts.ids) if copts.ids is not None else [str(i) for i in store.ids]
    notes = list(plan.notes)
    if len(ids) > options.limit:
        notes.append(f"{len(ids)} ids listed: the first {options.limit} drawn (--limit)")
        ids = ids[: options.limit]
    rows = store.index_of(ids)
    items, prep = _items(store, ids, options.source)
    from .inputs.pixels import load_item

    classes, labels = prompts.names, store.labels
    images: list[dict[str, Any]] = []
    taken: set[str] = set()
    grid: list[int] = []
    kind = ""
    for start in range(0, len(rows), 32):
        block = rows[start:start + 32]
        glob = store.read(block)
        tok, mask = store.read_tokens(block)
        if plan.mapper is not None:
            glob = plan.mapper.transform(glob).astype(np.float32, copy=False)
            tok = T.map_tokens(plan.mapper, tok, mask)
        values, glob_weight, kind = _grids(plan, glob, tok, mask, options.show)
        side = _square(values.shape[2], f"query store {store.path}" if head is None else "the head's grid")
        grid = [side, side]
        _, probs = plan.scorer(glob, tok, mask)
        for k, row in enumerate(block):
            sample = str(ids[start + k])
            label = str(labels[row]) if labels is not None else None
            name = _slug(sample, taken)
            cells = {c: values[k, j].reshape(side, side) for j, c in enumerate(classes)}
            try:
                picture, _ = load_item(items[sample])
            except InputFailure as exc:
                raise UsageError(f"image {items[sample].where()} cannot be read: {exc}; give --source with the "
                                 "images the store was embedded from") from None
            png = draw_heatmaps(encoder_view(picture, prep),
                                {f"{c} (p={probs[k, j]:.2f})": g for j, (c, g) in enumerate(cells.items())},
                                out / f"{name}.png", title=f"{sample}" + (f" [{label}]" if label else ""), what=kind)
            record = {"schema": EXPLAIN.schema, "id": sample, "label": label, "kind": kind, "scoring": plan.scoring,
                      "grid": grid, "classes": classes,
                      "probabilities": {c: float(probs[k, j]) for j, c in enumerate(classes)},
                      "values": {c: g.round(6).tolist() for c, g in cells.items()}}
            if glob_weight is not None:
                record["global_weight"] = {c: float(glob_weight[k, j]) for j, c in enumerate(classes)}
            with atomic_output(out / f"{name}.json") as tmp:
                tmp.write_text(json.dumps(record, indent=1))
            images.append({"id": sample, "label": label, "png": str(png), "json": str(out / f"{name}.json")})
    result = ExplainResult(n=len(images), kind=kind, scoring=plan.scoring, grid=grid, classes=classes,
                           output=str(out), images=images, composition=plan.composition,
                           seconds=time.perf_counter() - t0, notes=notes)
    with atomic_output(out / "explain.json") as tmp:
        tmp.write_text(json.dumps({"schema": EXPLAIN.schema, **result.to_dict()}, indent=1, default=str))
    return result
