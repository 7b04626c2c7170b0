"""`siim:FOLDER` reads SIIM-ACR Pneumothorax Segmentation as Kaggle publishes it: the real rows of
its first 24 ImageIds (as torchxrayvision's wheel ships stage 2's labels, under stage 1's header)
and DICOMs written from real NIH radiographs (SIIM's images are NIH's) under
dicom-images-train/STUDY/SERIES/IMAGEID.dcm. Expected values are computed here from those rows."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import pytest

from stitchkit.inputs import read_inputs
from stitchkit.store import EmbeddingStore
from tests.cxr_dicom import nih_pixels, real_data, shipped, write_cxr_dicom
from tests.faults.helpers import run_inprocess

N = 24  # the first ImageIds of the label file
ABSENT = 4  # the last of them have no DICOM (a partial download)
STAGE_1 = 12  # train-rle.csv holds the first of them, stage_2_train.csv all


@pytest.fixture(scope="module")
def source() -> tuple[list[str], list[list[str]]]:
    """The shipped file's header and the real rows of its first N ImageIds (all their masks)."""
    with gzip.open(shipped("siim-pneumothorax-train-rle.csv.gz"), "rt", newline="") as fh:
        reader = csv.reader(fh)
        header, rows = next(reader), list(reader)
    ids = list(dict.fromkeys(r[0] for r in rows))[:N]
    return header, [r for r in rows if r[0] in ids]


def _ids(rows: list[list[str]]) -> list[str]:
    return list(dict.fromkeys(r[0] for r in rows))


def _label(rows: list[list[str]], image: str) -> str:
    return "Pneumothorax" if any(r[1].strip() != "-1" for r in rows if r[0] == image) else "No Finding"


def _series(image: str) -> Path:
    """SIIM's folders: the study's and series' UIDs share the image's root (…3.1.2…, …3.1.3…)."""
    return Path(image.replace(".3.1.4.", ".3.1.2."), image.replace(".3.1.4.", ".3.1.3."))


@pytest.fixture(scope="module")
def layout(source, tmp_path_factory: pytest.TempPathFactory) -> Path:
    header, rows = source
    root = tmp_path_factory.mktemp("siim")
    ids = _ids(rows)
    with open(root / "train-rle.csv", "w", newline="") as fh:  # stage 1: header "ImageId, EncodedPixels"
        csv.writer(fh).writerows([header, *(r for r in rows if r[0] in ids[:STAGE_1])])
    with open(root / "stage_2_train.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["ImageId", "EncodedPixels"], *rows])
    present = ids[:N - ABSENT]
    for image, grey in zip(present, nih_pixels(real_data(), len(present)), strict=True):
        write_cxr_dicom(root / "dicom-images-train" / _series(image) / f"{image}.dcm", grey,
                        patient=f"patient-{image[-6:]}", uid=image)
    return root


def test_index_matches_the_rows(layout: Path, source) -> None:
    _, rows = source
    inputs = read_inputs(f"siim:{layout}")  # stage_2_train.csv, read first
    present = _ids(rows)[:N - ABSENT]
    assert [it.id for it in inputs.items] == present  # absent DICOMs left out
    for it in inputs.items:
        assert (it.label, it.group, it.extra["study"], it.extra["view"], it.extra["split"]) == (
            _label(rows, it.id), it.id, it.id, "FRONTAL", "")
        assert it.path == layout / "dicom-images-train" / _series(it.id) / f"{it.id}.dcm"
    assert {it.label for it in inputs.items} == {"Pneumothorax", "No Finding"}
    assert any(sum(r[0] == i for r in rows) > 1 for i in present)  # an image with several masks


def test_stage_1_file_and_options(layout: Path, source, tmp_path: Path) -> None:
    _, rows = source
    stage_1 = tmp_path / "siim"
    stage_1.mkdir()
    for name in ("train-rle.csv", "dicom-images-train"):
        (stage_1 / name).symlink_to(layout / name)
    got = {it.id: it.label for it in read_inputs(f"siim:{stage_1}").items}
    assert got == {i: _label(rows, i) for i in _ids(rows)[:STAGE_1]}
    assert [it.id for it in read_inputs(f"siim:{layout}?views=all").items] == _ids(rows)[:N - ABSENT]
    with pytest.raises(Exception, match="no image is left after the options"):
        read_inputs(f"siim:{layout}?views=pa")  # PA / AP is in the DICOMs only


def test_shipped_labels_serve_a_folder_of_images(layout: Path, source, tmp_path: Path) -> None:
    _, rows = source
    images = tmp_path / "siim"
    images.mkdir()
    (images / "dicom-images-train").symlink_to(layout / "dicom-images-train")
    got = {it.id: it.label for it in read_inputs(f"siim:{images}?labels=torchxrayvision").items}
    assert got == {i: _label(rows, i) for i in _ids(rows)[:N - ABSENT]}


@pytest.mark.parametrize(("spec", "message"), [
    ("siim:{empty}", "train-rle.csv is missing"),
    ("siim:{root}?labels={empty}/rle.csv", "rle.csv is not a file"),
    ("siim:{images_only}", "none of the images of stage_2_train.csv is under the folder"),
    ("siim:{root}?per_study=first", "siim takes views, labels"),
])
def test_bad_specs_are_one_line(layout: Path, tmp_path: Path, spec: str, message: str) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "images_only").mkdir()
    (tmp_path / "images_only" / "stage_2_train.csv").write_text("ImageId,EncodedPixels\n1.2.3,-1\n")
    spec = spec.format(root=layout, empty=tmp_path / "empty", images_only=tmp_path / "images_only")
    res = run_inprocess("embed", spec, "-m", "lite0", "-o", tmp_path / "out.h5")
    assert res.code == 2, res.stderr
    assert len(res.message_lines) == 1 and message in res.message_lines[0], res.stderr
    assert not (tmp_path / "out.h5").exists()


def test_embed_writes_labels_groups_and_views(layout: Path, source, tmp_path: Path) -> None:
    _, rows = source
    chosen = _ids(rows)[:8]
    small = tmp_path / "siim"
    for image in chosen:
        target = small / "dicom-images-train" / _series(image) / f"{image}.dcm"
        target.parent.mkdir(parents=True)
        target.symlink_to(layout / "dicom-images-train" / _series(image) / f"{image}.dcm")
    (small / "stage_2_train.csv").symlink_to(layout / "stage_2_train.csv")
    res = run_inprocess("embed", f"siim:{small}", "-m", "lite0", "-o", tmp_path / "siim.h5", "--workers", "0")
    assert res.code == 0, res.stderr
    with EmbeddingStore(tmp_path / "siim.h5") as store:
        got = dict(zip(store.ids, zip(store.labels, store.groups, store.column("view"), strict=True),
                       strict=True))
    assert got == {i: (_label(rows, i), i, "FRONTAL") for i in chosen}
