"""PadChest as published (Bustos et al., Medical Image Analysis 2020; BIMCV, Hospital San Juan, Alicante).

The folder holds ``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv`` (or ``.csv.gz``; one
row per image: ``ImageID``, ``ImageDir``, ``StudyID``, ``PatientID``, ``Projection`` — PA, AP,
AP_horizontal, L, COSTAL, EXCLUDE, UNK —, ``MethodLabel`` — Physician or RNN_model — and
``Labels``, a Python list of PadChest's terms such as ``['pneumonia', 'infiltrates']``) and the
PNGs, in the numbered folders of BIMCV's zips (``0/``, ``1/``, …) or flat: they are found by name
with one walk, and rows whose image is not under the folder are left out.

Terms are harmonised as torchxrayvision 1.5.7's ``PC_Dataset`` does (checked by
tests/test_cxr_torchxrayvision.py on every row of the label file its wheel ships): its 28 names
(its ``pathologies``), each matching every PadChest term that contains it or one of its synonyms
(its ``mapping``: ``pleural effusion`` and ``pericardial effusion`` are both Effusion;
``consolidation`` and ``air bronchogram`` are both Consolidation and Infiltration; terms ending in
``tube`` or ``stent`` are Tube). `TERMS` is that rule written out over the 193 terms the published
file uses (``PC_Dataset`` runs it as substring tests over the ``Labels`` column of the table it
loads, so there is nothing of it to call on one cell; written out, it is also the term table
`stitch datasets padchest` shows); a term it does not name is not a finding. The raw terms stay
in the extra column ``terms`` (lower case, sorted, ``|``-joined) for benchmarks over PadChest's
own findings (the head / medium / tail groups of CARZero's "PadChest20"). ``normal`` and terms
that name none of the findings give ``No Finding``. ``method=physician`` keeps the images a
physician labelled (24 %), as many PadChest papers do. PadChest has no official split.

Rows are chosen as ``PC_Dataset`` does in one thing only: a row whose ``Labels`` is ``nan`` (the
report gave no label) is left out. It departs on the rest, which picks a training subset there:
rows whose ``Labels`` is ``['']`` are left out here too (``PC_Dataset`` keeps them as having no
finding, which the report did not say); every view is kept as written, ``AP_horizontal`` as AP
(``PC_Dataset`` keeps PA only by default and names it ``AP Supine``), and ``views=`` chooses;
every image of a patient is kept (not its first only: ``unique_patients``), and so are patients
under ten (its age filter, which also drops every row without ``PatientBirth``) and the 21
images its ``missing`` list drops as absent or unreadable: here only images not under the folder
are left out, and an unreadable one goes to the store's table of failed inputs when embedded.
"""

from __future__ import annotations

import re
from pathlib import Path

from ...errors import UsageError
from ..types import Item
from .findings import SEPARATOR, harmonise, label_of, term_table
from .layout import (
    CxrDataset,
    DatasetOptions,
    Extras,
    check_columns,
    label_file,
    paused_gc,
    read_table,
    record,
    view_name,
    walk_files,
)

LABEL_FILE = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"
COLUMNS = ("ImageID", "StudyID", "PatientID", "Projection", "MethodLabel", "Labels")
QUOTED = re.compile(r"'([^']*)'")  # the terms of a Labels cell (no PadChest term holds a quote)

# torchxrayvision's PC_Dataset names and the published terms its substring rule gives each.
TERMS = term_table({
    "Air Trapping": ["air trapping"],
    "Aortic Atheromatosis": ["aortic atheromatosis"],
    "Aortic Elongation": ["aortic elongation", "ascendent aortic elongation", "descendent aortic elongation",
                          "supra aortic elongation"],
    "Atelectasis": ["atelectasis", "atelectasis basal", "laminar atelectasis", "lobar atelectasis",
                    "round atelectasis", "segmental atelectasis", "total atelectasis"],
    "Bronchiectasis": ["bronchiectasis"],
    "Cardiomegaly": ["cardiomegaly"],
    "Consolidation": ["consolidation"],
    "Costophrenic Angle Blunting": ["costophrenic angle blunting"],
    "Edema": ["pulmonary edema"],
    "Effusion": ["loculated fissural effusion", "loculated pleural effusion", "pericardial effusion",
                 "pleural effusion"],
    "Emphysema": ["emphysema", "subcutaneous emphysema"],
    "Fibrosis": ["pulmonary fibrosis"],
    "Flattened Diaphragm": ["flattened diaphragm"],
    "Fracture": ["callus rib fracture", "clavicle fracture", "fracture", "humeral fracture", "rib fracture",
                 "vertebral fracture"],
    "Granuloma": ["calcified granuloma", "granuloma"],
    "Hemidiaphragm Elevation": ["hemidiaphragm elevation"],
    "Hernia": ["hiatal hernia"],
    "Hilar Enlargement": ["adenopathy", "calcified adenopathy", "calcified mediastinal adenopathy",
                          "hilar enlargement", "pulmonary artery enlargement", "vascular hilar enlargement"],
    "Infiltration": ["air bronchogram", "alveolar pattern", "ground glass pattern", "infiltrates",
                     "interstitial pattern", "reticular interstitial pattern",
                     "reticulonodular interstitial pattern"],
    "Mass": ["breast mass", "mass", "mediastinal mass", "pleural mass", "pulmonary mass", "soft tissue mass"],
    "Nodule": ["multiple nodules", "nodule", "pseudonodule"],
    "Pleural_Thickening": ["apical pleural thickening", "calcified pleural thickening", "pleural thickening"],
    "Pneumonia": ["atypical pneumonia", "pneumonia"],
    "Pneumothorax": ["hydropneumothorax", "pneumothorax"],
    "Scoliosis": ["scoliosis"],
    "Support Devices": ["dual chamber device", "electrical device", "pacemaker", "single chamber device"],
    "Tube": ["chest drain tube", "double j stent", "endotracheal tube", "gastrostomy tube", "nephrostomy tube",
             "nsg tube", "tracheostomy tube", "ventriculoperitoneal drain tube"],
    "Tuberculosis": ["tuberculosis", "tuberculosis sequelae"],
})
# The two terms torchxrayvision counts under a second name as well (a term table holds one).
ALSO = term_table({"Infiltration": ["consolidation"], "Consolidation": ["air bronchogram"]})


def terms_of(labels: str) -> list[str]:
    """PadChest's terms in a ``Labels`` cell, lower case, sorted, without blanks or repeats."""
    return sorted({t.strip().lower() for t in QUOTED.findall(labels)} - {""})


def label_and_terms(labels: str) -> tuple[str, str]:
    """The store label and the ``terms`` column of a ``Labels`` cell ("" when it has no term)."""
    terms = terms_of(labels)
    findings = {*harmonise(terms, TERMS), *harmonise(terms, ALSO)}
    return (label_of(findings), SEPARATOR.join(terms)) if terms else ("", "")


def index(root: Path, options: DatasetOptions) -> list[Item]:
    gzipped = root / (LABEL_FILE + ".gz")  # BIMCV ships the CSV gzipped too
    labels = gzipped if options.labels is None and gzipped.is_file() else label_file(
        root, LABEL_FILE, DATASET, options, shipped=LABEL_FILE + ".gz")
    rows = read_table(labels)
    header = next(rows, [])
    check_columns(labels, header, COLUMNS)
    at = {name: header.index(name) for name in COLUMNS}
    images = walk_files(root, (".png",))
    items, parsed = [], {}
    with paused_gc():
        for row in rows:
            name = row[at["ImageID"]]
            path = images.get(name)
            if path is None or (options.method == "physician" and row[at["MethodLabel"]] != "Physician"):
                continue
            cell = row[at["Labels"]]
            if cell not in parsed:  # 160,861 rows hold 28,809 distinct cells
                parsed[cell] = label_and_terms(cell)
            label, terms = parsed[cell]
            if not terms:
                continue
            item = record(name, path, label=label, patient=row[at["PatientID"]],
                          extras=Extras(view_name(row[at["Projection"]]), row[at["StudyID"]]))
            item.extra["terms"] = terms
            items.append(item)
    if not items:
        raise UsageError(f"padchest:{root}: none of the labelled images of {labels.name} is under the folder: "
                         "put PadChest's PNGs (in 0/, 1/, … or flat) in it")
    return items


DATASET = CxrDataset(
    "padchest", "PadChest",
    f"{LABEL_FILE} (or .csv.gz) and the PNGs (0/, 1/, … as unzipped, or flat)",
    index, TERMS, options=("views", "per_study", "method", "labels"), extras=("terms",),
    citation="Bustos et al., PadChest, Medical Image Analysis 2020; BIMCV")
FORMAT = DATASET.input_format()
