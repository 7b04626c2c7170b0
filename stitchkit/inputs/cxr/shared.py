"""Data sets that share images, and models tuned on a data set they are tested on: the one
table stitchkit reads to warn that two figures are not independent (`stitch benchmark`).

Keyed by the dataset registry names (``DATASETS``: the ``nih:``, ``rsna:`` … specs of `stitch
embed`), which a store made by a dataset reader records as the scheme of its ``input``
attribute (``rsna:/data/rsna``). A store read from a manifest or a folder records no data set:
nothing is said of it.

Sources:

* RSNA Pneumonia Detection Challenge: its 30,000 frontal radiographs were selected from NIH
  ChestX-ray14 (Shih et al., "Augmenting the National Institutes of Health Chest Radiograph
  Dataset with Expert Annotations of Possible Pneumonia", Radiology: Artificial Intelligence
  2019); 8,196 of them are images of ChestX-ray14's official test list (``test_list.txt``), so
  RSNA's images also sit on both sides of NIH's train / test split.
* SIIM-ACR Pneumothorax Segmentation (Kaggle 2019): its radiographs are ChestX-ray14's (the
  challenge's data description; ``stitchkit.inputs.cxr.siim``).
* CARZero (Lai et al., "CARZero: Cross-Attention Alignment for Radiology Zero-Shot
  Classification", CVPR 2024): its text encoder was tuned on PadChest's reports, and PadChest
  is one of its zero-shot test sets.

Read for stitchkit's issue 37 (2026-12-06). The ids of a shared image differ between the data
sets (RSNA's patientId, NIH's image name), so the row-level overlap check
(:mod:`stitchkit.fitted_on`) cannot see it: this table is what says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class SharedImages:
    """``dataset``'s images were drawn from ``source`` (both registry names)."""

    dataset: str
    source: str
    what: str  # one line: how many, from which split


@dataclass(frozen=True)
class TunedOn:
    """A model (a word of its spec, case ignored) trained on ``dataset``'s data."""

    model: str
    dataset: str
    what: str


SHARED_IMAGES: tuple[SharedImages, ...] = (
    SharedImages("rsna", "nih", "RSNA Pneumonia's 30,000 images were drawn from ChestX-ray14, 8,196 of them "
                 "from NIH's official test list (Shih et al. 2019)"),
    SharedImages("siim", "nih", "SIIM-ACR Pneumothorax's images are ChestX-ray14's (SIIM-ACR 2019)"),
)
TUNED_ON: tuple[TunedOn, ...] = (
    TunedOn("carzero", "padchest", "CARZero's text encoder was tuned on PadChest reports, one of its zero-shot "
            "test sets (Lai et al. 2024)"),
)


def dataset_of(input_spec: str | None) -> str | None:
    """The registry name of the data set a store was read from: the scheme of its ``input``
    attribute (``rsna:/data/rsna?views=all`` -> ``rsna``); None for any other input."""
    from . import DATASETS

    scheme, sep, _ = str(input_spec or "").partition(":")
    return scheme if sep and scheme in DATASETS else None


def shared_between(a: str, b: str) -> SharedImages | None:
    """The entry saying data sets ``a`` and ``b`` share images (either way round), or None."""
    for found in SHARED_IMAGES:
        if {found.dataset, found.source} == {a, b}:
            return found
    return None


def shared_data(scored: Mapping[str, str | None], fitted: Mapping[str, Iterable[str]],
                models: Iterable[str] = ()) -> list[dict[str, object]]:
    """What a run should say of the data it scored, one note each (``line``, ``kind``, the
    ``datasets`` named by the table, the ``entries`` concerned):

    * ``scored together``: two scored entries whose data sets share images;
    * ``fitted on``: a piece (a head, a map: ``fitted``, its label -> the data sets it was
      fitted on) fitted on a data set that shares images with a scored entry's;
    * ``model tuned on``: a model of the run (``models``: the specs it used) tuned on a scored
      entry's data set.

    ``scored``: each entry's name -> its data set's registry name (None: not known)."""
    notes: list[dict[str, object]] = []
    names = [n for n, d in scored.items() if d]
    for found in SHARED_IMAGES:
        mine = [n for n in names if scored[n] == found.dataset]
        theirs = [n for n in names if scored[n] == found.source]
        if mine and theirs:
            notes.append({"kind": "scored together", "datasets": [found.dataset, found.source],
                          "entries": [*mine, *theirs],
                          "line": f"{', '.join(mine)} ({found.dataset}) and {', '.join(theirs)} ({found.source}) "
                                  f"share images: {found.what}; their figures are not independent"})
    for piece, sets in fitted.items():
        for fitted_set in dict.fromkeys(sets):
            for n in names:
                found = shared_between(scored[n], fitted_set) if scored[n] != fitted_set else None
                if found is not None:
                    notes.append({"kind": "fitted on", "datasets": [scored[n], fitted_set], "entries": [n],
                                  "line": f"{piece} was fitted on {fitted_set}, which shares images with {n} "
                                          f"({scored[n]}): {found.what}; some of {n}'s images may have trained it "
                                          "(their ids differ, so the overlap check cannot count them)"})
    used = [m.lower() for m in models if m]
    for tuned in TUNED_ON:
        hit = [n for n in names if scored[n] == tuned.dataset]
        if hit and any(tuned.model in m for m in used):
            notes.append({"kind": "model tuned on", "datasets": [tuned.dataset], "entries": hit,
                          "line": f"{', '.join(hit)} ({tuned.dataset}): {tuned.what}; not zero-shot for it"})
    return notes
