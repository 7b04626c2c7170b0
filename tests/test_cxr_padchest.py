"""`padchest:FOLDER` reads PadChest as BIMCV publishes it: real rows of its label file (as
torchxrayvision's wheel ships it: the first 40, the first RNN-labelled ones and a few chosen for
a projection, an empty label or a synonym) and real NIH radiographs saved as 16-bit PNGs (as
PadChest's are) under their ImageIDs in the ImageDir folders. Expected labels follow
torchxrayvision's PC_Dataset rule (a finding is in a row when its name or a synonym is a substring
of ``Labels``), written here from its pathology list and synonym table."""

from __future__ import annotations

import csv
import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stitchkit.inputs import read_inputs
from stitchkit.inputs.cxr import padchest
from stitchkit.store import EmbeddingStore
from tests.cxr_dicom import nih_pixels, real_data, shipped
from tests.faults.helpers import run_inprocess

LABEL_FILE = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"
FIRST, RNN = 40, 4
ABSENT = 2  # of the first rows, images the folder lacks (a partial download)
CHOSEN = {  # further rows, by what makes them worth a test
    "COSTAL": lambda r: r["Projection"] == "COSTAL",
    "an empty label": lambda r: r["Labels"] == "['']",
    "no label": lambda r: r["Labels"] == "nan",
    "consolidation": lambda r: r["Labels"] == "['consolidation', 'pneumonia']",
    "a tube": lambda r: "NSG tube" in r["Labels"],
}
XRV = ["Atelectasis", "Consolidation", "Infiltration", "Pneumothorax", "Edema", "Emphysema", "Fibrosis", "Effusion",
       "Pneumonia", "Pleural_Thickening", "Cardiomegaly", "Nodule", "Mass", "Hernia", "Fracture", "Granuloma",
       "Flattened Diaphragm", "Bronchiectasis", "Aortic Elongation", "Scoliosis", "Hilar Enlargement",
       "Tuberculosis", "Air Trapping", "Costophrenic Angle Blunting", "Aortic Atheromatosis",
       "Hemidiaphragm Elevation", "Support Devices", "Tube'"]
XRV_SYNONYMS = {
    "Infiltration": ["infiltrates", "interstitial pattern", "ground glass pattern", "reticular interstitial pattern",
                     "reticulonodular interstitial pattern", "alveolar pattern", "consolidation", "air bronchogram"],
    "Pleural_Thickening": ["pleural thickening"], "Consolidation": ["air bronchogram"],
    "Hilar Enlargement": ["adenopathy", "pulmonary artery enlargement"], "Support Devices": ["device", "pacemaker"],
    "Tube'": ["stent'"],
}
VIEWS = {"PA": "PA", "L": "LATERAL", "AP": "AP", "AP_horizontal": "AP", "COSTAL": "COSTAL"}


def _xrv_label(labels: str) -> str:
    found = [p.replace("'", "") for p in XRV
             if p.lower() in labels or any(s.lower() in labels for s in XRV_SYNONYMS.get(p, []))]
    return "|".join(sorted(found)) or "No Finding"


def _terms(labels: str) -> str:
    if not labels.startswith("["):  # "nan": the report gave no label
        return ""
    inner = labels.strip("[]")
    return "|".join(sorted({t.strip(" '").lower() for t in inner.split("', '")} - {""}))


@pytest.fixture(scope="module")
def source() -> tuple[list[str], list[dict[str, str]], set[str]]:
    """The header, the chosen real rows, and every distinct Labels cell of the file."""
    with gzip.open(shipped(LABEL_FILE + ".gz"), "rt", newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    chosen = rows[:FIRST] + [r for r in rows if r["MethodLabel"] == "RNN_model"][:RNN]
    chosen += [next(r for r in rows if wanted(r)) for wanted in CHOSEN.values()]
    return list(reader.fieldnames or []), chosen, {r["Labels"] for r in rows}


def _kept(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """The rows a full index keeps: an image in the folder and a label."""
    absent = {r["ImageID"] for r in rows[FIRST - ABSENT:FIRST]}
    return [r for r in rows if r["ImageID"] not in absent and _terms(r["Labels"])]


def _write_layout(root: Path, header: list[str], rows: list[dict[str, str]], flat: bool = False) -> Path:
    with gzip.open(root / (LABEL_FILE + ".gz"), "wt", newline="") as fh:  # BIMCV's .csv.gz
        writer = csv.DictWriter(fh, header)
        writer.writeheader()
        writer.writerows(rows)
    absent = {r["ImageID"] for r in rows[FIRST - ABSENT:FIRST]}
    present = [r for r in rows if r["ImageID"] not in absent]
    for row, grey in zip(present, nih_pixels(real_data(), len(present)), strict=True):
        folder = root if flat else root / row["ImageDir"]
        folder.mkdir(exist_ok=True)
        Image.fromarray(grey.astype(np.uint16) * 257).save(folder / row["ImageID"])  # 16-bit, as published
    return root


@pytest.fixture(scope="module")
def layout(source, tmp_path_factory: pytest.TempPathFactory) -> Path:
    header, rows, _ = source
    return _write_layout(tmp_path_factory.mktemp("padchest"), header, rows)


@pytest.mark.slow
def test_index_matches_the_rows(layout: Path, source) -> None:
    _, rows, _ = source
    inputs = read_inputs(f"padchest:{layout}?views=all")
    kept = _kept(rows)
    assert [it.id for it in inputs.items] == [r["ImageID"] for r in kept]  # no label or image: left out
    for it, row in zip(inputs.items, kept, strict=True):
        assert it.label == _xrv_label(row["Labels"]) and it.extra["terms"] == _terms(row["Labels"])
        assert (it.group, it.extra["study"], it.extra["view"], it.extra["split"]) == (
            row["PatientID"], row["StudyID"], VIEWS[row["Projection"]], "")
        assert it.path == layout / row["ImageDir"] / row["ImageID"]
    labels = {it.id: it.label for it in inputs.items}
    assert labels[next(r["ImageID"] for r in rows if r["Labels"] == "['consolidation', 'pneumonia']")] == \
        "Consolidation|Infiltration|Pneumonia"
    assert inputs.columns == ["label", "group", "view", "study", "split", "uncertain", "terms"]


def test_options_select_rows(layout: Path, source) -> None:
    _, rows, _ = source
    kept = _kept(rows)

    def ids(query: str) -> list[str]:
        return [it.id for it in read_inputs(f"padchest:{layout}?{query}").items]

    assert ids("views=frontal") == [r["ImageID"] for r in kept if r["Projection"] in ("PA", "AP", "AP_horizontal")]
    assert ids("views=lateral") == [r["ImageID"] for r in kept if r["Projection"] == "L"]
    physician = [r["ImageID"] for r in kept if r["MethodLabel"] == "Physician"]
    assert ids("views=all&method=physician") == physician and 0 < len(physician) < len(kept)
    first: dict[str, str] = {}
    for r in kept:
        first.setdefault(r["StudyID"], r["ImageID"])
    assert ids("views=all&per_study=first") == list(first.values()) and len(first) < len(kept)


@pytest.mark.slow
def test_a_flat_folder_and_the_shipped_labels(source, tmp_path: Path) -> None:
    header, rows, _ = source
    flat = tmp_path / "flat"
    flat.mkdir()
    _write_layout(flat, header, rows, flat=True)
    assert [it.id for it in read_inputs(f"padchest:{flat}?views=all").items] == [r["ImageID"] for r in _kept(rows)]
    (flat / (LABEL_FILE + ".gz")).unlink()
    got = {it.id: it.label for it in read_inputs(f"padchest:{flat}?views=all&labels=torchxrayvision").items}
    assert got == {r["ImageID"]: _xrv_label(r["Labels"]) for r in _kept(rows)}


def test_terms_follow_torchxrayvision_over_the_whole_file(source) -> None:
    _, _, cells = source
    checked = 0
    for cell in cells:
        label, terms = padchest.label_and_terms(cell)
        if terms:
            assert label == _xrv_label(cell), cell
            checked += 1
    assert checked > 25_000


@pytest.mark.parametrize(("spec", "message"), [
    ("padchest:{empty}", f"{LABEL_FILE} is missing"),
    ("padchest:{root}?method=rnn", "method='rnn' is not one of all, physician"),
    ("padchest:{root}?split=train", "padchest takes views, per_study, method, labels"),
])
def test_bad_specs_are_one_line(layout: Path, tmp_path: Path, spec: str, message: str) -> None:
    (tmp_path / "empty").mkdir()
    res = run_inprocess("embed", spec.format(root=layout, empty=tmp_path / "empty"), "-m", "lite0",
                        "-o", tmp_path / "out.h5")
    assert res.code == 2, res.stderr
    assert len(res.message_lines) == 1 and message in res.message_lines[0], res.stderr
    assert not (tmp_path / "out.h5").exists()


def test_embed_writes_labels_groups_views_and_terms(layout: Path, source, tmp_path: Path) -> None:
    header, rows, _ = source
    chosen = _kept(rows)[:8]
    small = tmp_path / "padchest"
    small.mkdir()
    with open(small / LABEL_FILE, "w", newline="") as fh:  # the plain .csv this time
        writer = csv.DictWriter(fh, header)
        writer.writeheader()
        writer.writerows(rows)
    for row in chosen:
        (small / row["ImageDir"]).mkdir(exist_ok=True)
        shutil.copy(layout / row["ImageDir"] / row["ImageID"], small / row["ImageDir"])
    res = run_inprocess("embed", f"padchest:{small}?views=all", "-m", "lite0", "-o", tmp_path / "pc.h5",
                        "--workers", "0")
    assert res.code == 0, res.stderr
    with EmbeddingStore(tmp_path / "pc.h5") as store:
        got = dict(zip(store.ids, zip(store.labels, store.groups, store.column("view"), store.column("terms"),
                                      strict=True), strict=True))
    assert got == {r["ImageID"]: (_xrv_label(r["Labels"]), r["PatientID"], VIEWS[r["Projection"]],
                                  _terms(r["Labels"])) for r in chosen}
