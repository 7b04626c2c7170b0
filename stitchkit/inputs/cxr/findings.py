"""One set of finding names for every chest X-ray dataset.

The names are torchxrayvision's (`torchxrayvision.datasets.default_pathologies`, version 1.5.7):
NIH's spellings (``Pleural_Thickening``, ``Effusion``), with CheXpert's ``Lung Opacity``,
``Lung Lesion``, ``Fracture`` and ``Enlarged Cardiomediastinum``. Each dataset module maps its
own terms onto these (its ``TERMS``); a term a dataset labels that has no name here keeps a name
of its own in that dataset's ``extra`` findings (``Support Devices``, ``COVID-19``) and is listed
as such by `stitch datasets`.

Why the names and each module's ``TERMS`` are written here rather than read from torchxrayvision:
its 1.5.7 wheel exposes ``default_pathologies`` as its only label constant; every loader's
names and synonyms (``PC_Dataset``'s ``mapping``, ``VinDr_Dataset``'s, ``Openi_Dataset``'s …) are
locals of the loader's ``__init__``, applied with pandas to a label file that the constructor
loads itself, so no function or table of it can be called on a row. Importing it also costs
about 5 s (torch, torchvision, scikit-image, pandas), where reading a dataset spec imports none
of them, and it is an optional extra (``stitchkit[datasets]``): the readers run without it on a
dataset's own label files. Instead, tests/test_cxr_torchxrayvision.py runs those loaders on the
label files the wheel ships and checks that every reader gives their labels wherever its module
says the rule is torchxrayvision's, and differs only where the module says why.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

# torchxrayvision 1.5.7's default_pathologies, in its order.
FINDINGS: tuple[str, ...] = (
    "Atelectasis", "Consolidation", "Infiltration", "Pneumothorax", "Edema", "Emphysema",
    "Fibrosis", "Effusion", "Pneumonia", "Pleural_Thickening", "Cardiomegaly", "Nodule", "Mass",
    "Hernia", "Lung Lesion", "Fracture", "Lung Opacity", "Enlarged Cardiomediastinum",
)
NO_FINDING = "No Finding"  # the label of an image with none of its dataset's findings
SEPARATOR = "|"  # labels join findings with it, as NIH's Finding Labels column does


def harmonise(terms: Iterable[str], table: Mapping[str, str]) -> list[str]:
    """The finding names of a dataset's ``terms`` (case and surrounding space ignored), sorted,
    without repeats; terms the table does not know are left out (they are not findings)."""
    found = {table[key] for key in (t.strip().lower() for t in terms) if key in table}
    return sorted(found)


def term_table(pairs: Mapping[str, str | Iterable[str]]) -> dict[str, str]:
    """``{finding: term or [terms]}`` as a lookup from each lower-cased term to its finding."""
    table: dict[str, str] = {}
    for finding, terms in pairs.items():
        for term in [terms] if isinstance(terms, str) else terms:
            key = term.strip().lower()
            if key in table and table[key] != finding:
                raise ValueError(f"term {term!r} maps to both {table[key]!r} and {finding!r}")
            table[key] = finding
    return table


def label_of(findings: Iterable[str]) -> str:
    """A store label: the findings joined by ``|``, or ``No Finding``."""
    names = sorted(set(findings))
    return SEPARATOR.join(names) if names else NO_FINDING
