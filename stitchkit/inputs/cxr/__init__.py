"""Chest X-ray datasets read as published: one module per dataset, one spec per dataset.

``nih:/data/nih``, ``chexpert:/data/CheXpert-v1.0-small?split=valid`` … are input specs that
`stitch embed` (and everything that reads inputs) accepts; each module defines ``DATASET``
(a `layout.CxrDataset`) and registers ``FORMAT`` through `stitchkit.inputs.registry.FORMATS`.
Findings are harmonised to torchxrayvision's names (`findings`). `stitch datasets` lists them.
"""

from __future__ import annotations

import importlib
from collections import Counter
from functools import cache
from typing import Any

from ...errors import UsageError
from ..types import Inputs
from .findings import FINDINGS, SEPARATOR
from .layout import CHOICES, CxrDataset, DatasetOptions

# One line per dataset: a module of this package defining DATASET (and FORMAT, in the registry).
DATASETS: tuple[str, ...] = ("nih", "chexpert", "mimic", "openi", "padchest", "rsna", "siim", "vindr", "covid",)


@cache
def datasets() -> tuple[CxrDataset, ...]:
    return tuple(importlib.import_module(f"{__package__}.{name}").DATASET for name in DATASETS)


def dataset(name: str) -> CxrDataset:
    for found in datasets():
        if found.name == name:
            return found
    raise UsageError(f"unknown dataset {name!r}: known are {', '.join(d.name for d in datasets())}")


def dataset_card(found: CxrDataset) -> dict[str, Any]:
    """What `stitch datasets NAME` shows: layout, options and the term table."""
    terms: dict[str, list[str]] = {}
    for term, finding in sorted(found.terms.items()):
        terms.setdefault(finding, []).append(term)
    return {
        "name": found.name, "title": found.title, "layout": found.layout, "citation": found.citation,
        "spec": f"{found.name}:/data/{found.name}", "splits": list(found.splits), "texts": found.texts,
        "split_from": found.split_from, "split_note": split_note(found),
        "options": {o: {"values": list(CHOICES[o][0] or (("all", *found.splits) if o == "split" else ())),
                        "default": getattr(DatasetOptions(), o), "meaning": CHOICES[o][1]}
                    for o in found.options},
        "findings": list(found.findings),
        "extra_findings": [f for f in found.findings if f not in FINDINGS],
        "terms": terms,
    }


#: What to do where a data set has no official split: hold out patients yourself.
OWN_SPLIT = ("hold out patients yourself: an id file of their images (one id per line; a patient's images all "
             "on one side, the store's groups column is the patient) for --ids or a benchmark suite's ids:")


def split_note(found: CxrDataset, missing: bool = False) -> str:
    """Where ``found``'s official split comes from and what to do without it: ``missing``
    says the folder lacked it (rows read without a split)."""
    if not found.splits:
        return f"{found.title} publishes no official split; {OWN_SPLIT}"
    if missing:
        return (f"the official split comes from {found.split_from}, and the folder lacks it: put it there and "
                f"read again, or {OWN_SPLIT}")
    return f"the official split ({'/'.join(found.splits)}) comes from {found.split_from}"


def summarise(inputs: Inputs) -> dict[str, Any]:
    """Counts of what a dataset spec read: images, patients, views, splits, findings."""
    items = inputs.items
    findings: Counter[str] = Counter()
    uncertain: Counter[str] = Counter()
    for it in items:
        findings.update(p for p in (it.label or "").split(SEPARATOR) if p)
        uncertain.update(p for p in it.extra.get("uncertain", "").split(SEPARATOR) if p)
    return {
        "source": inputs.source, "modality": inputs.modality, "rows": len(items),
        "patients": len({it.group for it in items}),
        "studies": len({it.extra.get("study") for it in items}),
        "views": dict(Counter(it.extra.get("view") or "?" for it in items).most_common()),
        "splits": dict(Counter(it.extra.get("split") or "none" for it in items).most_common()),
        "with_text": sum(1 for it in items if it.text),
        "findings": dict(findings.most_common()),
        "uncertain": dict(uncertain.most_common()),
        **_split_of(inputs.source, items),
    }


def _split_of(source: str, items: list) -> dict[str, str]:
    """``split_note`` for a dataset spec's rows where some have no official split."""
    name = source.partition(":")[0]
    if not any(not it.extra.get("split") for it in items) or name not in DATASETS:
        return {}
    return {"split_note": split_note(dataset(name), missing=True)}


def manifest_rows(inputs: Inputs) -> list[dict[str, str]]:
    """What a spec read, as the rows of a CSV manifest that `stitch embed` reads back (its
    view, study, split and uncertain columns serve ``--where``)."""
    texts = "text" in inputs.columns
    return [{"id": it.id, **({"path": str(it.path)} if it.path is not None else {}),
             **({"text": it.text or ""} if texts or it.path is None else {}),
             "label": it.label or "", "group": it.group or "", **it.extra} for it in inputs.items]
