"""CheXpert as published (Irvin et al., AAAI 2019; Stanford ML Group): CheXpert-v1.0 and
CheXpert-v1.0-small.

The folder (``CheXpert-v1.0-small/``) holds ``train.csv`` and ``valid.csv`` (one row per image:
``Path``, ``Sex``, ``Age``, ``Frontal/Lateral``, ``AP/PA``, ``No Finding`` and 13 observations
valued 1.0 / 0.0 / -1.0 (uncertain) / blank (not mentioned)), the JPEGs under ``train/`` and
``valid/``, and, from the later test release, ``test_labels.csv`` (or ``test.csv``: ``Path`` and
the 14 columns, no -1, no view columns) with ``test/``. ``Path`` values begin with the folder's
published name (``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg``; the test
file's with ``test/``): they are resolved against the folder itself when it holds a sub-folder of
that name, else against the folder's parent, whatever the folder is called now.

Ids are the paths without that first part (``train/patient00001/study1/view1_frontal.jpg``: the
same in both versions); the patient is ``patient00001``, the study ``patient00001/study1``; the
official split is the file a row comes from (train, valid, test). ``labels=`` (a CSV, or
``torchxrayvision``: the copy of train.csv its wheel ships) stands in for train.csv; its rows
whose JPEG is not under the folder are left out (a partial download), found by one walk of the
folder, never a stat per row. The test file has no view columns: its views come from the file
names, ``LATERAL`` or ``FRONTAL`` (AP or PA is not published for it).

Labels against torchxrayvision 1.5.7's ``CheX_Dataset`` (checked by
tests/test_cxr_torchxrayvision.py on the train.csv its wheel ships): the same 13 observations
(its ``pathologies``) with "Pleural Effusion" named ``Effusion``; ``Pleural Other`` and ``Support
Devices`` keep their names; where ``No Finding`` is 1 every observation but Support Devices is
absent; 1.0 is present and 0.0 absent; the patient is the ``patient00001`` of ``Path``. It
departs on the two values ``CheX_Dataset`` turns into NaN: -1.0 (uncertain) follows
``uncertain=`` (`labels_of`: the U-Ignore, U-Ones and U-Zeros policies papers choose between),
and blank (not mentioned) is absent, as blank-as-negative training reads it, so that a row with
no positive observation is ``No Finding``. It also departs where ``CheX_Dataset`` picks a
training subset: PA views only and the first image of each patient (``views=["PA"]``,
``unique_patients=True``); here every image is kept and ``views=`` and ``per_study=`` choose.
``CheX_Dataset`` reads one file and raises on the test file (its patient ids need ``train`` or
``valid`` in the file's path); here every split is read. MIMIC-CXR's CheXpert labels use the
same columns and rule (`mimic` imports them from here).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from operator import itemgetter
from pathlib import Path

from ...errors import UsageError
from ..types import Item
from .findings import label_of, term_table
from .layout import (
    CxrDataset,
    DatasetOptions,
    Extras,
    check_columns,
    label_file,
    need,
    paused_gc,
    read_table,
    record,
    view_name,
)

SPLIT_FILES = {"train": ("train.csv",), "valid": ("valid.csv",), "test": ("test_labels.csv", "test.csv")}
SHIPPED = "chexpert_train.csv.gz"  # train.csv of CheXpert-v1.0-small, as torchxrayvision ships it
NO_FINDING = "No Finding"
OBSERVATIONS = (  # CheXpert's 13 observation columns, in its order (CheX_Dataset.pathologies, unsorted)
    "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema", "Consolidation",
    "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture",
    "Support Devices",
)
TERMS = term_table({**{name: name for name in OBSERVATIONS if name != "Pleural Effusion"},
                    "Effusion": "Pleural Effusion"})
KEPT_BY_NO_FINDING = frozenset({"Support Devices"})  # not zeroed by No Finding = 1 (torchxrayvision)
POSITIVE, UNCERTAIN = frozenset({"1.0", "1"}), frozenset({"-1.0", "-1"})
SPLIT_NAMES = tuple(SPLIT_FILES)


def labels_of(header: Sequence[str], uncertain: str) -> Callable[[Sequence[str]], tuple[str, str]]:
    """A function from a label row (a list, in ``header``'s order) to (label, uncertain findings),
    the ``uncertain=`` rule applied: ignore keeps -1 findings in the second, positive moves them
    into the label, negative drops them. Rows repeat few patterns: each is worked out once."""
    findings = [TERMS[name.lower()] for name in OBSERVATIONS if name in header]
    values_of = itemgetter(header.index(NO_FINDING), *(header.index(n) for n in OBSERVATIONS if n in header))
    known: dict[tuple[str, ...], tuple[str, str]] = {}

    def pattern(values: tuple[str, ...]) -> tuple[str, str]:
        healthy = values[0].strip() in POSITIVE
        positive, unsure = [], []
        for value, finding in zip(values[1:], findings, strict=True):
            if healthy and finding not in KEPT_BY_NO_FINDING:
                continue
            value = value.strip()
            if value in POSITIVE or (value in UNCERTAIN and uncertain == "positive"):
                positive.append(finding)
            elif value in UNCERTAIN and uncertain == "ignore":
                unsure.append(finding)
        return label_of(positive), "|".join(sorted(set(unsure)))

    def label(row: Sequence[str]) -> tuple[str, str]:
        values = values_of(row)
        found = known.get(values)
        if found is None:
            found = known[values] = pattern(values)
        return found

    return label


def label_files(root: Path, options: DatasetOptions) -> list[tuple[str, Path, bool]]:
    """(split, file, whether it is the folder's own) for each label file; one line when none is
    there or the asked split's file is missing."""
    found: list[tuple[str, Path, bool]] = []
    if options.labels:
        found.append(("train", label_file(root, "train.csv", DATASET, options, shipped=SHIPPED), False))
    for split, names in SPLIT_FILES.items():
        own = next((root / n for n in names if (root / n).is_file()), None)
        if own is not None and not (split == "train" and options.labels):
            found.append((split, own, True))
    if options.split != "all" and options.split not in {s for s, _, _ in found}:
        need(root, SPLIT_FILES[options.split][0], DATASET, f"split={options.split} reads it")
    if not found:
        need(root, "train.csv", DATASET, f"give valid.csv or {SPLIT_FILES['test'][0]} at least, or the copy "
             f"torchxrayvision ships: chexpert:{root}?labels=torchxrayvision")
    return found


def image_base(root: Path, first_path: str) -> Path:
    """Where ``Path`` values resolve, without their first part: the folder, or its sub-folder of
    the published name (``Path`` resolved against the folder itself)."""
    top = first_path.split("/", 1)[0]
    return root / top if top not in SPLIT_NAMES and (root / top).is_dir() else root


def present_images(base: Path) -> set[str]:
    """The JPEGs under ``base``, relative to it, found by one walk."""
    found = set()
    for folder, _, names in os.walk(base):
        rel = os.path.relpath(folder, base)
        found.update(f"{rel}/{n}".removeprefix("./") for n in names if n.endswith(".jpg"))
    return found


def views_of(header: Sequence[str]) -> Callable[[Sequence[str], str], str]:
    """A function from a row and its id to LATERAL, AP, PA, or FRONTAL where a frontal image's
    AP/PA is not published (the test set, which has no view columns: the file name tells)."""
    if "Frontal/Lateral" not in header:
        return lambda row, rel: "LATERAL" if "_lateral" in rel.rsplit("/", 1)[-1] else "FRONTAL"
    at = header.index("Frontal/Lateral"), header.index("AP/PA") if "AP/PA" in header else None
    known: dict[tuple[str, str], str] = {}

    def view(row: Sequence[str], rel: str) -> str:
        key = row[at[0]].strip(), row[at[1]] if at[1] is not None else ""
        if key not in known:
            known[key] = "LATERAL" if key[0] == "Lateral" else view_name(key[1]) or "FRONTAL"
        return known[key]

    return view


def read_split(root: Path, split: str, path: Path, own: bool, options: DatasetOptions) -> list[Item]:
    table = read_table(path)
    header = next(table, [])
    check_columns(path, header, ("Path", NO_FINDING, *OBSERVATIONS))
    at, width = header.index("Path"), len(header)
    labels, view = labels_of(header, options.uncertain), views_of(header)
    base, present, items = None, None, []
    for row in table:
        if len(row) < width:  # a short row's missing cells are blank, as csv.DictReader reads them
            row += [""] * (width - len(row))
        parts = row[at].strip().split("/")
        if len(parts) < 4:
            raise UsageError(f"{path}: Path {row[at]!r} is not CheXpert's "
                             "[CheXpert-v1.0-small/]train/patient00001/study1/view1_frontal.jpg")
        if base is None:  # the first row tells where the paths resolve
            base = image_base(root, row[at])
            present = None if own else present_images(base)
        rel = "/".join(parts if parts[0] in SPLIT_NAMES else parts[1:])
        if present is not None and rel not in present:
            continue
        label, unsure = labels(row)
        items.append(record(rel, Path(f"{base}/{rel}"), label=label, patient=parts[-3],
                            extras=Extras(view(row, rel), f"{parts[-3]}/{parts[-2]}", split=split,
                                          uncertain=unsure)))
    return items


def index(root: Path, options: DatasetOptions) -> list[Item]:
    items: list[Item] = []
    with paused_gc():
        for split, path, own in label_files(root, options):
            if options.split in ("all", split):
                items += read_split(root, split, path, own, options)
    if not items:
        raise UsageError(f"chexpert:{root}: none of the label files' images is under the folder: put "
                         "CheXpert's train/ and valid/ folders of JPEGs in it")
    return items


DATASET = CxrDataset(
    "chexpert", "CheXpert",
    "train.csv, valid.csv (test_labels.csv) and the JPEGs under train/, valid/ (test/)",
    index, TERMS, splits=SPLIT_NAMES, options=("views", "per_study", "split", "uncertain", "labels"),
    split_from="the label file a row comes from: train.csv, valid.csv, and test_labels.csv (or test.csv) "
               "with test/ from the later test release",
    citation="Irvin et al., CheXpert, AAAI 2019; Stanford ML Group")
FORMAT = DATASET.input_format()

