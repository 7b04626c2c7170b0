"""Manifests for the public chest X-ray sets that stitchkit's demo and tests use.

Only the IU reports (XML in a tarball) and the NIH subset (patient ids inside file names)
need this; the other sets' ``labels.csv`` are manifests already.
"""

from __future__ import annotations

import csv
import json
import os
import tarfile
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path

from .errors import UsageError
from .fileio import atomic_output


def data_root() -> Path:
    """Where the public data sets are: $STITCHKIT_DATA, then ../shared/data beside the repo."""
    env = os.environ.get("STITCHKIT_DATA")
    candidates = [Path(env)] if env else []
    here = Path(__file__).resolve().parent.parent
    candidates += [here.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    for path in candidates:
        if path.is_dir():
            return path
    raise UsageError(
        "no data folder found: set STITCHKIT_DATA to a folder holding kermany-pneumonia-224/ "
        "(Kermany et al., Mendeley Data doi 10.17632/rscbjbr9sj.2), nih-pneumonia-256/ "
        "(NIH ChestX-ray14), covid-notes-384/ (ieee8023/covid-chestxray-dataset) and "
        "iu-xray-reports/NLMCXR_reports.tgz (OpenI), or point the commands at your own data"
    )


def iu_reports(tgz: str | Path) -> list[dict[str, str]]:
    """One row per IU report with FINDINGS and/or IMPRESSION: id, text, label (MeSH majors)."""
    rows = []
    with tarfile.open(tgz, "r:gz") as archive:
        for member in sorted(archive.getmembers(), key=lambda m: m.name):
            if not member.name.endswith(".xml"):
                continue
            root = ET.parse(archive.extractfile(member)).getroot()
            sections = {
                el.get("Label"): (el.text or "").strip() for el in root.iter("AbstractText")
            }
            text = " ".join(s for s in (sections.get("FINDINGS"), sections.get("IMPRESSION")) if s)
            if not text:
                continue
            majors = sorted({(m.text or "").split("/")[0].strip() for m in root.iter("major")} - {""})
            rows.append({"id": f"iu-{Path(member.name).stem}", "text": text, "label": "|".join(majors)})
    return rows


def nih_rows(folder: str | Path) -> list[dict[str, str]]:
    """The NIH subset with the patient id as group (split by patient, never by image)."""
    folder = Path(folder)
    with open(folder / "labels.csv", newline="") as fh:
        return [
            {"id": r["nih_image_index"], "path": r["path"], "label": r["label"],
             "group": r["nih_image_index"].split("_")[0]}
            for r in csv.DictReader(fh)
        ]


def write_jsonl(rows: Iterable[dict[str, str]], out: str | Path) -> Path:
    with atomic_output(out) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    return Path(out)


def write_csv(rows: list[dict[str, str]], out: str | Path) -> Path:
    with atomic_output(out) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return Path(out)
