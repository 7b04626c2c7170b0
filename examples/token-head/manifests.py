"""Manifests of the token-head experiment: 1,500 Kermany train images (a seeded random subset,
to keep two shared CPU cores within budget), all 624 Kermany test images, and the covid-notes
images that have notes. Usage: python manifests.py WORKDIR (data from $STITCHKIT_DATA or
../shared/data beside the repository)."""

from __future__ import annotations

import csv
import os
import random
import sys
from pathlib import Path

DATA = Path(os.environ.get("STITCHKIT_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
N_TRAIN = 1500


def write(rows: list[dict], path: Path, cols: list[str]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)


def main(out: Path) -> None:
    kroot = DATA / "kermany-pneumonia-224"
    with open(kroot / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    train = [r for r in rows if r["split"] == "train"]
    test = [r for r in rows if r["split"] == "test"]
    random.Random(0).shuffle(train)
    subset = sorted(train[:N_TRAIN], key=lambda r: r["path"])
    cols = ["id", "path", "label", "subtype"]

    def manifest(rs: list[dict]) -> list[dict]:
        return [{"id": r["path"], "path": str(kroot / r["path"]), "label": r["label"],
                 "subtype": r["subtype"]} for r in rs]

    write(manifest(subset), out / "k-train1500.csv", cols)
    write(manifest(test), out / "k-test.csv", cols)
    croot = DATA / "covid-notes-384"
    with open(croot / "labels.csv", newline="") as fh:
        covid = [{"id": r["path"], "path": str(croot / r["path"]), "label": r["label"],
                  "group": r["patientid"], "text": r["notes"]}
                 for r in csv.DictReader(fh) if r["notes"].strip()]
    write(covid, out / "covid.csv", ["id", "path", "label", "group", "text"])
    normal = sum(r["label"] == "normal" for r in subset)
    print(f"kermany train subset {len(subset)} ({normal} normal), test {len(test)}, covid with notes {len(covid)}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
