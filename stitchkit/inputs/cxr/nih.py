"""NIH ChestX-ray14 as published (Wang et al., CVPR 2017; NIH Clinical Center).

The folder holds ``Data_Entry_2017_v2020.csv`` (one row per image: ``Image Index``, ``Finding
Labels`` pipe-joined, ``Follow-up #``, ``Patient ID``, ``View Position``), the official split
``train_val_list.txt`` / ``test_list.txt`` (image names, split by patient), and the PNGs under
any sub-folders (``images/`` on NIH's box, ``images_001/images/`` … on Kaggle). Rows whose image
is not under the folder (a partial download) are left out. NIH's 14 names are already the
harmonised ones.
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
        findings = harmonise(row["Finding Labels"].split(SEPARATOR), TERMS)
        if not findings and row["Finding Labels"].strip() != NO_FINDING:
            raise UsageError(f"{labels}: image {name} has unknown findings {row['Finding Labels']!r}")
        items.append(record(name, path, label=label_of(findings), patient=row["Patient ID"],
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
    citation="Wang et al., ChestX-ray8, CVPR 2017; NIH Clinical Center")
FORMAT = DATASET.input_format()
