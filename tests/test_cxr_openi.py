"""`openi:FOLDER` reads Open-I (IU X-ray) as NLM publishes it: the real NLMCXR_reports.tgz (or a
few of its real XML files as ecgen-radiology/), the views of torchxrayvision's real
nlmcxr_dicom_metadata.csv, and NLMCXR_png/ built from real NIH PNGs under real IU image names
(the IU images are not here). Expected labels are worked out here from the XML with
torchxrayvision's rule (its names as substrings of a MeSH term) and the exceptions openi.py
documents; `iu_reports` is held against the parser it had before openi.py took over."""

from __future__ import annotations

import csv
import gzip
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from stitchkit.datasets import iu_reports
from stitchkit.errors import UsageError
from stitchkit.inputs import read_inputs
from stitchkit.inputs.cxr.layout import shipped_file
from stitchkit.store import EmbeddingStore
from tests.faults.helpers import run_inprocess

REPORTS = "iu-xray-reports/NLMCXR_reports.tgz"
# torchxrayvision 1.5.7 Openi_Dataset: its names, synonyms and renames.
TVX = ["Atelectasis", "Fibrosis", "Pneumonia", "Effusion", "Lesion", "Cardiomegaly", "Calcified Granuloma",
       "Fracture", "Edema", "Granuloma", "Emphysema", "Hernia", "Mass", "Nodule", "Opacity", "Infiltration",
       "Pleural_Thickening", "Pneumothorax"]
SYNONYMS = {"Pleural_Thickening": ["pleural thickening"], "Infiltration": ["infiltrate"], "Atelectasis": ["atelectases"]}
RENAMED = {"Opacity": "Lung Opacity", "Lesion": "Lung Lesion"}
NOT_LUNG = {"pericardial effusion", "subcutaneous emphysema", "subcutaneous  emphysema", "mediastinal emphysema",
            "cystic fibrosis", "expansile bone lesions"}  # substrings torchxrayvision would count
VIEWS = {"PA": "PA", "AP": "AP", "LL": "LATERAL", "LATERAL": "LATERAL", "RL": "LATERAL", "LARGE LATERAL": "LATERAL"}


def _xml_reports(tgz: Path) -> dict[str, ET.Element]:
    with tarfile.open(tgz) as archive:
        return {Path(m.name).stem: ET.parse(archive.extractfile(m)).getroot()
                for m in archive.getmembers() if m.name.endswith(".xml")}


def _label(root: ET.Element) -> str | None:
    """The expected label of a report; None when it was not coded (No Indexing)."""
    terms = [(m.text or "").lower().split("/") for m in root.iter("major")]
    if all(t[0].strip() in ("no indexing", "") for t in terms):
        return None
    found = set()
    for parts in terms:
        term = "pleural thickening" if parts[:2] == ["thickening", "pleura"] else parts[0].strip()
        if term in NOT_LUNG:
            continue
        found |= {RENAMED.get(n, n) for n in TVX if any(s in term for s in [n.lower(), *SYNONYMS.get(n, [])])}
        found |= {"Consolidation"} if term == "consolidation" else set()
    if "Calcified Granuloma" in found:
        found.add("Granuloma")
    return "|".join(sorted(found)) or "No Finding"


def _text(root: ET.Element, part: str = "report") -> str:
    sections = {el.get("Label"): (el.text or "").strip() for el in root.iter("AbstractText")}
    return " ".join(s for s in [sections.get(w) for w in (("FINDINGS", "IMPRESSION") if part == "report"
                                                           else (part.upper(),))] if s)


@pytest.fixture(scope="module")
def reports(data: Path) -> dict[str, ET.Element]:
    return _xml_reports(data / REPORTS)


@pytest.fixture(scope="module")
def metadata() -> tuple[list[str], dict[str, list[str]]]:
    """torchxrayvision's nlmcxr_dicom_metadata.csv: header, rows by image id."""
    with gzip.open(shipped_file("nlmcxr_dicom_metadata.csv.gz"), "rt", newline="") as fh:
        rows = csv.reader(fh)
        header = next(rows)
        return header, {r[0]: r for r in rows}


def _view(metadata: tuple[list[str], dict[str, list[str]]], image: str) -> str:
    header, rows = metadata
    return VIEWS.get(rows[image][header.index("View Position")], "") if image in rows else ""


@pytest.mark.slow
def test_iu_reports_are_what_they_were(data: Path) -> None:
    def before(tgz: Path) -> list[dict[str, str]]:  # stitchkit.datasets.iu_reports until openi.py
        rows = []
        with tarfile.open(tgz, "r:gz") as archive:
            for member in sorted(archive.getmembers(), key=lambda m: m.name):
                if not member.name.endswith(".xml"):
                    continue
                root = ET.parse(archive.extractfile(member)).getroot()
                sections = {el.get("Label"): (el.text or "").strip() for el in root.iter("AbstractText")}
                text = " ".join(s for s in (sections.get("FINDINGS"), sections.get("IMPRESSION")) if s)
                if not text:
                    continue
                majors = sorted({(m.text or "").split("/")[0].strip() for m in root.iter("major")} - {""})
                rows.append({"id": f"iu-{Path(member.name).stem}", "text": text, "label": "|".join(majors)})
        return rows

    assert iu_reports(data / REPORTS) == before(data / REPORTS)


@pytest.mark.slow
def test_side_text_reads_the_reports_alone(data: Path, reports: dict[str, ET.Element], metadata, tmp_path: Path) -> None:
    (tmp_path / "NLMCXR_reports.tgz").symlink_to(data / REPORTS)  # no images, no metadata of its own
    inputs = read_inputs(f"openi:{tmp_path}?side=text&views=all")
    want = {root.find("uId").get("id"): root for root in reports.values()
            if _label(root) is not None and _text(root)}
    assert inputs.modality == "text" and {it.id for it in inputs.items} == set(want)
    labels = set()
    for it in inputs.items:
        root = want[it.id]
        images = [el.get("id") for el in root.iter("parentImage")]
        assert it.path is None and it.text == _text(root) and it.label == _label(root)
        assert it.group == it.id == it.extra["study"] and it.extra["split"] == ""
        assert it.extra["view"] == (_view(metadata, images[0]) if images else "")
        labels |= set(it.label.split("|"))
    assert {"Calcified Granuloma", "Granuloma", "Pleural_Thickening", "Consolidation", "No Finding"} <= labels
    # views=frontal (the default): the reports with a frontal image, under its view.
    frontal = {it.id: it.extra["view"] for it in read_inputs(f"openi:{tmp_path}?side=text").items}
    expect = {}
    for uid, root in want.items():
        views = [_view(metadata, el.get("id")) for el in root.iter("parentImage")]
        if "PA" in views or "AP" in views:
            expect[uid] = next(v for v in views if v in ("PA", "AP"))
    assert frontal == expect


@pytest.fixture(scope="module")
def layout(data: Path, reports: dict[str, ET.Element], metadata, tmp_path_factory: pytest.TempPathFactory
           ) -> tuple[Path, list[str], list[str], str]:
    """ecgen-radiology/ with a few real reports, NLMCXR_png/ with real NIH PNGs under their
    images' names, and the metadata rows of those images but one (its view unknown here)."""
    root = tmp_path_factory.mktemp("openi")
    picked, wanted = [], [("PA", "LATERAL"), ("PA", "LATERAL"), ("AP", "LATERAL"), ("PA", "LATERAL", "LATERAL")]
    for name, xml in sorted(reports.items(), key=lambda kv: int(kv[0])):
        views = tuple(_view(metadata, el.get("id")) for el in xml.iter("parentImage"))
        if wanted and views == wanted[0] and _label(xml) not in (None, "No Finding") and _text(xml, "findings"):
            picked.append(name)
            wanted.pop(0)
    assert not wanted
    dropped = next(reports[picked[0]].iter("parentImage")).get("id")  # a PA image
    picked.sort()  # the reader's order: the files' names
    (root / "ecgen-radiology").mkdir()
    with tarfile.open(data / REPORTS) as archive:
        for name in picked:
            (root / "ecgen-radiology" / f"{name}.xml").write_bytes(
                archive.extractfile(f"ecgen-radiology/{name}.xml").read())
    images = [el.get("id") for name in picked for el in reports[name].iter("parentImage")]
    nih = sorted((data / "nih-pneumonia-256" / "images").rglob("*.png"))
    (root / "NLMCXR_png").mkdir()
    for image, png in zip(images, nih, strict=False):
        (root / "NLMCXR_png" / f"{image}.png").symlink_to(png)
    header, rows = metadata
    with open(root / "nlmcxr_dicom_metadata.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([header, *(rows[i] for i in images if i != dropped)])  # its view: unknown
    return root, picked, images, dropped


def test_images_match_their_reports(layout, reports: dict[str, ET.Element], metadata) -> None:
    root, picked, images, dropped = layout
    inputs = read_inputs(f"openi:{root}?views=all")
    got = {it.id: it for it in inputs.items}
    assert list(got) == images and inputs.modality == "image"
    for name in picked:
        xml = reports[name]
        for el in xml.iter("parentImage"):
            it = got[el.get("id")]
            assert it.path == root / "NLMCXR_png" / f"{it.id}.png"
            assert it.label == _label(xml) and it.text == _text(xml)
            assert it.group == it.extra["study"] == xml.find("uId").get("id")
            assert it.extra["view"] == ("" if it.id == dropped else _view(metadata, it.id))  # the folder's copy


def test_options_select_rows(layout, reports: dict[str, ET.Element], metadata) -> None:
    root, picked, images, dropped = layout
    report_of = {el.get("id"): reports[n] for n in picked for el in reports[n].iter("parentImage")}

    def ids(query: str) -> list[str]:
        return [it.id for it in read_inputs(f"openi:{root}?{query}").items]

    frontal = [i for i in images if i != dropped and _view(metadata, i) in ("PA", "AP")]
    assert ids("") == frontal and len(frontal) == len(picked) - 1
    assert ids("views=lateral") == [i for i in images if _view(metadata, i) == "LATERAL"]
    assert ids("views=ap") == [i for i in images if _view(metadata, i) == "AP"] != []
    first: dict[str, str] = {}
    for i in images:
        first.setdefault(report_of[i].find("uId").get("id"), i)
    assert ids("views=all&per_study=first") == list(first.values())
    for part in ("findings", "impression"):
        got = {it.id: it.text for it in read_inputs(f"openi:{root}?views=all&text={part}").items}
        assert got == {i: _text(report_of[i], part) or None for i in images}


def test_views_unknown_without_the_metadata(layout, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    root, picked, images, dropped = layout
    bare = tmp_path / "iu"
    bare.mkdir()
    for name in ("ecgen-radiology", "NLMCXR_png"):
        (bare / name).symlink_to(root / name)
    import stitchkit.inputs.cxr.openi as openi

    def no_wheel(name: str) -> Path:
        raise UsageError("labels=torchxrayvision needs the torchxrayvision package")

    monkeypatch.setattr(openi, "shipped_file", no_wheel)
    assert {it.extra["view"] for it in read_inputs(f"openi:{bare}?views=all").items} == {""}
    with pytest.raises(UsageError, match="views=frontal needs the images' views.*or give views=all"):
        read_inputs(f"openi:{bare}")


@pytest.mark.parametrize(("spec", "message"), [
    ("openi:{reports_only}", "NLMCXR_png/ is missing: side=image embeds its PNGs"),
    ("openi:{empty}?side=text", "NLMCXR_reports.tgz is missing"),
    ("openi:{root}?split=test", "openi takes views, per_study, text, side, labels"),
    ("openi:{root}?labels={empty}/nowhere.tgz", "does not exist"),
])
def test_missing_files_are_one_line(data: Path, layout, tmp_path: Path, spec: str, message: str) -> None:
    root, *_ = layout
    folders = {"empty": tmp_path / "empty", "reports_only": tmp_path / "reports"}
    for folder in folders.values():
        folder.mkdir()
    (folders["reports_only"] / "NLMCXR_reports.tgz").symlink_to(data / REPORTS)
    res = run_inprocess("embed", spec.format(root=root, **folders), "-m", "lite0", "-o", tmp_path / "x.h5")
    assert res.code == 2, res.stderr
    assert len(res.message_lines) == 1 and message in res.message_lines[0], res.stderr
    assert not (tmp_path / "x.h5").exists()


def test_embed_images_and_reports(layout, reports: dict[str, ET.Element], metadata, tmp_path: Path) -> None:
    root, picked, images, dropped = layout
    res = run_inprocess("embed", f"openi:{root}?views=all", "-m", "lite0", "-o", tmp_path / "i.h5", "--workers", "0")
    assert res.code == 0, res.stderr
    uid = {el.get("id"): reports[n].find("uId").get("id") for n in picked for el in reports[n].iter("parentImage")}
    label = {el.get("id"): _label(reports[n]) for n in picked for el in reports[n].iter("parentImage")}
    with EmbeddingStore(tmp_path / "i.h5") as store:
        rows = dict(zip(store.ids, zip(store.labels, store.groups, store.column("view"), strict=True), strict=True))
    assert rows == {i: (label[i], uid[i], "" if i == dropped else _view(metadata, i)) for i in images}
    res = run_inprocess("embed", f"openi:{root}?side=text&views=all", "-m", "minilm", "-o", tmp_path / "t.h5")
    assert res.code == 0, res.stderr
    with EmbeddingStore(tmp_path / "t.h5") as store:
        texts = dict(zip(store.ids, store.texts, strict=True))
    assert texts == {reports[n].find("uId").get("id"): _text(reports[n]) for n in picked}
