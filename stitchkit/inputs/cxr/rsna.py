"""RSNA Pneumonia Detection Challenge as published on Kaggle (Shih et al., Radiology: AI 2019).

The folder holds ``stage_2_train_labels.csv`` (``patientId,x,y,width,height,Target``: one row per
box, one row with ``Target`` 0 for an image without), ``stage_2_detailed_class_info.csv``
(``patientId,class``: Lung Opacity, No Lung Opacity / Not Normal, Normal), the DICOMs
``stage_2_train_images/PATIENTID.dcm`` and ``stage_2_test_images/`` (whose labels Kaggle never
published: those images are left out, and there is no labelled official split). An image's label
is torchxrayvision 1.5.7's (``RSNA_Pneumonia_Dataset``, checked by
tests/test_cxr_torchxrayvision.py on every patient of the labels its wheel ships): its two names
(its ``pathologies``), ``Target`` 1 is both Pneumonia and Lung Opacity, 0 is No Finding; it takes
a patient's first row, here any row with ``Target`` 1 counts (a patient's rows agree, so the
labels are the same, and a file where they do not cannot hide a box). RSNA's own class goes to
the extra column ``class`` ("" when the folder lacks the file; ``RSNA_Pneumonia_Dataset`` does
not read it). One image per patient: id, group and study are the ``patientId`` (the DICOM's
PatientID is the same).

The view is each DICOM's ViewPosition, which indexing does not open 26,684 files to read: it
comes from a headers file (``headers=PATH``, a CSV with ``PatientID`` and ``ViewPosition``), by
default the copy torchxrayvision ships (``kaggle_stage_2_train_images_dicom_headers.csv.gz``,
every stage 2 training image) when it is installed. An image the headers do not name (or every
image, with ``headers=none`` or without torchxrayvision) has the view ``FRONTAL``: every RSNA
image is a frontal radiograph, so ``views=frontal`` (the default) keeps it and ``views=pa`` or
``views=ap`` leaves it out. ``RSNA_Pneumonia_Dataset`` joins the same headers file for its views,
but keeps PA only by default (``views=["PA"]``) and drops, as view UNKNOWN, an image its headers
do not name; here ``views=`` chooses, and such an image is FRONTAL.
"""

from __future__ import annotations

import csv
import io
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

from ...errors import UsageError
from ..types import Item
from .findings import NO_FINDING, SEPARATOR, term_table
from .layout import (
    CxrDataset,
    DatasetOptions,
    Extras,
    check_columns,
    label_file,
    need,
    read_rows,
    record,
    shipped_file,
    view_name,
)

LABEL_FILE = "stage_2_train_labels.csv"
CLASS_FILE = "stage_2_detailed_class_info.csv"
IMAGES = "stage_2_train_images"
SHIPPED_LABELS = "kaggle_stage_2_train_labels.csv.zip"
SHIPPED_HEADERS = "kaggle_stage_2_train_images_dicom_headers.csv.gz"
TERMS = term_table({"Pneumonia": "pneumonia", "Lung Opacity": "lung opacity"})
POSITIVE = SEPARATOR.join(sorted(TERMS.values()))  # Target 1


def rows_of(path: Path, wanted: tuple[str, ...]) -> Iterator[dict[str, str]]:
    """A CSV's rows; a .zip holding one CSV (torchxrayvision ships the labels so) is read inside."""
    if path.suffix != ".zip":
        yield from read_rows(path, wanted)
        return
    with zipfile.ZipFile(path) as archive, archive.open(archive.namelist()[0]) as raw:
        reader = csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8", newline=""))
        check_columns(path, list(reader.fieldnames or []), wanted)
        yield from reader


def targets(path: Path) -> dict[str, bool]:
    """patientId -> whether any of its rows has Target 1, in the file's order."""
    found: dict[str, bool] = {}
    for row in rows_of(path, ("patientId", "Target")):
        if row["Target"] not in ("0", "1"):
            raise UsageError(f"{path}: patientId {row['patientId']} has Target {row['Target']!r}, not 0 or 1")
        found[row["patientId"]] = found.get(row["patientId"], False) or row["Target"] == "1"
    return found


def headers_file(options: DatasetOptions) -> Path | None:
    """The DICOM headers to take views from, or None (views unknown)."""
    if options.headers == "none":
        return None
    if options.headers in (None, "torchxrayvision"):
        try:
            return shipped_file(SHIPPED_HEADERS)
        except UsageError:
            if options.headers is None:
                return None  # torchxrayvision is optional: views are then FRONTAL
            raise
    path = Path(options.headers).expanduser()
    if not path.is_file():
        raise UsageError(f"rsna: headers={path} is not a file")
    return path


def views(options: DatasetOptions) -> dict[str, str]:
    path = headers_file(options)
    if path is None:
        return {}
    return {row["PatientID"]: view_name(row["ViewPosition"])
            for row in rows_of(path, ("PatientID", "ViewPosition"))}


def index(root: Path, options: DatasetOptions) -> list[Item]:
    labels = label_file(root, LABEL_FILE, DATASET, options, shipped=SHIPPED_LABELS)
    folder = need(root, IMAGES, DATASET)
    names = set(os.listdir(folder))  # one listing, not a stat per image
    view_of = views(options)
    class_of = ({row["patientId"]: row["class"] for row in rows_of(root / CLASS_FILE, ("patientId", "class"))}
                if (root / CLASS_FILE).is_file() else {})
    items = []
    for patient, positive in targets(labels).items():
        if patient + ".dcm" not in names:
            continue
        item = record(patient, folder / f"{patient}.dcm", label=POSITIVE if positive else NO_FINDING,
                      patient=patient, extras=Extras(view_of.get(patient) or "FRONTAL", patient))
        item.extra["class"] = class_of.get(patient, "")
        items.append(item)
    if not items:
        raise UsageError(f"rsna:{root}: none of the images of {labels.name} is in {IMAGES}/: "
                         "put the challenge's DICOMs (PATIENTID.dcm) there")
    return items


DATASET = CxrDataset(
    "rsna", "RSNA Pneumonia Detection Challenge",
    f"{LABEL_FILE}, {CLASS_FILE}, {IMAGES}/PATIENTID.dcm and stage_2_test_images/",
    index, TERMS, options=("views", "labels", "headers"), extras=("class",),
    citation="Shih et al., Radiology: Artificial Intelligence 2019; RSNA Pneumonia Detection Challenge (Kaggle 2018)")
FORMAT = DATASET.input_format()
