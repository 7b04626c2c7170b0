"""NIH ChestX-ray14 as published (Wang et al., CVPR 2017; NIH Clinical Center).

The folder holds ``Data_Entry_2017_v2020.csv`` (one row per image: ``Image Index``, ``Finding
Labels`` pipe-joined, ``Follow-up #``, ``Patient ID``, ``View Position``), the official split
``train_val_list.txt`` / ``test_list.txt`` (image names, split by patient), and the PNGs under
any sub-folders (``images/`` on NIH's box, ``images_001/images/`` … on Kaggle). Rows whose image
is not under the folder (a partial download) are left out. NIH's 14 names are already the
harmonised ones.

Against torchxrayvision 1.5.7's ``NIH_Dataset`` (checked by tests/test_cxr_torchxrayvision.py):
the same names (its ``pathologies``: the first 14 of `findings.FINDINGS`), the same labels, the
same patient (``Patient ID``) and view (``View Position``). ``NIH_Dataset`` finds each name as a
substring of ``Finding Labels``; `label` splits the cell instead (the same labels on all
112,120 rows), so that a cell naming none of the fourteen, nor No Finding, is an error rather
than a silent No Finding. It departs where ``NIH_Dataset`` picks a training subset: PA views
only (``views=["PA"]``) and the first image of each patient (``unique_patients=True``). Here
every image is kept and ``views=`` chooses (frontal by default), and the official split, which
``NIH_Dataset`` does not read, is kept in ``split``.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import UsageError
from ..types import Item
from .findings import FINDINGS, NO_FINDING, SEPARATOR, harmonise, label_of
from .layout import (
    CxrDataset,
    DatasetOptions,
    Extras,
    label_file,
    read_rows,
    record,
    view_name,
    walk_files,
)

LABEL_FILE = "Data_Entry_2017_v2020.csv"
SPLIT_FILES = {"train": "train_val_list.txt", "test": "test_list.txt"}
COLUMNS = ("Image Index", "Finding Labels", "Follow-up #", "Patient ID", "View Position")
NIH_FINDINGS = FINDINGS[:14]  # torchxrayvision's names begin with NIH's fourteen
TERMS = {name.lower(): name for name in NIH_FINDINGS}


def official_split(root: Path) -> dict[str, str]:
    """Image name -> train | test, from NIH's two lists; empty when the folder lacks them."""
    split: dict[str, str] = {}
    for name, file in SPLIT_FILES.items():
        if (root / file).is_file():
            split.update((line.strip(), name) for line in (root / file).read_text().splitlines() if line.strip())
    return split


def label(finding_labels: str) -> str | None:
    """The store label of a ``Finding Labels`` cell (``Edema|Effusion``, ``No Finding``); None
    when the cell names none of NIH's fourteen and is not ``No Finding``."""
    findings = harmonise(finding_labels.split(SEPARATOR), TERMS)
    if not findings and finding_labels.strip() != NO_FINDING:
        return None
    return label_of(findings)


def index(root: Path, options: DatasetOptions) -> list[Item]:
    labels = label_file(root, LABEL_FILE, DATASET, options, shipped=LABEL_FILE + ".gz")
    images = walk_files(root, (".png",))
    split = official_split(root)
    if options.split != "all" and not split:
        raise UsageError(f"nih:{root}: split={options.split} needs NIH's {' and '.join(SPLIT_FILES.values())} "
                         "beside the images")
    items = []
    for row in read_rows(labels, COLUMNS):
        name = row["Image Index"]
        path = images.get(name)
        if path is None:
            continue
        found = label(row["Finding Labels"])
        if found is None:
            raise UsageError(f"{labels}: image {name} has unknown findings {row['Finding Labels']!r}")
        items.append(record(name, path, label=found, patient=row["Patient ID"],
                            extras=Extras(view_name(row["View Position"]), Path(name).stem,
                                          split=split.get(name, ""))))
    if not items:
        raise UsageError(f"nih:{root}: none of the {LABEL_FILE} images is under the folder: "
                         "put NIH's PNGs (00000001_000.png, …) in it")
    return items


DATASET = CxrDataset(
    "nih", "NIH ChestX-ray14",
    f"{LABEL_FILE}, train_val_list.txt, test_list.txt and the PNGs (images/ or images_0NN/images/)",
    index, TERMS, splits=("train", "test"), options=("views", "split", "labels"),
    split_from="NIH's train_val_list.txt and test_list.txt beside the images (NIH's box; split by patient)",
    citation="Wang et al., ChestX-ray8, CVPR 2017; NIH Clinical Center")
FORMAT = DATASET.input_format()
