"""Manifests for the public chest X-ray sets that stitchkit's demo and tests use.

This is the embedded default's data layer: ``demo_manifests`` writes every manifest and the
NIH patient split that `stitch demo` runs on. Only the IU reports (XML in a tarball) and the
NIH subset (patient ids inside file names) need parsing; the other sets' ``labels.csv`` are
manifests already.
"""

from __future__ import annotations

import csv
import json
import os
import random
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

from .errors import UsageError
from .fileio import atomic_output
from .inputs import read_inputs
from .inputs.cxr.findings import NO_FINDING


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
    """One row per IU report with FINDINGS and/or IMPRESSION: id, text, label (MeSH majors as
    written, before the first ``/``). The reports are read by `stitchkit.inputs.cxr.openi`."""
    from .inputs.cxr.openi import read_reports  # the inputs package loads the image decoders

    rows = []
    for report in read_reports(Path(tgz)):
        text = report.text("report")
        if text:
            majors = sorted({m.split("/")[0].strip() for m in report.major} - {""})
            rows.append({"id": f"iu-{report.name}", "text": text, "label": "|".join(majors)})
    return rows


NIH_SPEC = "nih:{root}?labels=torchxrayvision"  # the shared subset keeps no Data_Entry of its own


def nih_rows(spec: str) -> list[dict[str, str]]:
    """The NIH images a `nih:` spec reads, as manifest rows with the patient as group."""
    return [{"id": it.id, "path": str(it.path), "label": it.label or "", "group": it.group or ""}
            for it in read_inputs(spec).items]


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


def cap_per_key(rows: list[dict[str, str]], key: Callable[[dict[str, str]], str], limit: int | None
                ) -> list[dict[str, str]]:
    """The first ``limit`` rows of each ``key`` value (all rows when ``limit`` is None), in order."""
    if not limit:
        return rows
    kept, seen = [], Counter()
    for row in rows:
        k = key(row)
        if seen[k] < limit:
            seen[k] += 1
            kept.append(row)
    return kept


def split_by_group(rows: list[dict[str, str]], fraction: float = 0.6, seed: int = 0
                   ) -> tuple[list[str], list[str]]:
    """(train ids, test ids) with every group (patient) wholly on one side, never split.

    Groups are shuffled with ``seed`` and the first ``fraction`` of them go to train, so the
    split is the same on every machine.
    """
    # Numeric patient ids in numeric order, so zero-padded and plain spellings split alike.
    groups = sorted({r["group"] for r in rows}, key=lambda g: (0, int(g), g) if g.isdigit() else (1, 0, g))
    random.Random(seed).shuffle(groups)
    train = set(groups[: int(fraction * len(groups))])
    return ([r["id"] for r in rows if r["group"] in train],
            [r["id"] for r in rows if r["group"] not in train])


def demo_manifests(data: str | Path, out: str | Path, limit: int | None = None) -> dict[str, Path | str]:
    """Manifests (absolute paths) for the demo's four data sets, and the NIH patient split.

    Keys: ``k-train``, ``k-test`` (Kermany CSVs), ``nih`` (the `nih:` spec that reads NIH as
    published, or with ``limit`` a CSV of the images it keeps),
    ``nih-train-ids`` / ``nih-test-ids`` (60 / 40 % of NIH patients), ``covid`` (images with
    their notes as text), ``iu`` (IU reports, JSONL). ``limit`` keeps that many images per
    class and split (``10 * limit`` IU reports) for a quick run.
    """
    data, out = Path(data), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path | str] = {}
    kroot = data / "kermany-pneumonia-224"
    with open(kroot / "labels.csv", newline="") as fh:
        krows = list(csv.DictReader(fh))
    for split in ("train", "test"):
        rows = [{"id": r["path"], "path": str(kroot / r["path"]), "label": r["label"],
                 "subtype": r["subtype"]} for r in krows if r["split"] == split]
        paths[f"k-{split}"] = write_csv(cap_per_key(rows, lambda r: r["label"], limit),
                                        out / f"kermany-{split}.csv")

    paths["nih"] = NIH_SPEC.format(root=data / "nih-pneumonia-256")
    nrows = cap_per_key(nih_rows(paths["nih"]), lambda r: r["label"] == NO_FINDING, limit)
    if limit:
        paths["nih"] = write_csv(nrows, out / "nih.csv")
    for name, ids in zip(("nih-train-ids", "nih-test-ids"), split_by_group(nrows, 0.6, seed=0), strict=True):
        paths[name] = out / f"{name}.txt"
        with atomic_output(paths[name]) as tmp:
            tmp.write_text("\n".join(ids) + "\n")

    croot = data / "covid-notes-384"
    with open(croot / "labels.csv", newline="") as fh:
        crows = [{"id": r["path"], "path": str(croot / r["path"]), "label": r["label"],
                  "group": r["patientid"], "text": r["notes"]}
                 for r in csv.DictReader(fh) if r["notes"].strip()]
    paths["covid"] = write_csv(cap_per_key(crows, lambda r: "all", limit), out / "covid.csv")

    iu = iu_reports(data / "iu-xray-reports" / "NLMCXR_reports.tgz")
    paths["iu"] = write_jsonl(iu[: 10 * limit] if limit else iu, out / "iu-reports.jsonl")
    return paths
