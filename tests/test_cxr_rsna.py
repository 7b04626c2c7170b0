"""`rsna:FOLDER` reads the RSNA Pneumonia Detection Challenge as Kaggle publishes it: the real rows
of stage_2_train_labels.csv for its first 24 patientIds (as torchxrayvision's wheel ships it),
their real DICOM headers, and DICOMs written under their names from real NIH radiographs (RSNA's
images are NIH's). Expected values are computed here from those rows."""

from __future__ import annotations

import csv
import gzip
import io
import zipfile
from pathlib import Path

import pytest

from stitchkit.inputs import read_inputs
from stitchkit.store import EmbeddingStore
from tests.cxr_dicom import nih_pixels, real_data, shipped, write_cxr_dicom
from tests.faults.helpers import run_inprocess

N = 24  # the first patientIds of the label file
ABSENT = 4  # the last of them have no image (a partial download)
# stage_2_detailed_class_info.csv rows we know: class Lung Opacity is Target 1 by the challenge's
# definition; these two Target 0 rows are the file's own (its first and fourth patientIds).
KNOWN_CLASS = {"0004cfab-14fd-4e49-80ba-63a80b6bddd6": "No Lung Opacity / Not Normal",
               "003d8fa0-6bf1-40ed-b54c-ac657f8495c5": "Normal"}


@pytest.fixture(scope="module")
def source() -> tuple[list[dict[str, str]], dict[str, str]]:
    """The real label rows of the first N patientIds, and every patientId's real ViewPosition."""
    with zipfile.ZipFile(shipped("kaggle_stage_2_train_labels.csv.zip")) as archive:
        rows = list(csv.DictReader(io.TextIOWrapper(archive.open(archive.namelist()[0]), encoding="utf-8")))
    ids = list(dict.fromkeys(r["patientId"] for r in rows))[:N]
    with gzip.open(shipped("kaggle_stage_2_train_images_dicom_headers.csv.gz"), "rt", newline="") as fh:
        views = {r["PatientID"]: r["ViewPosition"] for r in csv.DictReader(fh)}
    return [r for r in rows if r["patientId"] in ids], views


def _ids(rows: list[dict[str, str]]) -> list[str]:
    return list(dict.fromkeys(r["patientId"] for r in rows))


def _class_of(rows: list[dict[str, str]]) -> dict[str, str]:
    return {**{r["patientId"]: "Lung Opacity" for r in rows if r["Target"] == "1"}, **KNOWN_CLASS}


@pytest.fixture(scope="module")
def layout(source, tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows, views = source
    root = tmp_path_factory.mktemp("rsna")
    with open(root / "stage_2_train_labels.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, ["patientId", "x", "y", "width", "height", "Target"])
        writer.writeheader()
        writer.writerows(rows)
    classes = _class_of(rows)
    with open(root / "stage_2_detailed_class_info.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["patientId", "class"], *([r["patientId"], classes[r["patientId"]]]
                                                             for r in rows if r["patientId"] in classes)])
    present = _ids(rows)[:N - ABSENT]
    for patient, grey in zip(present, nih_pixels(real_data(), len(present)), strict=True):
        write_cxr_dicom(root / "stage_2_train_images" / f"{patient}.dcm", grey, patient=patient,
                        view=views[patient])
    (root / "stage_2_test_images").mkdir()  # Kaggle never published its labels
    return root


def _label(rows: list[dict[str, str]], patient: str) -> str:
    positive = any(r["Target"] == "1" for r in rows if r["patientId"] == patient)
    return "Lung Opacity|Pneumonia" if positive else "No Finding"


def test_index_matches_the_rows(layout: Path, source) -> None:
    rows, views = source
    inputs = read_inputs(f"rsna:{layout}")
    got = {it.id: it for it in inputs.items}
    present = _ids(rows)[:N - ABSENT]
    assert list(got) == present  # the label file's order; images absent from the folder left out
    classes = _class_of(rows)
    for patient in present:
        it = got[patient]
        assert (it.label, it.group, it.extra["study"], it.extra["split"]) == (_label(rows, patient), patient,
                                                                              patient, "")
        assert it.extra["view"] == views[patient] and it.extra["class"] == classes.get(patient, "")
        assert it.path == layout / "stage_2_train_images" / f"{patient}.dcm"
    assert {it.label for it in inputs.items} == {"Lung Opacity|Pneumonia", "No Finding"}
    assert inputs.columns == ["label", "group", "view", "study", "split", "uncertain", "class"]


def test_views_come_from_the_headers(layout: Path, source, tmp_path: Path) -> None:
    rows, views = source
    present = _ids(rows)[:N - ABSENT]
    for view in ("PA", "AP"):
        chosen = {p for p in present if views[p] == view}
        assert 0 < len(chosen) < len(present)
        assert {it.id for it in read_inputs(f"rsna:{layout}?views={view.lower()}").items} == chosen
    # Without headers every image is FRONTAL: kept by views=frontal, left out by views=pa.
    bare = read_inputs(f"rsna:{layout}?headers=none").items
    assert [it.id for it in bare] == present and {it.extra["view"] for it in bare} == {"FRONTAL"}
    with pytest.raises(Exception, match="no image is left after the options"):
        read_inputs(f"rsna:{layout}?headers=none&views=pa")
    # A headers file of the user's own: the images it names get their view, the others FRONTAL.
    mine = tmp_path / "headers.csv"
    named = present[:8]
    mine.write_text("PatientID,ViewPosition\n" + "".join(f"{p},{views[p]}\n" for p in named))
    got = {it.id: it.extra["view"] for it in read_inputs(f"rsna:{layout}?headers={mine}").items}
    assert got == {p: views[p] if p in named else "FRONTAL" for p in present}


def test_shipped_labels_serve_a_folder_of_images(layout: Path, source, tmp_path: Path) -> None:
    rows, _ = source
    images = tmp_path / "rsna"
    images.mkdir()
    (images / "stage_2_train_images").symlink_to(layout / "stage_2_train_images")
    got = {it.id: (it.label, it.extra["class"]) for it in read_inputs(f"rsna:{images}?labels=torchxrayvision").items}
    assert got == {p: (_label(rows, p), "") for p in _ids(rows)[:N - ABSENT]}  # no class file here


@pytest.mark.parametrize(("spec", "message"), [
    ("rsna:{empty}", "stage_2_train_labels.csv is missing"),
    ("rsna:{labels_only}", "stage_2_train_images is missing"),
    ("rsna:{root}?headers={empty}/h.csv", "h.csv is not a file"),
    ("rsna:{root}?split=test", "rsna takes views, labels, headers"),
])
def test_bad_specs_are_one_line(layout: Path, tmp_path: Path, spec: str, message: str) -> None:
    (tmp_path / "labels_only").mkdir()
    (tmp_path / "labels_only" / "stage_2_train_labels.csv").symlink_to(layout / "stage_2_train_labels.csv")
    (tmp_path / "empty").mkdir()
    spec = spec.format(root=layout, empty=tmp_path / "empty", labels_only=tmp_path / "labels_only")
    res = run_inprocess("embed", spec, "-m", "lite0", "-o", tmp_path / "out.h5")
    assert res.code == 2, res.stderr
    assert len(res.message_lines) == 1 and message in res.message_lines[0], res.stderr
    assert not (tmp_path / "out.h5").exists()


def test_embed_writes_labels_groups_views_and_classes(layout: Path, source, tmp_path: Path) -> None:
    rows, views = source
    small = tmp_path / "rsna"
    chosen = _ids(rows)[:8]
    for patient in chosen:
        (small / "stage_2_train_images").mkdir(parents=True, exist_ok=True)
        (small / "stage_2_train_images" / f"{patient}.dcm").symlink_to(
            layout / "stage_2_train_images" / f"{patient}.dcm")
    for name in ("stage_2_train_labels.csv", "stage_2_detailed_class_info.csv"):
        (small / name).symlink_to(layout / name)
    res = run_inprocess("embed", f"rsna:{small}", "-m", "lite0", "-o", tmp_path / "rsna.h5", "--workers", "0")
    assert res.code == 0, res.stderr
    with EmbeddingStore(tmp_path / "rsna.h5") as store:
        got = dict(zip(store.ids, zip(store.labels, store.groups, store.column("view"), store.column("class"),
                                      strict=True), strict=True))
    classes = _class_of(rows)
    assert got == {p: (_label(rows, p), p, views[p], classes.get(p, "")) for p in chosen}
