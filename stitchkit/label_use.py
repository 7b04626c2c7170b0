"""Which labels a result used: recorded where a piece reads them, reported where results are.

A zero-shot result claims that no label of the task steered it. Three pieces of a composition
can break that claim without any error: a map whose anchors were chosen by label (``--strategy
stratified``, in ``stitch fit`` or in ``stitch anchors select``'s id file), a map fitted to text
derived from the labels (label captions as its target), and a head trained on label-derived
captions (``stitch head captions --from-labels``). Each records its label use when it is made
(the map's ``anchors_["label_use"]``, the id file's ``# label_use:`` line, the head's
``inputs.text_origin``); a classification collects them from its composition
(:func:`label_use_of`), says so in its notes and in the ``label_use`` column of its record.

The held-out metrics of a fit (the probe) read labels too, but only to measure the map: the
map is the same without them, so they are no label use of the map.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

NONE = "none"
"""The ``label_use`` of a record through which no label was used."""
LABEL_USE_FIELD = "label_use"
"""The id file header field (``# label_use: ...``) and the map record's key."""
STRATIFIED_ANCHORS = "anchors chosen by label (stratified)"
# The origins stitchkit.zeroshot.captions gives captions made from labels (its
# ``sample_sentences``); reports, standardised or as written, begin otherwise.
LABEL_CAPTION_ORIGINS = ("label-derived", "finding sentences from labels")


def stratified_anchors(labels_of: str | None = None) -> str:
    """The label use of anchors stratified by the labels of ``labels_of`` (a store's name)."""
    if not labels_of:
        return STRATIFIED_ANCHORS
    return STRATIFIED_ANCHORS[:-1] + f", labels of {labels_of})"


def captions_use_labels(origin: str | None) -> bool:
    """Whether a text store's ``captions`` origin says its captions were made from labels."""
    return bool(origin) and str(origin).startswith(LABEL_CAPTION_ORIGINS)


def _used(value: Any) -> str | None:
    """A recorded label use, None for none (absent, empty or "none")."""
    if value is None:
        return None
    text = str(value).strip()
    return None if text.lower() in ("", NONE) else text


def _joined(uses: Iterable[str | None]) -> str | None:
    distinct = list(dict.fromkeys(u for u in uses if u))
    return "; ".join(distinct) or None


# -- at fit time --------------------------------------------------------------------------------
def id_file_label_use(path: str | os.PathLike) -> str | None:
    """The ``# label_use:`` header line of an id file (``stitch anchors select`` writes it);
    None where the file has none or says "none"."""
    from .fileio import id_file_fields

    return _used(id_file_fields(path).get(LABEL_USE_FIELD))


def fit_label_use(
    anchors: Any, stratified: bool, stores: Mapping[str, Any] | None = None
) -> str | None:
    """The label use of one fit.

    ``anchors``: the plan's anchors (an id file's path carries its own label use; a list of ids
    cannot say how it was chosen). ``stratified``: the fit chose its anchors by label (it
    subsampled the candidates with ``strategy="stratified"``). ``stores``: role → store
    (``{"source": ..., "target": ...}``), whose ``captions`` attribute says when one holds
    captions made from labels: a map onto label captions is fitted on the labels themselves.
    """
    uses = []
    if isinstance(anchors, str | os.PathLike):
        from_file = id_file_label_use(anchors)
        if from_file:
            uses.append(f"{from_file} (anchor file {Path(anchors).name})")
    if stratified:
        uses.append(STRATIFIED_ANCHORS)
    for role, store in (stores or {}).items():
        origin = (getattr(store, "attrs", None) or {}).get("captions")
        if captions_use_labels(origin):
            uses.append(f"{role} store {Path(str(store.path)).name} holds {origin}")
    return _joined(uses)


# -- reading what was recorded ------------------------------------------------------------------
def map_label_use(anchors_record: Mapping[str, Any] | None) -> str | None:
    """A map's label use from its ``anchors_`` record.

    Maps written before the record had the field: a stratified choice is still visible in the
    record (strategy "stratified" and fewer anchors fitted than the pool left after the
    holdout); an id file's or a caption target's use is not, and counts as none.
    """
    record = anchors_record or {}
    if LABEL_USE_FIELD in record:
        return _used(record[LABEL_USE_FIELD])
    n_candidates = int(record.get("n_pool", 0)) - int(record.get("n_heldout", 0))
    if record.get("strategy") == "stratified" and int(record.get("n_fit", 0)) < n_candidates:
        return STRATIFIED_ANCHORS
    return None


def head_meta_label_use(meta: Mapping[str, Any] | None) -> str | None:
    """A head's label use from its metadata (the head file's header): the origin of the captions
    it was trained on, or positives paired by label (which only label captions give)."""
    meta = meta or {}
    origin = (meta.get("inputs") or {}).get("text_origin")
    by_label = (meta.get("training") or {}).get("positives") == "same label"
    if captions_use_labels(origin) or by_label:
        return f"trained on {origin or 'captions paired by label'}"
    return None


def head_label_use(head: Any) -> str | None:
    """The label use of a head or a head ensemble (``.heads``): each head's, once."""
    return _joined(head_meta_label_use(getattr(h, "meta_", None)) for h in getattr(head, "heads", [head]))


def label_use_of(composition: Mapping[str, Any] | None) -> list[str]:
    """Every label use a classification's composition records, one line per piece
    (``"map: anchors chosen by label (stratified)"``); empty where none was used."""
    composition = composition or {}
    out = []
    for piece in ("map", "head"):
        used = _used((composition.get(piece) or {}).get(LABEL_USE_FIELD))
        if used:
            out.append(f"{piece}: {used}")
    return out


def label_use_notes(composition: Mapping[str, Any] | None) -> list[str]:
    """The note a result through a label-using composition carries (none otherwise)."""
    uses = label_use_of(composition)
    if not uses:
        return []
    return ["labels were used, so this is not a zero-shot result: " + "; ".join(uses)]


def record_label_use(plan: Any) -> None:
    """Write the map's and the head's label use into a classification plan's composition and
    add the note. ``plan``: a :class:`~stitchkit.zeroshot.classify_plan.ClassifyPlan` (its
    ``mapper``, ``head``, ``composition`` and ``notes``), after the map and the head are opened.
    """
    composition = plan.composition
    if plan.mapper is not None and "map" in composition:
        # An adaptation (stitch adapt) chains itself with the map (``.maps``); each map of the
        # chain answers for its own anchors, a map on a GPU through its wrapper's attributes.
        chain = getattr(plan.mapper, "maps", None) or [plan.mapper]
        composition["map"][LABEL_USE_FIELD] = _joined(
            map_label_use(getattr(m, "anchors_", None)) for m in chain)
    if plan.head is not None and "head" in composition:
        composition["head"][LABEL_USE_FIELD] = head_label_use(plan.head)
    plan.notes.extend(label_use_notes(composition))
