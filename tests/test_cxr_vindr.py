"""`vindr:FOLDER` reads VinDr-CXR as PhysioNet and as Kaggle publish it, from the real rows of the
first 22 images of Kaggle's train.csv (three radiologists each; torchxrayvision's wheel ships the
file) and 16-bit DICOMs written from real NIH radiographs under their image_ids.

PhysioNet's image_labels_*.csv are credentialed: their rows are rebuilt here from the same
readers' Kaggle rows (a 1 for each finding a reader boxed, 0 in every other column, including
the columns Kaggle lacks: COPD, Lung tumor, Pneumonia, …). The test file's one row per image is
its first reader's. Expected labels follow torchxrayvision's VinDr_Dataset rule, written here."""

from __future__ import annotations

import csv
import gzip
from collections import defaultdict
from pathlib import Path

import pytest

from stitchkit.inputs import read_inputs
from stitchkit.store import EmbeddingStore
from tests.cxr_dicom import DIGITAL_XRAY, nih_pixels, real_data, shipped, write_cxr_dicom
from tests.faults.helpers import run_inprocess

TRAIN, TEST = 16, 6  # the first images of Kaggle's file, and the next ones as PhysioNet's test set
ABSENT = 2  # training images without a DICOM (a partial download)
COLUMNS = ["Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Clavicle fracture",
           "Consolidation", "Edema", "Emphysema", "Enlarged PA", "ILD", "Infiltration", "Lung Opacity",
           "Lung cavity", "Lung cyst", "Mediastinal shift", "Nodule/Mass", "Pleural effusion",
           "Pleural thickening", "Pneumothorax", "Pulmonary fibrosis", "Rib fracture", "Other lesion", "COPD",
           "Lung tumor", "Pneumonia", "Tuberculosis", "Other diseases", "No finding"]
# torchxrayvision's VinDr_Dataset: its names, and the class names it counts under another.
XRV_NAMES = ["Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Consolidation", "ILD",
             "Infiltration", "Lung Opacity", "Nodule/Mass", "Other Lesion", "Effusion", "Pleural_Thickening",
             "Pneumothorax", "Pulmonary Fibrosis"]
XRV_SYNONYMS = {"Pleural_Thickening": "Pleural thickening", "Effusion": "Pleural effusion"}


@pytest.fixture(scope="module")
def source() -> tuple[list[str], list[list[str]]]:
    with gzip.open(shipped("vinbigdata-train.csv.gz"), "rt", newline="") as fh:
        reader = csv.reader(fh)
        header, rows = next(reader), list(reader)
    ids = list(dict.fromkeys(r[0] for r in rows))[:TRAIN + TEST]
    return header, [r for r in rows if r[0] in ids]


def _readers(rows: list[list[str]]) -> dict[str, dict[str, set[str]]]:
    """image_id -> rad_id -> the class names that reader gave."""
    found: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for image, name, _, rad, *_ in rows:
        found[image][rad].add(name)
    return found


def _label(names: set[str]) -> str:
    lower = {n.lower() for n in names}
    found = [x for x in XRV_NAMES if x.lower() in lower or XRV_SYNONYMS.get(x, "").lower() in lower]
    return "|".join(sorted(found)) or "No Finding"


def _expected(rows: list[list[str]], split: dict[str, str]) -> dict[str, tuple[str, str, str]]:
    """image_id -> (label, split, terms) for the images a layout holds."""
    readers = _readers(rows)
    out = {}
    for image, where in split.items():
        names = set().union(*readers[image].values()) if where == "train" else next(iter(readers[image].values()))
        out[image] = (_label(names), where, "|".join(sorted(n.lower() for n in names)))
    return out


@pytest.fixture(scope="module")
def layout(source, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """PhysioNet's layout; the images it holds and their split."""
    _, rows = source
    root = tmp_path_factory.mktemp("vindr")
    readers = _readers(rows)
    ids = list(readers)
    (root / "annotations").mkdir()
    with open(root / "annotations" / "image_labels_train.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["image_id", "rad_id", *COLUMNS], *(
            [image, rad, *(int(c in names) for c in COLUMNS)]
            for image in ids[:TRAIN] for rad, names in readers[image].items())])
    test_columns = [c if c != "Other diseases" else "Other disease" for c in COLUMNS]  # as published
    with open(root / "annotations" / "image_labels_test.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["image_id", *test_columns], *(
            [image, *(int(c in next(iter(readers[image].values()))) for c in COLUMNS)] for image in ids[TRAIN:])])
    split = {**{i: "train" for i in ids[:TRAIN - ABSENT]}, **{i: "test" for i in ids[TRAIN:]}}
    for (image, where), grey in zip(split.items(), nih_pixels(real_data(), len(split)), strict=True):
        write_cxr_dicom(root / where / f"{image}.dicom", grey, patient=f"anon-{image[:8]}", bits=12,
                        modality="DX", sop_class=DIGITAL_XRAY)
    return root, split


def test_index_matches_the_rows(layout, source) -> None:
    root, split = layout
    _, rows = source
    inputs = read_inputs(f"vindr:{root}")
    expected = _expected(rows, split)
    assert [it.id for it in inputs.items] == list(expected)
    for it in inputs.items:
        assert (it.label, it.extra["split"], it.extra["terms"]) == expected[it.id]
        assert (it.group, it.extra["study"], it.extra["view"]) == (it.id, it.id, "PA")
        assert it.path == root / it.extra["split"] / f"{it.id}.dicom"
    assert len({it.label for it in inputs.items}) > 5 and "No Finding" in {it.label for it in inputs.items}
    assert inputs.columns[-1] == "terms"


def test_split_option(layout) -> None:
    root, split = layout
    for name in ("train", "test"):
        assert [it.id for it in read_inputs(f"vindr:{root}?split={name}").items] == \
            [i for i, s in split.items() if s == name]


def test_kaggle_layout_and_shipped_labels(layout, source, tmp_path: Path) -> None:
    root, split = layout
    header, rows = source
    kaggle = tmp_path / "kaggle"
    kaggle.mkdir()
    (kaggle / "train").symlink_to(root / "train")
    with open(kaggle / "train.csv", "w", newline="") as fh:  # the competition's own file
        csv.writer(fh).writerows([header, *rows])
    train = {i: s for i, s in split.items() if s == "train"}
    expected = _expected(rows, train)
    got = {it.id: (it.label, it.extra["split"], it.extra["terms"]) for it in read_inputs(f"vindr:{kaggle}").items}
    assert got == expected
    (kaggle / "train.csv").unlink()
    shipped_labels = read_inputs(f"vindr:{kaggle}?labels=torchxrayvision").items
    assert {it.id: (it.label, it.extra["split"], it.extra["terms"]) for it in shipped_labels} == expected


@pytest.mark.parametrize(("spec", "message"), [
    ("vindr:{empty}", "annotations/image_labels_train.csv is missing: add it, or Kaggle's train.csv"),
    ("vindr:{labels_only}", "train is missing"),
    ("vindr:{root}?split=valid", "split='valid' is not one of all, train, test"),
    ("vindr:{root}?views=pa", "vindr takes split, labels"),
])
def test_bad_specs_are_one_line(layout, tmp_path: Path, spec: str, message: str) -> None:
    root, _ = layout
    (tmp_path / "empty").mkdir()
    (tmp_path / "labels_only").mkdir()
    (tmp_path / "labels_only" / "annotations").symlink_to(root / "annotations")
    spec = spec.format(root=root, empty=tmp_path / "empty", labels_only=tmp_path / "labels_only")
    res = run_inprocess("embed", spec, "-m", "lite0", "-o", tmp_path / "out.h5")
    assert res.code == 2, res.stderr
    assert len(res.message_lines) == 1 and message in res.message_lines[0], res.stderr
    assert not (tmp_path / "out.h5").exists()


def test_embed_writes_labels_splits_and_terms(layout, source, tmp_path: Path) -> None:
    root, split = layout
    _, rows = source
    chosen = [i for i, s in split.items() if s == "train"][:5] + [i for i, s in split.items() if s == "test"][:3]
    small = tmp_path / "vindr"
    for image in chosen:
        (small / split[image]).mkdir(parents=True, exist_ok=True)
        (small / split[image] / f"{image}.dicom").symlink_to(root / split[image] / f"{image}.dicom")
    (small / "annotations").symlink_to(root / "annotations")
    res = run_inprocess("embed", f"vindr:{small}", "-m", "lite0", "-o", tmp_path / "vindr.h5", "--workers", "0")
    assert res.code == 0, res.stderr
    with EmbeddingStore(tmp_path / "vindr.h5") as store:
        got = dict(zip(store.ids, zip(store.labels, store.column("split"), store.column("terms"), strict=True),
                       strict=True))
        assert list(store.groups) == list(store.ids)
    assert got == {i: e for i, e in _expected(rows, split).items() if i in chosen}
