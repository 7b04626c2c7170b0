"""MIMIC-CXR-JPG 2.0.0 / 2.1.0 as published on PhysioNet (Johnson et al., 2019), with the
free-text reports of MIMIC-CXR.

The folder holds ``mimic-cxr-2.0.0-metadata.csv.gz`` (one row per image: ``dicom_id``,
``subject_id``, ``study_id``, ``ViewPosition``, …), ``mimic-cxr-2.0.0-chexpert.csv.gz`` (one row
per study: ``subject_id``, ``study_id``, CheXpert's 14 columns valued 1.0 / 0.0 / -1.0 / blank;
``labels=`` takes ``mimic-cxr-2.0.0-negbio.csv.gz`` or another file of the same columns instead),
``mimic-cxr-2.0.0-split.csv.gz`` (``dicom_id``, ``study_id``, ``subject_id``, ``split``: train,
validate, test) and the JPEGs ``files/p10/p10000032/s50414267/DICOM_ID.jpg`` (plain .csv files
are read too). Image paths are computed from the ids, never looked up: an image absent from the
folder fails when it is embedded, not here. Images whose study has no label row are left out.

Ids are the ``dicom_id``; the patient is the ``subject_id`` as the CSVs write it (10000032), the
study the ``study_id`` as the folders name it (s50414267).

Labels against torchxrayvision 1.5.7's ``MIMIC_Dataset`` (checked by
tests/test_cxr_torchxrayvision.py): its columns and names, CheXpert's (`chexpert.labels_of`:
"Pleural Effusion" is ``Effusion``; -1.0 and blank depart from its NaN as `chexpert` says), and
its patient (``subject_id``). It departs on one rule: ``MIMIC_Dataset`` zeroes every observation
where ``No Finding`` is 1, Support Devices included, where ``CheX_Dataset`` keeps Support
Devices; here both datasets keep it (No Finding denies findings, not devices), so one labeller's
output reads the same in both. It also departs where ``MIMIC_Dataset`` picks a training subset
(PA views only, the first image of each patient: ``views=`` and ``per_study=`` choose here) and
reads no split, no report.

Reports: MIMIC-CXR's ``mimic-cxr-reports/files/p10/p10000032/s50414267.txt``, inside the folder,
beside it, or where ``reports=`` says. Their ``FINDINGS:`` and ``IMPRESSION:`` sections are
parsed (`sections`); ``text=report`` is findings then impression, ``text=findings`` and
``text=impression`` one of them; a report with neither section gives the whole text after its
last header (all of it without one), whichever ``text=``. Reports are read only for the images
the options keep, and only when the reports are there: without them the images carry no text,
and asking for texts (``side=text``, ``text=findings`` or ``text=impression``) is one line naming
the missing folder. With ``side=text`` the items are the reports (id ``s50414267``), one per
study with an image the options keep, under that image's view; a report with no text for
``text=`` is left out.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from operator import itemgetter
from pathlib import Path

from ...errors import UsageError
from ..types import Item
from .chexpert import NO_FINDING, OBSERVATIONS, TERMS, labels_of
from .layout import (
    CxrDataset,
    DatasetOptions,
    check_columns,
    child,
    child_of,
    keeps,
    need,
    paused_gc,
    read_table,
    select,
    view_name,
)

METADATA = "mimic-cxr-2.0.0-metadata.csv"
LABELS = "mimic-cxr-2.0.0-chexpert.csv"
SPLIT = "mimic-cxr-2.0.0-split.csv"
REPORTS = "mimic-cxr-reports"
SPLITS = ("train", "validate", "test")
# A section header: upper-case words and a colon at the start of a line ("FINDINGS:", "WET READ:").
HEADER = re.compile(r"^[ \t]*([A-Z][A-Z &/()-]*[A-Z)]):", re.MULTILINE)


def published(root: Path, name: str) -> Path | None:
    """``root/name.gz`` as PhysioNet publishes it, or ``root/name`` unpacked; None when neither."""
    return next((p for p in (root / f"{name}.gz", root / name) if p.is_file()), None)


def study_labels(path: Path, uncertain: str) -> dict[str, tuple[str, str]]:
    """study_id -> (label, uncertain findings) from a CheXpert- or NegBio-style label file."""
    rows = read_table(path)
    header = next(rows, [])
    check_columns(path, header, ("study_id", NO_FINDING, *OBSERVATIONS))
    at, labels = header.index("study_id"), labels_of(header, uncertain)
    return {row[at]: labels(row) for row in rows if len(row) == len(header)}


def official_split(path: Path | None) -> dict[str, str]:
    """dicom_id -> train | validate | test; empty without the split file."""
    if path is None:
        return {}
    rows = read_table(path)
    header = next(rows, [])
    check_columns(path, header, ("dicom_id", "split"))
    at, to = header.index("dicom_id"), header.index("split")
    names: dict[str, str] = {}  # one string per split name, not one per row
    return {row[at]: names.setdefault(row[to], row[to]) for row in rows}


class SplitInOrder:
    """dicom_id -> train | validate | test, read beside the metadata: the split file lists the
    images in the metadata's order, so each image's split is the split file's next row, with no
    dict of all 377,110 ids. A row out of that order (or a file without that order) switches to
    :func:`official_split`'s dict of the whole file, read again; empty without the split file."""

    def __init__(self, path: Path | None) -> None:
        self.path, self.table = path, None if path is not None else {}
        self.rows = read_table(path) if path is not None else iter(())
        header = next(self.rows, [])
        if path is not None:
            check_columns(path, header, ("dicom_id", "split"))
            self.at, self.to = header.index("dicom_id"), header.index("split")
        self.names: dict[str, str] = {}  # one string per split name, not one per row

    def __call__(self, dicom: str) -> str:
        """The split of the metadata's next image, ``dicom``."""
        if self.table is None:
            row = next(self.rows, None)
            if row is not None and len(row) > self.at and row[self.at] == dicom:
                return self.names.setdefault(row[self.to], row[self.to])
            self.table = official_split(self.path)
        return self.table.get(dicom, "")


def images(root: Path, metadata: Path, labels: dict[str, tuple[str, str]], split: Callable[[str], str],
           kept: Callable[[str, str], bool]) -> list[Item]:
    """One record per metadata row whose study is labelled and whose view and split are ``kept``
    (`layout.keeps`), its JPEG path computed from the ids: each study's folder is built once,
    each image's path is one part added to it (`layout.child`)."""
    rows = read_table(metadata)
    header = next(rows, [])
    check_columns(metadata, header, ("dicom_id", "subject_id", "study_id", "ViewPosition"))
    fields = itemgetter(*(header.index(c) for c in ("dicom_id", "subject_id", "study_id", "ViewPosition")))
    views: dict[str, str] = {}
    subjects: dict[str, Path] = {}  # subject_id -> files/p10/p10000032
    files, items = root / "files", []
    # The previous row's study_id, subject_id, labels, name (s50414267) and folder: the metadata
    # lists a study's images together, so each study is looked up and its folder built once.
    study_of: tuple = (None, None, None, "", files, files.__truediv__)
    for row in rows:
        dicom, subject, study, position = fields(row)
        if study != study_of[0] or subject != study_of[1]:
            found = labels.get(study)
            folder = files
            if found is not None:
                parent = subjects.get(subject) or subjects.setdefault(
                    subject, child(child(files, f"p{subject[:2]}"), f"p{subject}"))
                folder = child(parent, f"s{study}")
            study_of = (study, subject, found, f"s{study}", folder, child_of(folder))
        _, subject, found, name, folder, add = study_of
        where = split(dicom)  # for every row: the split file is read in step with the metadata
        if found is None:
            continue
        view = views.get(position)
        if view is None:
            view = views[position] = view_name(position)
        if not kept(view, where):
            continue
        # `layout.record` spelled out (its columns, in its order): a tenth of the index, 377,110 times
        items.append(Item(dicom, path=add(f"{dicom}.jpg") if "/" not in dicom else folder / f"{dicom}.jpg",
                          label=found[0], group=subject,
                          extra={"view": view, "study": name, "split": where, "uncertain": found[1]}))
    return items


def sections(text: str) -> dict[str, str]:
    """A report's sections by header (``FINDINGS``, ``IMPRESSION``, …), whitespace collapsed;
    a header given twice has its parts joined. Text before the first header is under ``""``."""
    found: dict[str, str] = {}
    marks = list(HEADER.finditer(text))
    starts = [(None, 0), *((m.group(1), m.end()) for m in marks)]
    ends = [m.start() for m in marks] + [len(text)]
    for (name, start), end in zip(starts, ends, strict=True):
        body = " ".join(text[start:end].split())
        key = name or ""
        found[key] = f"{found[key]} {body}".strip() if key in found else body
    return found


def report_text(text: str, part: str) -> str:
    """``text=`` of one report: findings, impression, or both (``report``); a report with neither
    section gives the text after its last header."""
    parts = sections(text)
    if "FINDINGS" not in parts and "IMPRESSION" not in parts:
        last = list(HEADER.finditer(text))
        return " ".join(text[last[-1].end():].split()) if last else " ".join(text.split())
    wanted = ("FINDINGS", "IMPRESSION") if part == "report" else (part.upper(),)
    return " ".join(parts[w] for w in wanted if parts.get(w))


def reports_folder(root: Path, options: DatasetOptions) -> Path | None:
    """The folder of ``p10/p10000032/s50414267.txt`` files, or None where there is none."""
    if options.reports:
        folder = Path(options.reports).expanduser()
        if not folder.is_dir():
            raise UsageError(f"mimic: reports={folder} is not a folder: give the folder mimic-cxr-reports.zip "
                             "unpacks to (files/p10/p10000032/s50414267.txt)")
    else:
        folder = next((f for f in (root / REPORTS, root.parent / REPORTS) if f.is_dir()), None)
        if folder is None:
            return None
    return folder / "files" if (folder / "files").is_dir() else folder


def read_report(folder: Path, subject: str, study: str, part: str) -> str:
    """The report's text for ``text=`` (``""`` when its file is absent or says nothing); ``study``
    as the folders name it (s50414267)."""
    try:
        with open(f"{folder}/p{subject[:2]}/p{subject}/{study}.txt", encoding="utf-8", errors="replace") as fh:
            return report_text(fh.read(), part)
    except FileNotFoundError:
        return ""


def with_reports(items: list[Item], folder: Path, options: DatasetOptions) -> list[Item]:
    """The items the options keep, with their study's report beside each image (side=image) or
    as one text item per study (side=text)."""
    if options.side == "text":
        reports = []
        for first in select(items, replace(options, per_study="first")):
            text = read_report(folder, first.group or "", first.extra["study"], options.text)
            if text:
                reports.append(replace(first, id=first.extra["study"], path=None, text=text))
        return reports
    kept, texts = select(items, options), {}
    for it in kept:
        study = it.extra["study"]
        if study not in texts:
            texts[study] = read_report(folder, it.group or "", study, options.text) or None
        it.text = texts[study]
    return kept


def index(root: Path, options: DatasetOptions) -> list[Item]:
    if options.labels == "torchxrayvision":
        raise UsageError(f"mimic: torchxrayvision ships no MIMIC-CXR labels: put {LABELS}.gz in {root} "
                         "or give labels=PATH (mimic-cxr-2.0.0-negbio.csv.gz, …)")
    metadata = published(root, METADATA) or need(root, f"{METADATA}.gz", DATASET)
    labels_path = Path(options.labels).expanduser() if options.labels else \
        published(root, LABELS) or need(root, f"{LABELS}.gz", DATASET)
    if not labels_path.is_file():
        raise UsageError(f"mimic: labels={labels_path} is not a file")
    split_path = published(root, SPLIT)
    if options.split != "all" and split_path is None:
        need(root, f"{SPLIT}.gz", DATASET, f"split={options.split} reads it")
    folder = reports_folder(root, options)
    if folder is None and (options.side == "text" or options.text != "report"):
        need(root, f"{REPORTS}/", DATASET, f"{'side=text' if options.side == 'text' else 'text=' + options.text} "
             "reads the reports: unpack MIMIC-CXR's mimic-cxr-reports.zip in the folder or beside it, "
             "or give reports=PATH")
    with paused_gc():
        items = images(root, metadata, study_labels(labels_path, options.uncertain), SplitInOrder(split_path),
                       keeps(options))
        return items if folder is None else with_reports(items, folder, options)


DATASET = CxrDataset(
    "mimic", "MIMIC-CXR-JPG",
    f"{METADATA}.gz, {LABELS}.gz, {SPLIT}.gz and files/p10/p10000032/s50414267/*.jpg "
    f"(reports: {REPORTS}/files/p10/p10000032/s50414267.txt)",
    index, TERMS, splits=SPLITS, texts=True,
    options=("views", "per_study", "split", "uncertain", "text", "side", "labels", "reports"),
    split_from="mimic-cxr-2.0.0-split.csv.gz beside the metadata (PhysioNet)",
    citation="Johnson et al., MIMIC-CXR-JPG (PhysioNet, 2019); MIMIC-CXR reports, Sci Data 2019")
FORMAT = DATASET.input_format()
