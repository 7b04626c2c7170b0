"""Open-I: the Indiana University chest X-ray collection as published by NLM (Demner-Fushman et
al., JAMIA 2016). The one reader of IU reports (`stitchkit.datasets.iu_reports` calls it).

The folder holds ``NLMCXR_reports.tgz`` (or what it unpacks to, ``ecgen-radiology/*.xml``: 3,955
reports) and ``NLMCXR_png/`` (7,470 PNGs named by image id, ``CXR1_1_IM-0001-3001.png``; or the
PNGs in the folder itself). Each report's XML has its ``AbstractText`` sections (FINDINGS,
IMPRESSION, …), its MeSH ``major`` terms (``Opacity/lung/base/left/mild``) and one
``parentImage id="CXR1_1_IM-0001-3001"`` per image. Ids are the image ids; the report's ``uId``
(``CXR1``) is the patient and the study (IU has one study per report), and the id of the report
with ``side=text``. IU has no official split. ``text=`` picks FINDINGS, IMPRESSION or both
(``report``); a report without the section it asks for has no text (left out with ``side=text``).
``side=text`` needs no images; ``side=image`` reads the images the folder holds (one listing,
no stat per image) and is one line naming ``NLMCXR_png/`` when it holds none. ``labels=`` is a
reports .tgz or folder of XML instead of the folder's (``torchxrayvision``: the copy its wheel
ships).

Views: NLM publishes them only in the DICOM headers, which torchxrayvision tabulates as
``nlmcxr_dicom_metadata.csv`` (``imageid``, ``View Position``: PA, AP, LL / LATERAL / RL, blank
for 2,586 images). The folder's copy (plain or .gz) is read, else the one torchxrayvision's wheel
ships; without either, only ``views=all`` can be read. With ``side=text`` a report stands under
the first of its images' views that ``views=`` keeps, and is left out when it keeps none.

Views are those ``Openi_Dataset`` joins (its ``dicomcsv_path``, that file), as `view_name`
writes them; it departs from ``Openi_Dataset`` in keeping every view (``views=`` chooses; it
keeps PA only by default) and every image of a report (not its first: ``unique_patients``).

Labels depart from torchxrayvision 1.5.7's ``Openi_Dataset``, which finds its 18 names (its
``pathologies``, and the synonyms "pleural thickening", "infiltrate", "atelectases" of its
``mapping``) as substrings of the reports' MeSH ``automatic`` terms, machine-extracted and read
with every qualifier, so that "pericardial effusion" is Effusion and "subcutaneous emphysema"
Emphysema (tests/test_cxr_torchxrayvision.py counts the images whose labels differ). Here the
names are its names, plus Consolidation, but the MeSH ``major`` terms (the radiologists' coding)
are looked up in `TERMS`: the major terms those substrings pick, by the text before the first
``/`` (and ``thickening/pleura`` by its first qualifier), less those that are not of the lung or
pleura (pericardial effusion, subcutaneous and mediastinal emphysema, cystic fibrosis, expansile
bone lesions), plus ``consolidation`` (a harmonised finding torchxrayvision's list lacks).
Calcified granuloma counts as ``Granuloma`` too, as the substring match gives. A report whose
only term is ``No Indexing`` was not coded: it is left out (``Openi_Dataset`` keeps it,
labelled by its automatic terms); any other without a finding is ``No Finding``.
"""

from __future__ import annotations

import tarfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from ...errors import UsageError
from ..types import Item
from .findings import harmonise, label_of, term_table
from .layout import (
    FRONTAL,
    CxrDataset,
    DatasetOptions,
    Extras,
    check_columns,
    need,
    read_table,
    record,
    shipped_file,
    view_name,
)

REPORTS = "NLMCXR_reports.tgz"
XML_FOLDER = "ecgen-radiology"
PNG_FOLDER = "NLMCXR_png"
METADATA = "nlmcxr_dicom_metadata.csv"
NO_INDEXING = "no indexing"  # the MeSH term of a report that was not coded
TERMS = term_table({
    "Atelectasis": ["pulmonary atelectasis", "atelectasis", "atelectases"],
    "Fibrosis": ["pulmonary fibrosis", "fibrosis"],
    "Pneumonia": ["pneumonia"],
    "Effusion": ["pleural effusion", "effusion"],
    "Lung Lesion": ["lesion", "lung lesion"],
    "Cardiomegaly": ["cardiomegaly"],
    "Calcified Granuloma": ["calcified granuloma"],
    "Fracture": ["fractures, bone", "fracture"],
    "Edema": ["pulmonary edema", "edema"],
    "Granuloma": ["granuloma", "granulomatous disease"],
    "Emphysema": ["emphysema", "pulmonary emphysema", "bullous emphysema"],
    "Hernia": ["hernia, hiatal", "hernia, diaphragmatic"],
    "Mass": ["mass"],
    "Nodule": ["nodule"],
    "Lung Opacity": ["opacity"],
    "Infiltration": ["infiltrate", "infiltration"],
    "Pleural_Thickening": ["thickening/pleura", "pleural thickening"],
    "Pneumothorax": ["pneumothorax", "hydropneumothorax", "hemopneumothorax"],
    "Consolidation": ["consolidation"],
})
ALSO = {"Calcified Granuloma": "Granuloma"}  # a finding that implies another


@dataclass(frozen=True)
class Report:
    """One IU report as its XML writes it."""

    name: str  # the XML file's stem: "1"
    uid: str  # "CXR1": the report's id, its patient and its study
    sections: dict[str, str] = field(default_factory=dict)  # AbstractText by Label, stripped
    major: tuple[str, ...] = ()  # MeSH major terms as written: "Opacity/lung/base/left/mild"
    images: tuple[str, ...] = ()  # parentImage ids: "CXR1_1_IM-0001-3001"

    def text(self, part: str = "report") -> str:
        """FINDINGS, IMPRESSION, or both joined by a space (``report``); "" when absent."""
        wanted = ("FINDINGS", "IMPRESSION") if part == "report" else (part.upper(),)
        return " ".join(s for s in (self.sections.get(w) for w in wanted) if s)

    def findings(self) -> list[str]:
        """The harmonised findings of its MeSH major terms (`TERMS`)."""
        keys = []
        for term in self.major:
            parts = [p.strip() for p in term.split("/")]
            keys += [parts[0], "/".join(parts[:2])]
        found = set(harmonise(keys, TERMS))
        return sorted(found | {ALSO[f] for f in found if f in ALSO})


def parse_report(name: str, xml: IO[bytes]) -> Report:
    root = ET.parse(xml).getroot()
    uid = root.find("uId")
    return Report(
        name=name, uid=uid.get("id", "") if uid is not None else "",
        sections={el.get("Label"): (el.text or "").strip() for el in root.iter("AbstractText")},
        major=tuple((m.text or "") for m in root.iter("major")),
        images=tuple(el.get("id", "") for el in root.iter("parentImage")))


def _xml_files(source: Path) -> Iterator[tuple[str, IO[bytes]]]:
    """(stem, open file) of each report, in the order of their names, from a .tgz or a folder."""
    if source.is_dir():
        folder = source / XML_FOLDER if (source / XML_FOLDER).is_dir() else source
        for path in sorted(folder.glob("*.xml")):
            with open(path, "rb") as fh:
                yield path.stem, fh
        return
    with tarfile.open(source, "r:*") as archive:
        for member in sorted(archive.getmembers(), key=lambda m: m.name):
            if member.name.endswith(".xml"):
                yield Path(member.name).stem, archive.extractfile(member)


def read_reports(source: Path) -> list[Report]:
    """Every report of ``NLMCXR_reports.tgz`` or a folder of its XML, in the order of their
    file names; one line when it is neither."""
    try:
        reports = [parse_report(name, fh) for name, fh in _xml_files(source)]
    except (tarfile.TarError, ET.ParseError, OSError) as exc:
        raise UsageError(f"{source} cannot be read as IU reports ({exc}): give NLMCXR_reports.tgz "
                         f"or its {XML_FOLDER}/ folder") from exc
    if not reports:
        raise UsageError(f"{source} holds no report XML: give NLMCXR_reports.tgz or its {XML_FOLDER}/ folder")
    return reports


def reports_source(root: Path, options: DatasetOptions) -> Path:
    if options.labels == "torchxrayvision":
        return shipped_file(REPORTS)
    if options.labels:
        path = Path(options.labels).expanduser()
        if not path.exists():
            raise UsageError(f"openi: labels={path} does not exist: give NLMCXR_reports.tgz or its {XML_FOLDER}/")
        return path
    if (root / XML_FOLDER).is_dir():
        return root / XML_FOLDER
    return need(root, REPORTS, DATASET, f"add it or its {XML_FOLDER}/ folder, or take the copy torchxrayvision "
                f"ships: openi:{root}?labels=torchxrayvision")


def image_views(root: Path, options: DatasetOptions) -> dict[str, str] | None:
    """Image id -> view from nlmcxr_dicom_metadata.csv (the folder's, else torchxrayvision's);
    None when there is neither."""
    path = next((p for p in (root / f"{METADATA}.gz", root / METADATA) if p.is_file()), None)
    if path is None:
        try:
            path = shipped_file(f"{METADATA}.gz")
        except UsageError:
            if options.views == "all":
                return None
            raise UsageError(f"openi:{root}: views={options.views} needs the images' views, which NLM publishes "
                             f"only in the DICOMs: put torchxrayvision's {METADATA}.gz in the folder (pip install "
                             "torchxrayvision ships it) or give views=all") from None
    rows = read_table(path)
    header = next(rows, [])
    check_columns(path, header, ("imageid", "View Position"))
    at, to = header.index("imageid"), header.index("View Position")
    return {row[at]: view_name(row[to]) for row in rows if len(row) > max(at, to)}


def png_folder(root: Path) -> tuple[Path, set[str]]:
    """The folder of PNGs and the image ids it holds; one line naming NLMCXR_png/ when none."""
    folder = root / PNG_FOLDER if (root / PNG_FOLDER).is_dir() else root
    ids = {p.name[:-4] for p in folder.iterdir() if p.name.endswith(".png")}
    if not ids:
        need(root, f"{PNG_FOLDER}/", DATASET, "side=image embeds its PNGs (side=text reads the reports alone)")
    return folder, ids


def report_view(views: list[str], chosen: str) -> str | None:
    """The view a report stands under with ``side=text``: the first of its images' views that
    ``views=chosen`` keeps (None: it keeps none; with ``all``, "" for a report without images)."""
    if chosen == "all":
        return views[0] if views else ""
    wanted = FRONTAL if chosen == "frontal" else (chosen.upper(),)
    return next((v for v in views if v in wanted), None)


def index(root: Path, options: DatasetOptions) -> list[Item]:
    reports = read_reports(reports_source(root, options))
    views = image_views(root, options) or {}
    folder, present = png_folder(root) if options.side == "image" else (root, set())
    items = []
    for report in reports:
        if {m.strip().lower() for m in report.major} <= {NO_INDEXING, ""}:
            continue  # not coded: no labels
        label, text = label_of(report.findings()), report.text(options.text) or None
        if options.side == "text":
            view = report_view([views.get(i, "") for i in report.images], options.views)
            if view is not None and text:
                items.append(record(report.uid, None, label=label, patient=report.uid,
                                    extras=Extras(view, report.uid), text=text))
            continue
        items += [record(i, folder / f"{i}.png", label=label, patient=report.uid,
                         extras=Extras(views.get(i, ""), report.uid), text=text)
                  for i in report.images if i in present]
    if not items and options.side == "image":
        raise UsageError(f"openi:{root}: none of the reports' images is in {folder}: IU's PNGs are named by "
                         "image id (CXR1_1_IM-0001-3001.png)")
    return items


DATASET = CxrDataset(
    "openi", "Open-I (IU X-ray)",
    f"{REPORTS} (or {XML_FOLDER}/*.xml) and {PNG_FOLDER}/*.png; views from {METADATA}",
    index, TERMS, texts=True, options=("views", "per_study", "text", "side", "labels"),
    citation="Demner-Fushman et al., Preparing a collection of radiology examinations for distribution "
             "and retrieval, JAMIA 2016; NLM Open-I")
FORMAT = DATASET.input_format()
