"""SIIM-ACR Pneumothorax Segmentation as published on Kaggle (2019; images from NIH ChestX-ray14).

The folder holds the masks as run-length codes, ``train-rle.csv`` (stage 1: ``ImageId,
EncodedPixels``) or ``stage_2_train.csv`` (stage 2: the same columns over stage 1's training and
test images; read first when both are there), one row per mask and ``-1`` for an image without
pneumothorax, and the DICOMs ``IMAGEID.dcm``, nested as ``dicom-images-train/STUDY/SERIES/``: they
are found by name with one walk, and rows whose image is not under the folder are left out.
torchxrayvision 1.5.7 ships stage 2's labels (``siim-pneumothorax-train-rle.csv.gz``:
``labels=torchxrayvision``) and labels each image as its ``SIIM_Pneumothorax_Dataset`` does
(checked by tests/test_cxr_torchxrayvision.py on that file): its one name, Pneumothorax when a
mask is given, else No Finding. It departs in two things: ``SIIM_Pneumothorax_Dataset`` has one
item per row, so an image with several masks (624 in that file) is several items, where here it
is one image, with a mask when any of its rows gives one; and it compares the code to ``-1`` as
written, under stage 1's header `` EncodedPixels`` only, where here the header and the code are
read stripped, so both stages' files read alike.

The codes name no patient and no view. Group and study are the ImageId: the DICOMs were
de-identified image by image, and reading 12,047 headers is not indexing's job (SIIM's images
come from NIH ChestX-ray14, where a patient has several: a split by group here is a split by
image). Every image is a frontal radiograph whose PA / AP is only in its DICOM: the view is
``FRONTAL``, kept by ``views=frontal`` (the default). There is no labelled official split.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import UsageError
from ..types import Item
from .findings import NO_FINDING, term_table
from .layout import (
    CxrDataset,
    DatasetOptions,
    Extras,
    check_columns,
    label_file,
    read_table,
    record,
    walk_files,
)

LABEL_FILE = "train-rle.csv"
STAGE_2 = "stage_2_train.csv"
SHIPPED = "siim-pneumothorax-train-rle.csv.gz"
TERMS = term_table({"Pneumothorax": "pneumothorax"})
NO_MASK = "-1"


def masked(path: Path) -> dict[str, bool]:
    """ImageId -> whether any of its rows gives a mask, in the file's order."""
    rows = read_table(path)
    header = [name.strip() for name in next(rows, [])]  # stage 1 writes " EncodedPixels"
    check_columns(path, header, ("ImageId", "EncodedPixels"))
    at, code = header.index("ImageId"), header.index("EncodedPixels")
    found: dict[str, bool] = {}
    for row in rows:
        found[row[at]] = found.get(row[at], False) or row[code].strip() != NO_MASK
    return found


def index(root: Path, options: DatasetOptions) -> list[Item]:
    labels = (root / STAGE_2 if options.labels is None and (root / STAGE_2).is_file()
              else label_file(root, LABEL_FILE, DATASET, options, shipped=SHIPPED))
    images = walk_files(root, (".dcm",))
    items = []
    for image, positive in masked(labels).items():
        path = images.get(image + ".dcm")
        if path is None:
            continue
        items.append(record(image, path, label="Pneumothorax" if positive else NO_FINDING, patient=image,
                            extras=Extras("FRONTAL", image)))
    if not items:
        raise UsageError(f"siim:{root}: none of the images of {labels.name} is under the folder: "
                         "put the challenge's DICOMs (dicom-images-train/…/IMAGEID.dcm) in it")
    return items


DATASET = CxrDataset(
    "siim", "SIIM-ACR Pneumothorax Segmentation",
    f"{LABEL_FILE} or {STAGE_2} and the DICOMs (dicom-images-train/STUDY/SERIES/IMAGEID.dcm)",
    index, TERMS, options=("views", "labels"),
    citation="SIIM-ACR Pneumothorax Segmentation (Kaggle 2019); Wang et al., ChestX-ray8, CVPR 2017")
FORMAT = DATASET.input_format()
