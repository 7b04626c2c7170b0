"""`covid:FOLDER` reads the COVID-19 image data collection as published (a clone of
ieee8023/covid-chestxray-dataset): metadata.csv with the collection's column names, built from the
real rows of ../shared/data/covid-notes-384/labels.csv, and their real images in images/.

labels.csv keeps the flat finding names of an earlier release (``Streptococcus``); metadata.csv
now writes the hierarchy (``Pneumonia/Bacterial/Streptococcus``). FINDING maps one to the other as
the collection renamed them (checked against its metadata.csv for the patients 5 to 31)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from stitchkit.inputs import read_inputs
from stitchkit.store import EmbeddingStore
from tests.cxr_dicom import real_data
from tests.faults.helpers import run_inprocess

COVID = "covid-notes-384"
HEADER = ["patientid", "offset", "sex", "age", "finding", "RT_PCR_positive", "survival", "intubated",
          "intubation_present", "went_icu", "in_icu", "needed_supplemental_O2", "extubated", "temperature",
          "pO2_saturation", "leukocyte_count", "neutrophil_count", "lymphocyte_count", "view", "modality", "date",
          "location", "folder", "filename", "doi", "url", "license", "clinical_notes", "other_notes", ""]
FINDING = {"COVID-19": "Pneumonia/Viral/COVID-19", "ARDS": "Pneumonia",
           "Pneumocystis": "Pneumonia/Fungal/Pneumocystis", "Streptococcus": "Pneumonia/Bacterial/Streptococcus",
           "E.Coli": "Pneumonia/Bacterial/E.Coli", "Mycoplasma Bacterial Pneumonia": "Pneumonia/Bacterial/Mycoplasma",
           "Bacterial": "Pneumonia/Bacterial", "No Finding": "No Finding"}
ROWS = [*range(22), 32, 156, 170, 268, 278, 279]  # labels.csv rows: the first, then other findings
ABSENT = 2  # of them, the last have no image in images/ (not yet downloaded)
# A real CT row of metadata.csv (patient 17); its file here is a copy of an X-ray, so that only
# the modality can leave it out.
CT = {"patientid": "17", "offset": "9", "sex": "M", "age": "54", "finding": "Pneumonia/Viral/COVID-19",
      "view": "Axial", "modality": "CT", "date": "January 31, 2020",
      "location": "Myongji Hospital, Goyang, South Korea",
      "folder": "images", "filename": "jkms-35-e79-g001-l-d.jpg", "doi": "10.3346/jkms.2020.35.e79",
      "url": "https://www.jkms.org/DOIx.php?id=10.3346/jkms.2020.35.e79", "license": "CC BY-NC-SA",
      "clinical_notes": "Small consolidation in right upper lobe and ground-glass opacities in both lower lobes "
                        "were observed on high-resolution computed tomography scan"}
VIEWS = {"PA": "PA", "AP": "AP", "AP Supine": "AP", "L": "LATERAL"}


@pytest.fixture(scope="module")
def source() -> list[dict[str, str]]:
    """The chosen real rows, as metadata.csv writes them."""
    with open(real_data() / COVID / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [{"patientid": r["patientid"], "sex": r["sex"], "age": r["age"], "finding": FINDING[r["label"]],
             "view": r["view"], "modality": "X-ray", "folder": "images", "filename": Path(r["path"]).name,
             "doi": r["doi"], "url": r["url"], "license": r["license"], "clinical_notes": r["notes"]}
            for r in (rows[i] for i in ROWS)]


def _label(finding: str) -> str:
    return "No Finding" if finding == "No Finding" else "|".join(sorted(finding.split("/")))


def _present(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return rows[:-ABSENT]


@pytest.fixture(scope="module")
def layout(source, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("covid")
    with open(root / "metadata.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, HEADER)
        writer.writeheader()
        writer.writerows([*source[:3], CT, *source[3:]])
    (root / "images").mkdir()
    for row in _present(source):
        shutil.copy(real_data() / COVID / "images" / row["filename"], root / "images")
    shutil.copy(root / "images" / source[1]["filename"], root / "images" / CT["filename"])
    return root


def test_index_matches_the_rows(layout: Path, source) -> None:
    inputs = read_inputs(f"covid:{layout}?views=all")
    present = _present(source)
    assert [it.id for it in inputs.items] == [r["filename"] for r in present]  # no CT, no absent image
    for it, row in zip(inputs.items, present, strict=True):
        assert (it.label, it.group, it.extra["view"], it.extra["split"]) == (
            _label(row["finding"]), row["patientid"], VIEWS[row["view"]], "")
        assert it.text == (row["clinical_notes"].strip() or None)
        assert it.path == layout / "images" / row["filename"]
    labels = {it.label for it in inputs.items}
    assert {"COVID-19|Pneumonia|Viral", "Bacterial|Pneumonia|Streptococcus", "Pneumonia", "No Finding"} <= labels
    assert inputs.columns == ["label", "group", "text", "view", "study", "split", "uncertain"]
    assert any(not it.text for it in inputs.items) and any(it.text for it in inputs.items)


def test_views_option(layout: Path, source) -> None:
    present = _present(source)
    frontal = [r["filename"] for r in present if r["view"] != "L"]
    assert 0 < len(frontal) < len(present)
    assert [it.id for it in read_inputs(f"covid:{layout}").items] == frontal  # views=frontal by default
    assert [it.id for it in read_inputs(f"covid:{layout}?views=lateral").items] == \
        [r["filename"] for r in present if r["view"] == "L"]


@pytest.mark.parametrize(("spec", "message"), [
    ("covid:{empty}", "metadata.csv is missing"),
    ("covid:{no_images}", "none of the X-rays of metadata.csv is in its folder (images/)"),
    ("covid:{root}?labels=torchxrayvision", "torchxrayvision ships no metadata.csv"),
    ("covid:{root}?split=test", "covid takes views, labels"),
])
def test_bad_specs_are_one_line(layout: Path, tmp_path: Path, spec: str, message: str) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "no_images").mkdir()
    (tmp_path / "no_images" / "metadata.csv").symlink_to(layout / "metadata.csv")
    spec = spec.format(root=layout, empty=tmp_path / "empty", no_images=tmp_path / "no_images")
    res = run_inprocess("embed", spec, "-m", "lite0", "-o", tmp_path / "out.h5")
    assert res.code == 2, res.stderr
    assert len(res.message_lines) == 1 and message in res.message_lines[0], res.stderr
    assert not (tmp_path / "out.h5").exists()


def test_embed_writes_labels_groups_views_and_notes(layout: Path, source, tmp_path: Path) -> None:
    chosen = _present(source)[:4] + _present(source)[-4:]
    small = tmp_path / "covid"
    (small / "images").mkdir(parents=True)
    for row in chosen:
        (small / "images" / row["filename"]).symlink_to(layout / "images" / row["filename"])
    (small / "metadata.csv").symlink_to(layout / "metadata.csv")
    res = run_inprocess("embed", f"covid:{small}?views=all", "-m", "lite0", "-o", tmp_path / "covid.h5",
                        "--workers", "0")
    assert res.code == 0, res.stderr
    with EmbeddingStore(tmp_path / "covid.h5") as store:
        got = dict(zip(store.ids, zip(store.labels, store.groups, store.column("view"), store.texts, strict=True),
                       strict=True))
    assert got == {r["filename"]: (_label(r["finding"]), r["patientid"], VIEWS[r["view"]],
                                   r["clinical_notes"].strip()) for r in chosen}
