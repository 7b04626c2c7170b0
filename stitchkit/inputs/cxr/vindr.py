"""VinDr-CXR as published on PhysioNet (1.0.0; Nguyen et al., Scientific Data 2022), or as the
VinBigData Kaggle competition published it.

PhysioNet's folder holds ``annotations/image_labels_train.csv`` (three rows per image, one per
radiologist: ``image_id``, ``rad_id`` and 28 columns of 0 / 1 — 22 findings from Aortic
enlargement to Rib fracture, then COPD, Lung tumor, Pneumonia, Tuberculosis, Other disease(s),
No finding), ``annotations/image_labels_test.csv`` (one row per image: the consensus of five) and
the DICOMs ``train/IMAGE_ID.dicom`` and ``test/IMAGE_ID.dicom``; the split is the folder, train
(15,000) or test (3,000). Kaggle's holds ``train.csv`` (one row per box: ``image_id, class_name,
class_id, rad_id, x_min, …``; "No finding" for a reader who saw none) with the same ``train/`` and an
unlabelled ``test/``; torchxrayvision 1.5.7 ships that file (``labels=torchxrayvision``). Rows whose
image is in neither folder are left out.

An image has a finding when any of its radiologists labelled it, as torchxrayvision 1.5.7's
``VinDr_Dataset`` reads the three readers (the test set's single consensus row is read the same
way). Names are torchxrayvision's for the 14 findings it reads (its ``pathologies``:
``Nodule/Mass``, ``Pulmonary Fibrosis``, ``Other Lesion``, … kept as it names them; its
``mapping``: Pleural effusion is Effusion, Pleural thickening is Pleural_Thickening).
``VinDr_Dataset`` finds each name as a substring of an image's joined class names, here each
class name is looked up whole: the same labels on every image of Kaggle's file (checked by
tests/test_cxr_torchxrayvision.py on the copy its wheel ships). It departs on PhysioNet's
columns, which it does not read (its docstring: "the extra local labels … are ignored"): those
that name a finding of `findings.FINDINGS` or of torchxrayvision's other loaders are mapped
here (Edema, Emphysema, Pneumonia, Tuberculosis, rib and clavicle fractures as Fracture), so that
PhysioNet's release labels what the Kaggle file cannot. Every positive column, finding or
not (COPD, Lung tumor, Enlarged PA, …), is kept in the extra column ``terms`` (lower case); an
image whose positive columns name no finding (No finding, or COPD alone, …) is No Finding.
VinDr's labels name no patient (the DICOMs' PatientID is anonymised): group and study are the
image_id. Every VinDr-CXR image is a PA radiograph (the dataset's own description): view PA.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
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
    need,
    read_table,
    record,
)

LABEL_FILES = ("annotations/image_labels_train.csv", "annotations/image_labels_test.csv")
KAGGLE_FILE = "train.csv"
SHIPPED = "vinbigdata-train.csv.gz"
SPLITS = ("train", "test")
SUFFIX = ".dicom"
NOT_LABELS = {"image_id", "rad_id"}
POSITIVE = {"1", "1.0"}

TERMS = term_table({
    # torchxrayvision's VinDr_Dataset: its 14 names.
    "Aortic enlargement": "aortic enlargement", "Atelectasis": "atelectasis", "Calcification": "calcification",
    "Cardiomegaly": "cardiomegaly", "Consolidation": "consolidation", "ILD": "ild",
    "Infiltration": "infiltration", "Lung Opacity": "lung opacity", "Nodule/Mass": "nodule/mass",
    "Other Lesion": "other lesion", "Effusion": "pleural effusion", "Pleural_Thickening": "pleural thickening",
    "Pneumothorax": "pneumothorax", "Pulmonary Fibrosis": "pulmonary fibrosis",
    # PhysioNet's further columns that name a harmonised finding (Tuberculosis: PadChest's loader).
    "Edema": "edema", "Emphysema": "emphysema", "Pneumonia": "pneumonia", "Tuberculosis": "tuberculosis",
    "Fracture": ["rib fracture", "clavicle fracture"],
})


def positive_terms(path: Path) -> Iterator[tuple[str, list[str]]]:
    """(image_id, the terms one row labels positive), from either published form."""
    rows = read_table(path)
    header = next(rows, [])
    check_columns(path, header, ("image_id",))
    at = header.index("image_id")
    if "class_name" in header:  # Kaggle's boxes: one finding per row
        name = header.index("class_name")
        yield from ((row[at], [row[name].strip().lower()]) for row in rows)
        return
    labels = [(i, col.strip().lower()) for i, col in enumerate(header) if col.strip().lower() not in NOT_LABELS]
    if not labels:
        raise UsageError(f"{path} has no label columns: is it VinDr-CXR's image_labels_*.csv?")
    for row in rows:
        yield row[at], [term for i, term in labels if row[i].strip() in POSITIVE]


def label_files(root: Path, options: DatasetOptions) -> list[Path]:
    """PhysioNet's two files, else Kaggle's train.csv, else one line naming what is missing."""
    if options.labels is None:
        physionet = [root / name for name in LABEL_FILES if (root / name).is_file()]
        if physionet or not (root / KAGGLE_FILE).is_file():
            return physionet or [need(root, LABEL_FILES[0], DATASET, f"add it, or Kaggle's {KAGGLE_FILE}, or use the "
                                      f"copy torchxrayvision ships: vindr:{root}?labels=torchxrayvision")]
        return [root / KAGGLE_FILE]
    return [label_file(root, KAGGLE_FILE, DATASET, options, shipped=SHIPPED)]


def image_files(root: Path) -> dict[str, tuple[Path, str]]:
    """image_id -> (its DICOM, train | test): one listing of each split's folder."""
    found: dict[str, tuple[Path, str]] = {}
    for split in SPLITS:
        if (root / split).is_dir():
            found.update((name[:-len(SUFFIX)], (root / split / name, split))
                         for name in os.listdir(root / split) if name.endswith(SUFFIX))
    if not any((root / split).is_dir() for split in SPLITS):
        need(root, "train", DATASET, "the folder of the DICOMs (train/IMAGE_ID.dicom)")
    return found


def index(root: Path, options: DatasetOptions) -> list[Item]:
    files = label_files(root, options)
    images = image_files(root)
    terms: dict[str, set[str]] = {}  # any reader's positive labels, in the files' order
    for path in files:
        for image, positive in positive_terms(path):
            terms.setdefault(image, set()).update(positive)
    items = []
    for image, found in terms.items():
        if image not in images or not found:
            continue
        path, split = images[image]
        item = record(image, path, label=label_of(harmonise(found, TERMS)), patient=image,
                      extras=Extras("PA", image, split=split))
        item.extra["terms"] = SEPARATOR.join(sorted(found))
        items.append(item)
    if not items:
        raise UsageError(f"vindr:{root}: none of the images of {', '.join(p.name for p in files)} is in "
                         "train/ or test/: put VinDr-CXR's DICOMs (IMAGE_ID.dicom) there")
    return items


DATASET = CxrDataset(
    "vindr", "VinDr-CXR",
    "annotations/image_labels_train.csv, annotations/image_labels_test.csv (PhysioNet) or train.csv "
    "(Kaggle), and train/IMAGE_ID.dicom, test/IMAGE_ID.dicom",
    index, TERMS, splits=SPLITS, options=("split", "labels"), extras=("terms",),
    split_from="the folder an image is in: train/ or test/",
    citation="Nguyen et al., VinDr-CXR, Scientific Data 2022; PhysioNet doi 10.13026/3akn-b287")
FORMAT = DATASET.input_format()
