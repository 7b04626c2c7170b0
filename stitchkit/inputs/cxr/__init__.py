"""Chest X-ray datasets read as published: one module per dataset, one spec per dataset.

``nih:/data/nih``, ``chexpert:/data/CheXpert-v1.0-small?split=valid`` … are input specs that
`stitch embed` (and everything that reads inputs) accepts; each module defines ``DATASET``
(a `layout.CxrDataset`) and registers ``FORMAT`` through `stitchkit.inputs.registry.FORMATS`.
Findings are harmonised to torchxrayvision's names (`findings`). `stitch datasets` lists them.
"""

from __future__ import annotations

import importlib
from functools import cache

from ...errors import UsageError
from .layout import CxrDataset

# One line per dataset: a module of this package defining DATASET (and FORMAT, in the registry).
DATASETS: tuple[str, ...] = ("nih",)


@cache
def datasets() -> tuple[CxrDataset, ...]:
    return tuple(importlib.import_module(f"{__package__}.{name}").DATASET for name in DATASETS)


def dataset(name: str) -> CxrDataset:
    for found in datasets():
        if found.name == name:
            return found
    raise UsageError(f"unknown dataset {name!r}: known are {', '.join(d.name for d in datasets())}")
