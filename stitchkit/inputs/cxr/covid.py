"""The COVID-19 image data collection as published (Cohen et al., arXiv 2006.11988;
github.com/ieee8023/covid-chestxray-dataset).

The folder (a clone of the repository) holds ``metadata.csv`` (one row per image: ``patientid``,
``offset``, ``sex``, ``age``, ``finding``, …, ``view``, ``modality``, ``date``, ``location``,
``folder``, ``filename``, ``doi``, ``url``, ``license``, ``clinical_notes``, ``other_notes``) and the
images in ``images/`` (the ``folder`` column; CT volumes sit in ``volumes/``). Only X-rays are
read (``modality`` X-ray); rows whose finding is still ``todo`` or ``Unknown`` are left out, as
torchxrayvision 1.5.7's ``COVID19_Dataset`` leaves them, and so are rows whose image is not in its
folder. The finding is a path through the collection's hierarchy
(``Pneumonia/Viral/COVID-19``): as torchxrayvision does, each part is a finding of the image
(Pneumonia, Viral and COVID-19 here), Pneumonia and Tuberculosis under their harmonised names and
the others (COVID-19, Viral, Bacterial, Streptococcus, …) as extra names, a part not in `TERMS`
as written; ``No Finding`` is No Finding. The clinical notes are the text beside each image. Ids
are the file names, groups the patientid; the collection has no studies (study: the name's stem)
and no official split.

Against ``COVID19_Dataset`` (checked by tests/test_cxr_torchxrayvision.py on a metadata.csv of
the collection's real rows): its names are the parts the file's findings hold (its
``pathologies``, built from the file it loads; `TERMS` writes out those of the published
collection, for `stitch datasets covid`), each found as a substring of the finding, where here
the finding is split into its parts: the same labels. It departs in three things. ``No
Finding`` is one of its names; here it is the label of an image with none. It keeps PA and AP
views by default, which is how it leaves out CT slices (Axial, Coronal); here ``modality`` does
that and ``views=`` chooses. A file listed twice is two items there, one image here.
"""

from __future__ import annotations

import os
from pathlib import Path

from ...errors import UsageError
from ..types import Item
from .findings import NO_FINDING, label_of, term_table
from .layout import (
    CxrDataset,
    DatasetOptions,
    Extras,
    label_file,
    read_rows,
    record,
    view_name,
)

LABEL_FILE = "metadata.csv"
COLUMNS = ("patientid", "finding", "view", "modality", "filename")
LEFT_OUT = {"todo", "unknown", ""}  # findings not yet given
HIERARCHY = "/"

# The parts of the published findings; torchxrayvision names each as written.
TERMS = term_table({
    "Pneumonia": "pneumonia", "Tuberculosis": "tuberculosis",
    **{part: part for part in (
        "Viral", "Bacterial", "Fungal", "Lipoid", "Aspiration", "COVID-19", "SARS", "MERS-CoV", "Influenza",
        "Varicella", "Herpes", "Streptococcus", "Klebsiella", "Mycoplasma", "Legionella", "Nocardia", "E.Coli",
        "Chlamydophila", "Staphylococcus", "MRSA", "Pneumocystis", "Aspergillosis")},
})


def findings_of(finding: str) -> list[str]:
    """The finding names of one ``finding`` cell: its parts, harmonised where `TERMS` knows them."""
    parts = [p.strip() for p in finding.split(HIERARCHY) if p.strip()]
    return [TERMS.get(p.lower(), p) for p in parts if p.lower() != NO_FINDING.lower()]


def listing(folder: Path, cache: dict[Path, set[str]]) -> set[str]:
    """The file names in ``folder`` (listed once; an absent folder has none)."""
    if folder not in cache:
        cache[folder] = set(os.listdir(folder)) if folder.is_dir() else set()
    return cache[folder]


def index(root: Path, options: DatasetOptions) -> list[Item]:
    if options.labels == "torchxrayvision":
        raise UsageError("covid: torchxrayvision ships no metadata.csv of this collection: "
                         "give labels=PATH, or the clone's own")
    labels = label_file(root, LABEL_FILE, DATASET, options)
    folders: dict[Path, set[str]] = {}
    items, seen = [], set()
    for row in read_rows(labels, COLUMNS):
        name, finding = row["filename"], row["finding"].strip()
        if row["modality"].strip() != "X-ray" or finding.lower() in LEFT_OUT or name in seen:
            continue
        folder = root / (row.get("folder") or "images")
        if name not in listing(folder, folders):
            continue
        seen.add(name)
        notes = (row.get("clinical_notes") or "").strip()
        items.append(record(name, folder / name, label=label_of(findings_of(finding)), patient=row["patientid"],
                            extras=Extras(view_name(row["view"]), Path(name).stem), text=notes or None))
    if not items:
        raise UsageError(f"covid:{root}: none of the X-rays of {labels.name} is in its folder (images/): "
                         "clone github.com/ieee8023/covid-chestxray-dataset and give its folder")
    return items


DATASET = CxrDataset(
    "covid", "COVID-19 image data collection",
    f"{LABEL_FILE} and images/ (a clone of github.com/ieee8023/covid-chestxray-dataset)",
    index, TERMS, options=("views", "labels"), texts=True,
    citation="Cohen et al., COVID-19 Image Data Collection: Prospective Predictions Are the Future, "
             "arXiv 2006.11988")
FORMAT = DATASET.input_format()
